"""Benchmark pyhost against Granian (RSGI and ASGI) and uvicorn on the same five scenarios.

Usage (from the repository root, with the system ``python3``; the driver needs only the stdlib)::

    python3 bench/run.py [--smoke] [--bin PATH] [--duration S] [--rounds N]
                         [--servers a,b] [--scenarios x,y]

It builds pyhost in release mode (unless ``--bin`` names a binary), installs the peers into
``bench/.venv`` and wrk with apt-get when missing, then runs every scenario on every server in
interleaved rounds, each server alone on one core and wrk on another. The medians go to stdout
and to ``bench/results/latest.md``. ``--smoke`` only checks that every server answers every
scenario correctly (exit 1 otherwise) with a short wrk run each; see ``bench/README.md``.
"""

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import load, prepare, report, servers
from harness.pinning import Pinning
from harness.report import Measurement, Results
from harness.scenarios import Scenario, select_scenarios, write_wrk_scripts

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


@dataclass(frozen=True)
class Context:
    """What every measurement needs: where things are, the pinning, the wrk scripts, the logs."""

    layout: servers.Layout
    env: dict[str, str]
    pinning: Pinning
    scripts: dict[str, Path]
    logs: Path
    settings: Settings


@dataclass
class Running:
    """A server started for some measurements."""

    name: str
    server: servers.Server
    port: int
    startup_s: float | None = None
    exit_code: int | None = None


def _csv(value: str) -> list[str]:
    """A comma-separated command-line list."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _positive(value: str) -> int:
    """A command-line integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return number


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
    parser.add_argument("--scenarios", type=_csv, help="subset of hello,users,echo,sleep0,sleep50")
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
def serving(ctx: Context, name: str, label: str) -> Iterator[Running]:
    """Start server ``name`` pinned to the server core, wait for its first 200; stop it after."""
    port = free_port()
    command = [*ctx.pinning.server_prefix(), *servers.server_command(name, ctx.layout, port)]
    server = servers.Server(command, ctx.env, ctx.layout.apps, ctx.logs / f"{name}-{label}")
    running = Running(name, server, port)
    try:
        ready = load.wait_for_hello(port, READY_TIMEOUT, server.alive)
        if ready is not None:
            running.startup_s = ready - server.started
        yield running
    finally:
        running.exit_code = server.stop()


def not_ready(running: Running, results: Results, what: str) -> bool:
    """Record a failure if the server never answered 200 on /hello; True in that case."""
    if running.startup_s is not None:
        return False
    code = running.server.process.poll()
    reason = (
        f"no 200 on GET /hello within {READY_TIMEOUT:.0f} s"
        if code is None
        else f"exited with status {code} before answering GET /hello"
    )
    tail = running.server.log_tail() or "(no output)"
    results.failures.append(f"{running.name} ({what}): {reason}; log tail:\n{tail}")
    return True


def after_stop(running: Running, results: Results, stats_label: str) -> None:
    """Note an unclean exit, and collect pyhost's ``pyhost stats:`` line when it printed one."""
    # uvicorn re-raises the SIGTERM it handled once it has shut down: that is a clean exit too.
    if running.exit_code not in (0, -signal.SIGTERM, None):
        results.warnings.append(f"{running.name} ({stats_label}) exited {running.exit_code}")
    if running.name == report.PYHOST:
        stats = servers.parse_pyhost_stats(running.server.stderr_text())
        if stats is not None:
            results.pyhost_stats.setdefault(stats_label, []).append(stats)


def measure(
    ctx: Context,
    running: Running,
    scenario: Scenario,
    *,
    duration: int,
    connections: int,
    warmup: int,
) -> tuple[Measurement, load.WrkResult, float]:
    """Warm up, then one measured wrk run with the server's CPU time and peak RSS around it.

    Also returns the share of the machine's CPU time the hypervisor took during the measured run.
    """
    script = ctx.scripts[scenario.name]
    prefix = ctx.pinning.load_prefix()
    threads = ctx.settings.threads
    if warmup > 0:
        load.run_wrk(
            prefix,
            running.port,
            scenario,
            script,
            duration=warmup,
            connections=connections,
            threads=threads,
        )
    pid = running.server.pid
    cpu_before = servers.tree_cpu_seconds(pid)
    steal_before = servers.steal_seconds()
    started = time.perf_counter()
    result = load.run_wrk(
        prefix,
        running.port,
        scenario,
        script,
        duration=duration,
        connections=connections,
        threads=threads,
    )
    cpu_s = servers.tree_cpu_seconds(pid) - cpu_before
    machine_s = (time.perf_counter() - started) * (os.cpu_count() or 1)
    steal = (servers.steal_seconds() - steal_before) / max(machine_s, 1e-9)
    measurement = Measurement(
        rps=result.rps,
        p50_ms=result.p50_us / 1000,
        p99_ms=result.p99_us / 1000,
        cpu_us_per_req=cpu_s * 1e6 / max(result.requests, 1),
        rss_mib=servers.worker_peak_rss_kib(pid) / 1024,
        errors=result.errors,
    )
    return measurement, result, steal


