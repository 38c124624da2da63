"""Benchmark pyhost against Granian (RSGI and ASGI), uvicorn and Starlette on Granian.

Usage (from the repository root, with the system ``python3``; the driver needs only the stdlib)::

    python3 bench/run.py [--smoke] [--bin PATH] [--duration S] [--rounds N]
                         [--servers a,b] [--scenarios x,y] [--workers 1,2]

It builds pyhost in release mode (unless ``--bin`` names a binary), installs the peers into
``bench/.venv`` and wrk with apt-get when missing, then runs every scenario on every server in
interleaved rounds (the scenarios its app implements: all but ``mw`` for the raw peers,
``hello`` and ``mw`` for Starlette), each server alone on one core and wrk on another. The
medians go to stdout and to ``bench/results/latest.md``. ``--smoke`` only checks that every
server answers each of those scenarios correctly (exit 1 otherwise) with a short wrk run each,
and that pyhost serves with two workers; see ``bench/README.md``. ``--workers N`` runs every
server with N worker processes; ``--workers 1,2`` runs both counts and reports each server's
scaling.
"""

import argparse
import contextlib
import datetime
import os
import platform
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import load, prepare, report, servers, sse
from harness.pinning import Pinning
from harness.report import Measurement, Results, SupervisorSample
from harness.scenarios import (
    BENCH_FILE_NAME,
    BENCH_FILE_SIZE,
    SCENARIO_NAMES,
    WS_MESSAGE_SIZE,
    Scenario,
    select_scenarios,
    write_wrk_scripts,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
READY_TIMEOUT = 30.0  # seconds a server gets to answer its first GET /hello
SMOKE_DURATION = 1
CELL_OVERHEAD = 2  # rough seconds per cell for start-up, checks and shutdown (for the estimate)
# Above this share of the machine's CPU time taken by the hypervisor during a measurement, the
# cell is measured again, and reported as disturbed if no attempt stays below it: its figures
# would say more about the host's other guests than about the server.
STEAL_WARNING = 0.02
# Above this share of the machine's CPU time taken by other processes (a build, tests) during a
# measurement, the cell is listed under Warnings; it is not measured again.
OTHERS_WARNING = 0.05
# Seconds over which pyhost's supervisor's idle CPU is measured, after start-up, before load.
SUPERVISOR_IDLE = 1.0
SMOKE_SUPERVISOR_IDLE = 0.2
# The servers whose multi-worker mode is pyhost's supervisor.
PYHOST_SERVERS = ("pyhost", "pyhost-no-batch")
# The worker count of the smoke run's check of pyhost's supervisor.
SMOKE_WORKERS = 2
# Seconds a server with workers runs at least before it is told to stop.
MIN_LIFETIME = 1.0


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    smoke: bool
    duration: int
    warmup: int
    rounds: int
    connections: int
    threads: int
    startup_runs: int
    retries: int
    workers: tuple[int, ...] = (1,)

    @property
    def counts(self) -> list[int]:
        """The worker counts, as a list."""
        return list(self.workers)


@dataclass(frozen=True)
class Context:
    """What every measurement needs: where things are, the pinning, the wrk scripts, the logs."""

    layout: servers.Layout
    env: dict[str, str]
    pinnings: dict[int, Pinning]  # by worker count
    scripts: dict[str, Path]
    logs: Path
    settings: Settings

    def pinning(self, workers: int) -> Pinning:
        """The pinning of a server with ``workers`` workers."""
        return self.pinnings[workers]

    @property
    def bench_file(self) -> Path:
        """The file the download scenarios send."""
        return self.layout.static_dir / BENCH_FILE_NAME


@dataclass
class Running:
    """A server started for some measurements."""

    name: str
    server: servers.Server
    port: int
    workers: int = 1
    startup_s: float | None = None
    exit_code: int | None = None

    @property
    def supervised(self) -> bool:
        """Whether this is pyhost under its supervisor (more than one worker)."""
        return self.workers > 1 and self.name in PYHOST_SERVERS

    @property
    def label(self) -> str:
        """The server's name, with its worker count when above one."""
        return self.name if self.workers == 1 else f"{self.name} x{self.workers}"


def _csv(value: str) -> list[str]:
    """A comma-separated command-line list."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _positive(value: str) -> int:
    """A command-line integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return number


def _worker_counts(value: str) -> list[int]:
    """``--workers``: one count or a comma-separated list of them, each at least 1."""
    counts = [_positive(item) for item in _csv(value)]
    if not counts:
        raise argparse.ArgumentTypeError(f"{value!r}: no worker count")
    return sorted(set(counts))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="correctness check for CI, ~1 min")
    parser.add_argument("--bin", help="existing pyhost binary (default: build one with cargo)")
    parser.add_argument("--duration", type=_positive, default=5, help="seconds measured per cell")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per cell")
    parser.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds")
    parser.add_argument("--connections", type=_positive, default=64, help="wrk connections")
    parser.add_argument("--threads", type=_positive, default=2, help="wrk threads")
    parser.add_argument("--startup-runs", type=int, default=5, help="start-up samples per server")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="times a cell is measured again while the hypervisor's steal is above "
        f"{STEAL_WARNING * 100:.0f}%%",
    )
    parser.add_argument("--servers", type=_csv, help=f"subset of {','.join(servers.SERVERS)}")
    parser.add_argument("--scenarios", type=_csv, help=f"subset of {','.join(SCENARIO_NAMES)},sse")
    parser.add_argument(
        "--workers",
        type=_worker_counts,
        default=[1],
        help="worker processes per server: N, or a list such as 1,2 to measure each count "
        "and report the scaling (default 1)",
    )
    return parser.parse_args(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((load.HOST, 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the report)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def serving(ctx: Context, name: str, label: str, workers: int = 1) -> Iterator[Running]:
    """Start server ``name`` pinned to the server core(s), wait for its first 200; stop it after.

    A supervised pyhost is also waited for until it prints ``listening on`` (every worker
    ready); the start-up time is still that of the first 200.
    """
    pinning = ctx.pinning(workers)
    pinning.pin_driver()
    port = free_port()
    command = [
        *pinning.server_prefix(),
        *servers.server_command(name, ctx.layout, port, workers),
    ]
    stem = name if workers == 1 else f"{name}-w{workers}"
    server = servers.Server(command, ctx.env, ctx.layout.apps, ctx.logs / f"{stem}-{label}")
    running = Running(name, server, port, workers)
    try:
        ready = load.wait_for_hello(port, READY_TIMEOUT, server.alive)
        if ready is not None:
            running.startup_s = ready - server.started
            if running.supervised and not wait_for_listening(server, ready + READY_TIMEOUT):
                running.startup_s = None
        yield running
    finally:
        if workers > 1:
            # Granian with several workers does not exit on a SIGTERM that comes while its
            # other workers are still starting (right after the first answer, as in the
            # start-up runs): it hangs until killed. A second of life avoids that.
            time.sleep(max(0.0, server.started + MIN_LIFETIME - time.perf_counter()))
        running.exit_code = server.stop()


def wait_for_listening(server: servers.Server, deadline: float) -> bool:
    """Wait for pyhost's ``listening on`` line (all workers ready); False if it never came."""
    while time.perf_counter() < deadline and server.alive():
        if "listening on http://" in server.stdout_path.read_text(errors="replace"):
            return True
        time.sleep(0.005)
    return False


def measure_sse(ctx: Context, name: str, label: str, results: Results) -> None:
    """The SSE scenario on a fresh server ``name``: the first events checked, then one
    measured window (a short one with few clients in smoke mode)."""
    smoke = ctx.settings.smoke
    clients = sse.SMOKE_CLIENTS if smoke else sse.CLIENTS
    with serving(ctx, name, label) as running:
        if not_ready(running, results, "sse"):
            return
        problem = sse.check(running.port)
        if problem is not None:
            results.failures.append(f"{name} (sse): {problem}")
            return
        pid = running.server.pid
        try:
            result = sse.measure(
                ctx.pinning(1).load_prefix(),
                running.port,
                clients=clients,
                warmup=0.5 if smoke else ctx.settings.warmup,
                duration=SMOKE_DURATION if smoke else ctx.settings.duration,
                cpu_seconds=lambda: servers.tree_cpu_seconds(pid),
            )
        except (RuntimeError, OSError, ValueError) as error:
            results.failures.append(f"{name} (sse): {error}")
            return
        rss = servers.worker_peak_rss_kib(pid) / 1024
    after_stop(running, results, "sse")
    if result.errors:
        results.failures.append(f"{name} (sse): {result.errors} streams ended during the window")
    results.sse.setdefault(name, []).append((result, rss))
    log(
        f"[{label}] sse {name:18} {result.events_per_s:>10,.0f} events/s  "
        f"{result.cpu_us_per_event:6.2f} µs/event  {clients} clients  "
        f"per client {result.min_per_client:,.0f}-{result.max_per_client:,.0f}/s  "
        f"peak RSS {rss:6.2f} MiB"
    )


def run_sse(ctx: Context, names: list[str], results: Results) -> None:
    """The SSE scenario on each of ``names``: once in smoke mode, else round after round with
    the order rotating."""
    if not names:
        return
    rounds = 1 if ctx.settings.smoke else ctx.settings.rounds
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(names)
        for name in names[shift:] + names[:shift]:
            measure_sse(
                ctx, name, "sse-smoke" if ctx.settings.smoke else f"sse-r{round_no}", results
            )


def not_ready(running: Running, results: Results, what: str) -> bool:
    """Record a failure if the server never answered 200 on /hello; True in that case."""
    if running.startup_s is not None:
        return False
    code = running.server.process.poll()
    awaited = "a 200 on GET /hello"
    if running.supervised:
        awaited += " and `listening on` (every worker ready)"
    reason = (
        f"no {awaited} within {READY_TIMEOUT:.0f} s"
        if code is None
        else f"exited with status {code} before answering GET /hello"
    )
    tail = running.server.log_tail() or "(no output)"
    results.failures.append(f"{running.label} ({what}): {reason}; log tail:\n{tail}")
    return True


def after_stop(running: Running, results: Results, stats_label: str) -> None:
    """Note an unclean exit, and collect pyhost's ``pyhost stats:`` line when it printed one.

    A supervised pyhost prints one such line per worker: each counts as a run of its own, under
    a label that names the worker count.
    """
    # uvicorn re-raises the SIGTERM it handled once it has shut down: that is a clean exit too.
    if running.exit_code not in (0, -signal.SIGTERM, None):
        results.warnings.append(f"{running.label} ({stats_label}) exited {running.exit_code}")
    if running.name != report.PYHOST:
        return
    if running.workers == 1:
        stats = servers.parse_pyhost_stats(running.server.stderr_text())
        if stats is not None:
            results.pyhost_stats.setdefault(stats_label, []).append(stats)
        return
    label = f"{stats_label}, {running.workers} workers (each worker a run)"
    for stats in servers.parse_worker_stats(running.server.stderr_text()):
        stats.pop("worker", None)
        results.pyhost_stats.setdefault(label, []).append(stats)


def supervisor_problems(running: Running) -> list[str]:
    """What is wrong with a supervised pyhost's process tree while it serves (empty: nothing)."""
    workers = servers.child_pids(running.server.pid)
    if len(workers) != running.workers:
        return [f"{running.label}: {len(workers)} worker processes, expected {running.workers}"]
    return []


def supervisor_exit_problems(running: Running) -> list[str]:
    """What is missing from a stopped supervised pyhost's stderr (empty: nothing)."""
    stderr = running.server.stderr_text()
    problems = []
    if servers.parse_supervisor_stats(stderr) is None:
        problems.append(f"{running.label}: no `pyhost supervisor stats:` line at exit")
    lines = len(servers.parse_worker_stats(stderr))
    if lines < running.workers:
        problems.append(
            f"{running.label}: {lines} `pyhost stats: worker=` lines at exit, "
            f"expected {running.workers}"
        )
    return problems


def measure(
    ctx: Context,
    running: Running,
    scenario: Scenario,
    *,
    duration: int,
    connections: int,
    warmup: int,
    idle: float = SUPERVISOR_IDLE,
) -> tuple[Measurement, load.WrkResult, float, SupervisorSample | None]:
    """Warm up, then one measured wrk run with the server's CPU time and peak RSS around it.

    Also returns the share of the machine's CPU time the hypervisor took during the measured
    run, and for a supervised pyhost its supervisor's own figures: CPU over ``idle`` seconds
    before any load, and over the measured run, and resident memory before and after.
    """
    prefix = ctx.pinning(running.workers).load_prefix()
    threads = ctx.settings.threads

    def run_load(seconds: int) -> load.WrkResult:
        if scenario.protocol == "websocket":
            wsload = ctx.layout.wsload_bin
            if wsload is None:
                raise RuntimeError("no WebSocket load client (bench/wsload) was built")
            return load.run_wsload(
                prefix,
                running.port,
                scenario,
                wsload,
                duration=seconds,
                connections=connections,
                size=WS_MESSAGE_SIZE,
            )
        return load.run_wrk(
            prefix,
            running.port,
            scenario,
            ctx.scripts[scenario.name],
            duration=seconds,
            connections=connections,
            threads=threads,
        )

    pid = running.server.pid
    idle_cpu_s: float | None = None
    rss_before_kib: int | None = None
    if running.supervised:
        idle_start = servers.own_cpu_seconds(pid)
        time.sleep(idle)
        idle_end = servers.own_cpu_seconds(pid)
        if idle_start is not None and idle_end is not None:
            idle_cpu_s = idle_end - idle_start
        rss_before_kib = servers.resident_kib(pid)
    if warmup > 0:
        run_load(warmup)
    cpu_before = servers.tree_cpu_seconds(pid)
    busy_before = servers.machine_busy_seconds()
    ours_before = _own_and_children_cpu()
    own_before = servers.own_cpu_seconds(pid) if running.supervised else None
    steal_before = servers.steal_seconds()
    started = time.perf_counter()
    result = run_load(duration)
    cpu_s = servers.tree_cpu_seconds(pid) - cpu_before
    busy_s = servers.machine_busy_seconds() - busy_before
    ours_s = _own_and_children_cpu() - ours_before  # the driver and wrk
    own_after = servers.own_cpu_seconds(pid) if running.supervised else None
    wall_s = time.perf_counter() - started
    machine_s = wall_s * (os.cpu_count() or 1)
    steal = (servers.steal_seconds() - steal_before) / max(machine_s, 1e-9)
    measurement = Measurement(
        rps=result.rps,
        p50_ms=result.p50_us / 1000,
        p99_ms=result.p99_us / 1000,
        cpu_us_per_req=cpu_s * 1e6 / max(result.requests, 1),
        rss_mib=servers.worker_peak_rss_kib(pid) / 1024,
        errors=result.errors,
        others=max(0.0, busy_s - cpu_s - ours_s) / max(machine_s, 1e-9),
    )
    sample = None
    rss_after_kib = servers.resident_kib(pid) if running.supervised else None
    if (
        idle_cpu_s is not None
        and own_before is not None
        and own_after is not None
        and rss_before_kib is not None
        and rss_after_kib is not None
    ):
        sample = SupervisorSample(
            idle_cpu_us_per_s=idle_cpu_s * 1e6 / max(idle, 1e-9),
            load_cpu_us_per_s=(own_after - own_before) * 1e6 / max(wall_s, 1e-9),
            load_cpu_share=(own_after - own_before) / cpu_s if cpu_s > 0 else 0.0,
            rss_before_mib=rss_before_kib / 1024,
            rss_after_mib=rss_after_kib / 1024,
        )
    return measurement, result, steal, sample


def _own_and_children_cpu() -> float:
    """CPU seconds of this driver and of its reaped children (wrk, the setup commands)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure_startup(ctx: Context, variants: list[tuple[str, int]], results: Results) -> None:
    """Time from exec to the first 200 on /hello, ``startup_runs`` times per server, interleaved."""
    for run in range(1, ctx.settings.startup_runs + 1):
        for name, workers in variants:
            with serving(ctx, name, f"startup{run}", workers) as running:
                if not not_ready(running, results, "start-up"):
                    samples = results.startup_s.setdefault((name, workers), [])
                    samples.append(running.startup_s or 0.0)
            after_stop(running, results, "start-up")
        log(f"start-up run {run}/{ctx.settings.startup_runs} done")


def measure_once(
    ctx: Context, name: str, workers: int, scenario: Scenario, round_no: int, results: Results
) -> tuple[Measurement, float, SupervisorSample | None] | None:
    """A fresh server, a correctness check, warm-up, measurement, stop; None if it failed.

    Returns the figures, the share of the machine's CPU time the hypervisor took meanwhile,
    and a supervised pyhost's supervisor's figures.
    """
    what = f"{scenario.name}, round {round_no}"
    connections = scenario.connections or ctx.settings.connections
    with serving(ctx, name, f"{scenario.name}-r{round_no}", workers) as running:
        if not_ready(running, results, what):
            return None
        problem = load.check_scenario(running.port, scenario, ctx.bench_file, ctx.layout.wsload_bin)
        if problem is not None:
            results.failures.append(f"{running.label} ({what}): {problem}")
            return None
        try:
            measurement, _, steal, sample = measure(
                ctx,
                running,
                scenario,
                duration=ctx.settings.duration,
                connections=connections,
                warmup=ctx.settings.warmup,
            )
        except (RuntimeError, OSError) as error:
            results.failures.append(f"{running.label} ({what}): {error}")
            return None
    after_stop(running, results, scenario.name)
    return measurement, steal, sample


def measure_cell(
    ctx: Context, name: str, workers: int, scenario: Scenario, round_no: int, results: Results
) -> None:
    """One cell, measured again (up to ``retries`` times) while the hypervisor disturbs it.

    The attempt with the least steal is kept: on a virtual machine whose host is busy, a cell
    can lose a fifth of its throughput to other guests, and the next attempt often does not.
    """
    label = name if workers == 1 else f"{name} x{workers}"
    # With workers, the server's tree can keep more than one core busy.
    busy = "server core" if workers == 1 else "server cores"
    width = 13 if ctx.settings.counts == [1] else 22
    attempts: list[tuple[Measurement, float, SupervisorSample | None]] = []
    for attempt in range(ctx.settings.retries + 1):
        outcome = measure_once(ctx, name, workers, scenario, round_no, results)
        if outcome is None:
            return
        attempts.append(outcome)
        measurement, steal, _ = outcome
        log(
            f"[round {round_no}] {scenario.name:8} {label:{width}} "
            f"{measurement.rps:>10,.0f} req/s  "
            f"p99 {measurement.p99_ms:7.2f} ms  {measurement.cpu_us_per_req:6.1f} µs/req  "
            f"{busy} {measurement.rps * measurement.cpu_us_per_req / 1e4:3.0f}% busy  "
            f"peak RSS {measurement.rss_mib:6.2f} MiB  {measurement.errors:,.0f} errors  "
            f"steal {steal:.0%}  others {measurement.others:.0%}"
            + (f"  (attempt {attempt + 1})" if attempt else "")
        )
        if steal <= STEAL_WARNING:
            break
    measurement, steal, sample = min(attempts, key=lambda kept: kept[1])
    results.add(scenario.name, name, measurement, workers)
    if sample is not None:
        results.supervisor.setdefault((scenario.name, name, workers), []).append(sample)
    if measurement.others > OTHERS_WARNING:
        results.warnings.append(
            f"{label} ({scenario.name}, round {round_no}): other processes took "
            f"{measurement.others:.0%} of the machine's CPU time during the measured run; "
            "this cell's figures are disturbed"
        )
    if steal > STEAL_WARNING:
        results.warnings.append(
            f"{label} ({scenario.name}, round {round_no}): the hypervisor took {steal:.0%} of the "
            "machine's CPU time (steal) during the least disturbed of "
            f"{ctx.settings.retries + 1} attempts; this cell's figures are disturbed"
        )


def implements(name: str, scenario: Scenario) -> bool:
    """Whether server ``name``'s app implements ``scenario`` (the others are skipped)."""
    return servers.implements(name, scenario.name)


def variants_of(names: list[str], counts: list[int]) -> list[tuple[str, int]]:
    """Every (server, worker count) to measure."""
    return [(name, workers) for workers in counts for name in names]


def run_full(ctx: Context, scenarios: list[Scenario], names: list[str], results: Results) -> None:
    """Start-up samples, then every scenario on every server, round after round."""
    settings = ctx.settings
    variants = variants_of(names, settings.counts)
    pairs = [(sc, name, w) for sc in scenarios for name, w in variants if implements(name, sc)]
    cells = settings.rounds * len(pairs)
    supervised = sum(1 for _, name, w in pairs if w > 1 and name in PYHOST_SERVERS)
    estimate: float = cells * (settings.warmup + settings.duration + CELL_OVERHEAD)
    estimate += settings.rounds * supervised * SUPERVISOR_IDLE
    log(f"{cells} cells, about {estimate / 60:.0f} min; logs in {os.path.relpath(ctx.logs)}")
    if settings.startup_runs > 0:
        measure_startup(ctx, variants, results)
    for round_no in range(1, settings.rounds + 1):
        shift = (round_no - 1) % len(variants)
        order = variants[shift:] + variants[:shift]  # who goes first changes each round
        for scenario in scenarios:
            for name, workers in order:
                if implements(name, scenario):
                    measure_cell(ctx, name, workers, scenario, round_no, results)


def smoke_server(
    ctx: Context,
    name: str,
    scenarios: list[Scenario],
    results: Results,
    workers: int = 1,
) -> None:
    """Smoke one server: start once, check the answer of every scenario its app implements,
    and a short wrk run each.

    A supervised pyhost must also show one process per worker while it serves, and print its
    supervisor's and every worker's figures at exit.
    """
    with serving(ctx, name, "smoke", workers) as running:
        if not_ready(running, results, "smoke"):
            return
        results.startup_s[(name, workers)] = [running.startup_s or 0.0]
        if running.supervised:
            results.failures.extend(supervisor_problems(running))
        for scenario in scenarios:
            if not implements(name, scenario):
                continue
            problem = load.check_scenario(
                running.port, scenario, ctx.bench_file, ctx.layout.wsload_bin
            )
            if problem is not None:
                results.failures.append(f"{running.label}: {problem}")
                continue
            try:
                measurement, wrk, _, sample = measure(
                    ctx,
                    running,
                    scenario,
                    duration=SMOKE_DURATION,
                    connections=scenario.smoke_connections,
                    warmup=0,
                    idle=SMOKE_SUPERVISOR_IDLE,
                )
            except (RuntimeError, OSError) as error:
                results.warnings.append(f"{running.label} ({scenario.name}): wrk: {error}")
                continue
            if wrk.status_errors:
                results.failures.append(
                    f"{running.label}: {wrk.status_errors} non-2xx answers to {scenario.path} "
                    "under wrk"
                )
            results.add(scenario.name, name, measurement, workers)
            if sample is not None:
                results.supervisor.setdefault((scenario.name, name, workers), []).append(sample)
    after_stop(running, results, "smoke (all scenarios)")
    if running.supervised:
        results.failures.extend(supervisor_exit_problems(running))
    log(f"smoke: {running.label} done")


def ran_variants(settings: Settings, names: list[str]) -> list[tuple[str, int]]:
    """Every (server, workers) the run measures, in order.

    The smoke check adds pyhost with two workers when no count asked for is above one.
    """
    variants = variants_of(names, settings.counts)
    if settings.smoke and report.PYHOST in names and max(settings.counts) == 1:
        variants.append((report.PYHOST, SMOKE_WORKERS))
    return variants


def run_smoke(ctx: Context, scenarios: list[Scenario], names: list[str], results: Results) -> None:
    """The CI check: every server, every scenario, correct answers; speed is not judged.

    Then pyhost once more with two workers, unless ``--workers`` already ran it with more.
    """
    for name, workers in ran_variants(ctx.settings, names):
        smoke_server(ctx, name, scenarios, results, workers)


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _connections(settings: Settings, scenarios: list[Scenario]) -> str:
    """The connection counts used, e.g. ``64 (sleep50: 1000)``."""
    counts = {
        sc.name: sc.smoke_connections if settings.smoke else sc.connections or settings.connections
        for sc in scenarios
    }
    if not counts:
        return "none (the SSE scenario only)"
    common = max(set(counts.values()), key=list(counts.values()).count)
    others = ", ".join(f"{name}: {n}" for name, n in counts.items() if n != common)
    return f"{common} ({others})" if others else str(common)


def _display_path(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def render(
    ctx: Context,
    results: Results,
    scenarios: list[Scenario],
    names: list[str],
    versions: dict[str, str],
) -> str:
    """The whole report as Markdown."""
    s = ctx.settings
    title = "pyhost benchmark"
    if s.smoke:
        title += " - smoke run (correctness only; the figures mean nothing)"
    peers = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "python")
    variants = ran_variants(s, names)
    ran = set(variants)
    counts = sorted({workers for _, workers in variants})
    per_cell = (
        f"each server started once, {SMOKE_DURATION} s of wrk per scenario, low connection counts"
        if s.smoke
        else f"{s.warmup} s warm-up + {s.duration} s measured; {s.rounds} interleaved round(s); "
        "each server restarted for every cell, so peak RSS is per cell; "
        f"a cell measured again, up to {s.retries} times, while the hypervisor's steal was "
        f"above {STEAL_WARNING:.0%}, and its least disturbed attempt kept"
    )
    lines = [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {_cpu_model()}, {os.cpu_count()} cores; "
        + "; ".join(ctx.pinning(workers).describe() for workers in counts),
        *_workers_lines(s, variants),
        f"- per cell: {per_cell}",
        f"- wrk: {s.threads} threads, {_connections(s, scenarios)} connections, "
        "`--latency`, percentiles from its histogram",
        f"- pyhost: `{_display_path(ctx.layout.pyhost_bin)}`; peers: {peers}; "
        f"Python {versions.get('python', '?')}",
        *(
            []
            if s.smoke
            else [
                "- page cache: the pyhost binary and the virtualenv's extension modules dropped "
                "from it before the first server started, so that no server's files are mapped "
                "from pages pip or the linker just wrote (`drop_cached_pages`)"
            ]
        ),
        "",
        "Scenarios: " + "; ".join(f"**{sc.name}** {sc.description}" for sc in scenarios) + ".",
        "",
        "## Throughput, latency, CPU, memory (medians over rounds)",
        "",
        *report.main_table(results, scenarios, names, counts, ran),
        "",
        "Peer cells show pyhost/peer in brackets"
        + (" (pyhost with as many workers)" if counts != [1] else "")
        + ": above 1x pyhost is ahead for req/s, "
        "below 1x it is ahead for latency, CPU µs/req, RSS and errors."
        + _skipped_note(scenarios, names),
        *_middleware_section(results, names, counts, ran),
        *_files_section(results, scenarios, names, counts, ran),
        *_scaling_section(results, scenarios, names, counts, ran, ctx),
        *_supervisor_section(results, scenarios, ran),
        *sse.table(results.sse, sse.SMOKE_CLIENTS if s.smoke else sse.CLIENTS),
        "",
        "## Start-up: exec to first 200 on GET /hello",
        "",
        *report.startup_table(results, names, counts, ran),
        "",
        "## pyhost's own figures (`pyhost stats:` at shutdown, whole server run)",
        "",
        *report.pyhost_stats_table(results),
    ]
    for heading, items in (("Failures", results.failures), ("Warnings", results.warnings)):
        if items:
            # Multi-line items (log tails) stay inside their list item, as indented code.
            lines += ["", f"## {heading}", ""]
            lines += ["- " + item.replace("\n", "\n      ") for item in items]
    return "\n".join(lines) + "\n"


def _skipped_note(scenarios: list[Scenario], names: list[str]) -> str:
    """Which servers have no row for which scenarios (their apps do not implement them)."""
    skipped = [
        f"{name} ({', '.join(sc.name for sc in scenarios if not implements(name, sc))})"
        for name in names
        if not all(implements(name, sc) for sc in scenarios)
    ]
    if not skipped:
        return ""
    return " No row for a scenario the server's app does not implement: " + "; ".join(skipped) + "."


def _middleware_section(
    results: Results, names: list[str], counts: list[int], ran: set[tuple[str, int]]
) -> list[str]:
    """Each server's /mw/hello (one middleware) against its /hello, when the run had both."""
    table = report.middleware_table(results, names, counts, ran)
    if not table:
        return []
    return [
        "",
        "## One middleware: /mw/hello against /hello (same server, same run, medians)",
        "",
        "`req/s mw/hello` below 1x and `p99 mw/hello` above 1x: what the middleware costs; "
        "`middleware CPU µs/req`: the difference in CPU per request. pyhost's `/hello` runs "
        "no middleware (its `/mw` router's middleware covers only that router's routes), and "
        "Starlette's `/hello` is outside the `Mount('/mw')` that carries its middleware.",
        "",
        *table,
    ]


def _files_section(
    results: Results,
    scenarios: list[Scenario],
    names: list[str],
    counts: list[int],
    ran: set[tuple[str, int]],
) -> list[str]:
    """The downloads as bytes per second and CPU per GiB, when the run had any."""
    table = report.files_table(results, scenarios, names, counts, ran)
    if not table:
        return []
    return [
        "",
        "## File downloads (medians)",
        "",
        "`MiB/s`: requests per second times the file's size; `CPU ms/GiB`: the server's CPU "
        "time per GiB sent; `core busy`: how much of its core the server used (below 100 % it "
        "was not the bottleneck: the load generator, or loopback itself, was). `file` sets "
        "pyhost's `FileResponse` against Granian's RSGI `response_file`, `static` pyhost's "
        "`[static]` mount against Granian's static files.",
        "",
        *table,
    ]


def _workers_lines(settings: Settings, variants: list[tuple[str, int]]) -> list[str]:
    """The report's note on multi-worker servers, when some run."""
    if all(workers == 1 for _, workers in variants):
        return []
    counts = ", ".join(str(n) for n in settings.counts)
    which = (
        f"{counts} per server"
        if max(settings.counts) > 1
        else f"1 per server, and pyhost with {SMOKE_WORKERS} as well (the supervisor's check)"
    )
    return [
        f"- workers: {which}. pyhost with `--workers N` (its supervisor, which owns one "
        "SO_REUSEPORT socket per worker slot), Granian with `--workers N` (each worker binds "
        "an SO_REUSEPORT socket of its own), uvicorn with `--workers N` (one socket its "
        "workers share). CPU µs/req counts the whole process tree (supervisor or main "
        "process, and every worker); peak RSS is the largest worker's"
    ]


def _scaling_section(
    results: Results,
    scenarios: list[Scenario],
    names: list[str],
    counts: list[int],
    ran: set[tuple[str, int]],
    ctx: Context,
) -> list[str]:
    """Each server with N workers against itself with one, when the run measured both."""
    lines: list[str] = []
    for workers in counts:
        both = [name for name in names if (name, 1) in ran and (name, workers) in ran]
        if workers == 1 or not both:
            continue
        lines += [
            "",
            f"## {workers} workers against one (same run, medians over rounds)",
            "",
            f"`req/s x{workers}/x1` above 1x: the {workers} workers served more; "
            f"`efficiency`: that ratio divided by {workers} (1.00: each worker as fast as a "
            "lone one). CPU µs/req and p99 below 1x: the workers needed less.",
            f"Pinning: {ctx.pinning(1).describe()} with one worker; "
            f"{ctx.pinning(workers).describe()}.",
            "",
            *report.scaling_table(results, scenarios, both, workers),
        ]
    return lines


def _supervisor_section(
    results: Results, scenarios: list[Scenario], ran: set[tuple[str, int]]
) -> list[str]:
    """pyhost's supervisor's own CPU and memory, when pyhost ran with workers."""
    if not any(workers > 1 and name in PYHOST_SERVERS for name, workers in ran):
        return []
    return [
        "",
        "## pyhost's supervisor (its own process, not its workers)",
        "",
        f"Idle CPU: over {SUPERVISOR_IDLE:.0f} s after start-up, before any load "
        f"({SMOKE_SUPERVISOR_IDLE} s in smoke mode); under load: over the measured run. From "
        "the scheduler's run time of its threads (`/proc/<pid>/task/*/sched`), VmRSS from "
        "`/proc/<pid>/status` before the warm-up and after the measured run.",
        "",
        *report.supervisor_table(results, scenarios),
    ]


def prepare_all(
    args: argparse.Namespace, scenarios: list[Scenario]
) -> tuple[Path, Path | None, dict[str, Path]]:
    """Build or find pyhost, install the peers and wrk, build the WebSocket load client when a
    WebSocket scenario runs; the binaries and the wrk scripts."""
    prepare.ensure_taskset()
    prepare.ensure_wrk()
    prepare.ensure_venv(BENCH / ".venv", REPO / "pyruntime")
    prepare.compile_bytecode(BENCH / ".venv" / "bin" / "python", BENCH / "apps")
    # pyhost's configs mount the directory, so it must exist whatever the scenarios.
    prepare.ensure_bench_file(BENCH / "apps" / "static" / BENCH_FILE_NAME, BENCH_FILE_SIZE)
    pyhost_bin = prepare.pyhost_binary(REPO, args.bin, release=not args.smoke)
    if not pyhost_bin.exists():
        raise prepare.SetupError(f"{pyhost_bin}: no such binary")
    wsload_bin = None
    if any(scenario.protocol == "websocket" for scenario in scenarios):
        wsload_bin = prepare.wsload_binary(REPO, release=not args.smoke)
    if not args.smoke:
        dropped = prepare.drop_cached_pages(pyhost_bin, BENCH / ".venv")
        log(f"dropped {dropped} server binaries and extension modules from the page cache")
    logs = RESULTS / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    scripts = write_wrk_scripts(scenarios, BENCH / "lua" / "report.lua", logs / "wrk")
    return pyhost_bin, wsload_bin, scripts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the smoke check); 0 if every server answered correctly."""
    args = parse_args(argv)
    # The SSE scenario has a load client of its own (harness/sse.py), not wrk, and a server of
    # its own, Starlette on uvicorn: both are taken out of the lists before they are checked.
    run_sse_part = args.scenarios is None or "sse" in args.scenarios
    sse_names = (
        [name for name in sse.SERVERS if args.servers is None or name in args.servers]
        if run_sse_part
        else []
    )
    if args.servers is not None:
        args.servers = [name for name in args.servers if name not in sse.ONLY_SERVERS]
    try:
        wrk_names = None if args.scenarios is None else [s for s in args.scenarios if s != "sse"]
        scenarios = select_scenarios(wrk_names) if wrk_names != [] else []
        names = servers.select_servers(args.servers)
    except ValueError as error:
        log(f"error: {error}")
        return 2
    try:
        pyhost_bin, wsload_bin, scripts = prepare_all(args, scenarios)
    except prepare.SetupError as error:
        log(f"setup failed: {error}")
        return 2
    settings = Settings(
        smoke=args.smoke,
        duration=SMOKE_DURATION if args.smoke else args.duration,
        warmup=0 if args.smoke else max(args.warmup, 0),
        rounds=1 if args.smoke else args.rounds,
        connections=args.connections,
        threads=args.threads,
        startup_runs=0 if args.smoke else args.startup_runs,
        retries=0 if args.smoke else max(args.retries, 0),
        workers=tuple(args.workers),
    )
    layout = servers.Layout(
        pyhost_bin=pyhost_bin, venv=BENCH / ".venv", apps=BENCH / "apps", wsload_bin=wsload_bin
    )
    # Every pinning is worked out before the driver pins itself, from the cores it may use.
    cores = sorted(os.sched_getaffinity(0))
    counts = sorted({workers for _, workers in ran_variants(settings, names)})
    pinnings = {workers: Pinning.for_cores(cores, workers) for workers in counts}
    for pinning in pinnings.values():
        log(pinning.describe())
    needed = max([sc.connections or settings.connections for sc in scenarios] + [sse.CLIENTS]) + 256
    prepare.raise_nofile_limit(needed)
    pinnings[counts[0]].pin_driver()
    ctx = Context(layout, servers.server_env(layout), pinnings, scripts, RESULTS / "logs", settings)
    results = Results()
    if scenarios and names:
        (run_smoke if args.smoke else run_full)(ctx, scenarios, names, results)
    run_sse(ctx, sse_names, results)
    text = render(ctx, results, scenarios, names, prepare.peer_versions(layout.venv_bin / "python"))
    print(text, end="")
    out = RESULTS / (
        "smoke.md" if args.smoke else "latest.md" if settings.counts == [1] else "workers.md"
    )
    out.write_text(text)
    log(f"written to {_display_path(out)}")
    if results.failures:
        log(f"FAILED: {len(results.failures)} problem(s), see the report")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