def measure_startup(ctx: Context, names: list[str], results: Results) -> None:
    """Time from exec to the first 200 on /hello, ``startup_runs`` times per server, interleaved."""
    for run in range(1, ctx.settings.startup_runs + 1):
        for name in names:
            with serving(ctx, name, f"startup{run}") as running:
                if not not_ready(running, results, "start-up"):
                    results.startup_s.setdefault(name, []).append(running.startup_s or 0.0)
            after_stop(running, results, "start-up")
        log(f"start-up run {run}/{ctx.settings.startup_runs} done")


def measure_once(
    ctx: Context, name: str, scenario: Scenario, round_no: int, results: Results
) -> tuple[Measurement, float] | None:
    """A fresh server, a correctness check, warm-up, measurement, stop; None if it failed.

    Returns the figures and the share of the machine's CPU time the hypervisor took meanwhile.
    """
    what = f"{scenario.name}, round {round_no}"
    connections = scenario.connections or ctx.settings.connections
    with serving(ctx, name, f"{scenario.name}-r{round_no}") as running:
        if not_ready(running, results, what):
            return None
        problem = load.check_scenario(running.port, scenario)
        if problem is not None:
            results.failures.append(f"{name} ({what}): {problem}")
            return None
        try:
            measurement, _, steal = measure(
                ctx,
                running,
                scenario,
                duration=ctx.settings.duration,
                connections=connections,
                warmup=ctx.settings.warmup,
            )
        except (RuntimeError, OSError) as error:
            results.failures.append(f"{name} ({what}): {error}")
            return None
    after_stop(running, results, scenario.name)
    return measurement, steal


def measure_cell(
    ctx: Context, name: str, scenario: Scenario, round_no: int, results: Results
) -> None:
    """One cell, measured again (up to ``retries`` times) while the hypervisor disturbs it.

    The attempt with the least steal is kept: on a virtual machine whose host is busy, a cell
    can lose a fifth of its throughput to other guests, and the next attempt often does not.
    """
    attempts: list[tuple[Measurement, float]] = []
    for attempt in range(ctx.settings.retries + 1):
        outcome = measure_once(ctx, name, scenario, round_no, results)
        if outcome is None:
            return
        attempts.append(outcome)
        measurement, steal = outcome
        log(
            f"[round {round_no}] {scenario.name:8} {name:13} {measurement.rps:>10,.0f} req/s  "
            f"p99 {measurement.p99_ms:7.2f} ms  {measurement.cpu_us_per_req:6.1f} µs/req  "
            f"server core {measurement.rps * measurement.cpu_us_per_req / 1e4:3.0f}% busy  "
            f"peak RSS {measurement.rss_mib:6.2f} MiB  {measurement.errors:,.0f} errors  "
            f"steal {steal:.0%}" + (f"  (attempt {attempt + 1})" if attempt else "")
        )
        if steal <= STEAL_WARNING:
            break
    measurement, steal = min(attempts, key=lambda kept: kept[1])
    results.add(scenario.name, name, measurement)
    if steal > STEAL_WARNING:
        results.warnings.append(
            f"{name} ({scenario.name}, round {round_no}): the hypervisor took {steal:.0%} of the "
            "machine's CPU time (steal) during the least disturbed of "
            f"{ctx.settings.retries + 1} attempts; this cell's figures are disturbed"
        )


def run_full(ctx: Context, scenarios: list[Scenario], names: list[str], results: Results) -> None:
    """Start-up samples, then every scenario on every server, round after round."""
    settings = ctx.settings
    cells = settings.rounds * len(scenarios) * len(names)
    estimate = cells * (settings.warmup + settings.duration + CELL_OVERHEAD)
    log(f"{cells} cells, about {estimate / 60:.0f} min; logs in {os.path.relpath(ctx.logs)}")
    if settings.startup_runs > 0:
        measure_startup(ctx, names, results)
    for round_no in range(1, settings.rounds + 1):
        shift = (round_no - 1) % len(names)
        order = names[shift:] + names[:shift]  # who goes first changes from round to round
        for scenario in scenarios:
            for name in order:
                measure_cell(ctx, name, scenario, round_no, results)


def smoke_server(ctx: Context, name: str, scenarios: list[Scenario], results: Results) -> None:
    """Smoke one server: start once, check every scenario's answer, a short wrk run each."""
    with serving(ctx, name, "smoke") as running:
        if not_ready(running, results, "smoke"):
            return
        results.startup_s[name] = [running.startup_s or 0.0]
        for scenario in scenarios:
            problem = load.check_scenario(running.port, scenario)
            if problem is not None:
                results.failures.append(f"{name}: {problem}")
                continue
            try:
                measurement, wrk, _ = measure(
                    ctx,
                    running,
                    scenario,
                    duration=SMOKE_DURATION,
                    connections=scenario.smoke_connections,
                    warmup=0,
                )
            except (RuntimeError, OSError) as error:
                results.warnings.append(f"{name} ({scenario.name}): wrk: {error}")
                continue
            if wrk.status_errors:
                results.failures.append(
                    f"{name}: {wrk.status_errors} non-2xx answers to {scenario.path} under wrk"
                )
            results.add(scenario.name, name, measurement)
    after_stop(running, results, "smoke (all scenarios)")
    log(f"smoke: {name} done")


def run_smoke(ctx: Context, scenarios: list[Scenario], names: list[str], results: Results) -> None:
    """The CI check: every server, every scenario, correct answers; speed is not judged."""
    for name in names:
        smoke_server(ctx, name, scenarios, results)


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
        f"- machine: {_cpu_model()}, {os.cpu_count()} cores; {ctx.pinning.describe()}",
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
        *report.main_table(results, scenarios, names),
        "",
        "Peer cells show pyhost/peer in brackets: above 1x pyhost is ahead for req/s, "
        "below 1x it is ahead for latency, CPU µs/req, RSS and errors.",
        "",
        "## Start-up: exec to first 200 on GET /hello",
        "",
        *report.startup_table(results, names),
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


def prepare_all(
    args: argparse.Namespace, scenarios: list[Scenario]
) -> tuple[Path, dict[str, Path]]:
    """Build or find pyhost, install the peers and wrk; the binary and the wrk scripts."""
    prepare.ensure_taskset()
    prepare.ensure_wrk()
    prepare.ensure_venv(BENCH / ".venv", REPO / "pyruntime")
    prepare.compile_bytecode(BENCH / ".venv" / "bin" / "python", BENCH / "apps")
    pyhost_bin = prepare.pyhost_binary(REPO, args.bin, release=not args.smoke)
    if not pyhost_bin.exists():
        raise prepare.SetupError(f"{pyhost_bin}: no such binary")
    if not args.smoke:
        dropped = prepare.drop_cached_pages(pyhost_bin, BENCH / ".venv")
        log(f"dropped {dropped} server binaries and extension modules from the page cache")
    logs = RESULTS / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    scripts = write_wrk_scripts(scenarios, BENCH / "lua" / "report.lua", logs / "wrk")
    return pyhost_bin, scripts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the smoke check); 0 if every server answered correctly."""
    args = parse_args(argv)
    try:
        scenarios = select_scenarios(args.scenarios)
        names = servers.select_servers(args.servers)
    except ValueError as error:
        log(f"error: {error}")
        return 2
    try:
        pyhost_bin, scripts = prepare_all(args, scenarios)
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
    )
    layout = servers.Layout(pyhost_bin=pyhost_bin, venv=BENCH / ".venv", apps=BENCH / "apps")
    pinning = Pinning.detect()
    log(pinning.describe())
    needed = max([sc.connections or settings.connections for sc in scenarios]) + 256
    prepare.raise_nofile_limit(needed)
    pinning.pin_driver()
    ctx = Context(layout, servers.server_env(layout), pinning, scripts, RESULTS / "logs", settings)
    results = Results()
    (run_smoke if args.smoke else run_full)(ctx, scenarios, names, results)
    text = render(ctx, results, scenarios, names, prepare.peer_versions(layout.venv_bin / "python"))
    print(text, end="")
    out = RESULTS / ("smoke.md" if args.smoke else "latest.md")
    out.write_text(text)
    log(f"written to {_display_path(out)}")
    if results.failures:
        log(f"FAILED: {len(results.failures)} problem(s), see the report")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
