"""How `server.balance` spreads connections over two workers, and what a killed worker loses.

Not part of the test suite. Run it from the repository root once a pyhost binary exists
(`cargo build -p pyhost`); the SDK comes from `.venv` (`make venv`):

    .venv/bin/python scripts/balance.py [--bin target/debug/pyhost] [--modes reuseport,shared]

Only the standard library is used. For each balance mode it writes a small app into a temporary
directory (`GET /pid` answers the worker's pid, `GET /slow` the same after
`await asyncio.sleep(0.5)`), starts `pyhost serve` with `server.workers = 2` on
`127.0.0.1:0`, and measures on loopback:

- **spread**, three loads, each `--rounds` times (3) on one server per mode: 100 connections
  of one request each (`Connection: close`) from a single client, so that both workers are
  idle whenever a connection arrives; 400 such connections from 8 concurrent clients, each
  opening its next connection when the last one is answered; 64 connections opened at once,
  then 50 requests each, one at a time (a kept-alive connection stays on one worker);
- **kill -9, queued**: a server with `server.max_connections = 20` per worker gets 200
  connections, each sending `GET /slow` at once, so that each worker holds 20 requests and
  the rest wait in the listen backlog. Once the first worker holds its 20, it is killed with
  SIGKILL. Its 20 in-flight requests are expected to fail; the question is whether the
  connections queued behind them (on its own `SO_REUSEPORT` socket, or on the shared one)
  survive and are served, by the other worker or by the replacement the supervisor starts;
- **kill -9, arriving**: on a fresh server, one worker is killed and at once 100 new
  connections with one `GET /pid` each are opened, then 100 more once the supervisor has
  logged the death: are they served, by whom, and how long do they wait.

The kill tests wait 2.5 s after start-up first: the supervisor backs off before replacing a
worker that dies within 2 s of becoming ready (it counts as failing to start), and what is
measured here is the replacement of a worker that has been serving. Before the kill the script
reads, from `/proc/<pid>/fd` and `/proc/net/tcp`, how many established connections the doomed
worker holds and how many connections wait in the accept queue of each listening socket; the
supervisor's log lines (their timestamps) say when it saw the death, started the replacement,
and had it ready. It prints one Markdown report on stdout (`--out FILE` also writes it there).
Every load is bounded: the whole run takes about half a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LISTENING_RE = re.compile(r"listening on http://(\S+):(\d+)")
# "worker 3 (pid 1234) starting in slot 0", "worker 3 ready in 0.11s"
STARTING_RE = re.compile(r"worker (\d+) \(pid (\d+)\) starting in slot (\d+)")
STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+)Z ")
# A worker killed sooner than this after it became ready counts as failing to start, and its
# slot backs off before the replacement starts (the supervisor's YOUNG, 2 s): the kill tests
# wait this long first, to see how a worker that has been serving is replaced.
SETTLE_S = 2.5
START_TIMEOUT = 30.0
START_ATTEMPTS = 3
DIRS_RE = re.compile(r"(?<![\w.])/(?:[^\s/:]+/)+")
CLIENT_TIMEOUT = 15.0
MODES = ("reuseport", "shared")

APP = """\
import asyncio
import os

from pyhost import Router

router = Router()


@router.get("/pid")
async def pid(request):
    return {"pid": os.getpid()}


@router.get("/slow")
async def slow(request):
    await asyncio.sleep(0.5)
    return {"pid": os.getpid()}
"""


def config_text(mode: str, max_connections: int | None) -> str:
    """The server's pyhost.toml: two workers, the balance mode, maybe a connection limit."""
    limit = f"max_connections = {max_connections}\n" if max_connections else ""
    return f'[server]\nworkers = 2\nbalance = "{mode}"\n{limit}[app]\nmodule = "app"\n'


# ---------------------------------------------------------------------------------------------
# The server


@dataclass
class Server:
    """A running `pyhost serve` with its supervisor pid, port and stderr log."""

    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def pid(self) -> int:
        """The supervisor's pid."""
        return self.process.pid

    def log(self) -> str:
        """Everything on stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def workers(self) -> dict[int, tuple[int, int]]:
        """Worker number -> (pid, slot), from the supervisor's `starting` log lines."""
        return {int(m[1]): (int(m[2]), int(m[3])) for m in STARTING_RE.finditer(self.log())}

    def logged_at(self, text: str) -> float | None:
        """Wall-clock time (epoch seconds) of the first log line containing ``text``."""
        for line in self.log().splitlines():
            match = STAMP_RE.match(line)
            if match and text in line:
                stamp = datetime.datetime.fromisoformat(match[1]).replace(tzinfo=datetime.UTC)
                return stamp.timestamp()
        return None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 15 s; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _parents() -> dict[int, int]:
    """Pid -> parent pid for every process in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(raw[raw.rindex(")") + 2 :].split()[1])
    return parents


class StartFailed(RuntimeError):
    """The server exited, or did not print `listening on` in time."""


def start_server(binary: Path, workdir: Path, mode: str, max_connections: int | None) -> Server:
    """Write the config, start the server, wait for its `listening on` line."""
    name = f"{mode}-{max_connections or 'nolimit'}"
    config = workdir / f"{name}.toml"
    config.write_text(config_text(mode, max_connections))
    stderr_path = workdir / f"{name}.err"
    env = dict(os.environ, VIRTUAL_ENV=str(REPO / ".venv"), NO_COLOR="1")
    env.pop("PYTHONHOME", None)
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(config), "--listen", f"{HOST}:0"],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.1):
            if process.poll() is not None:
                break
            continue
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        match = LISTENING_RE.search(buffer.decode(errors="replace"))
        if match:
            selector.close()
            return Server(process, int(match[2]), stderr_path)
    selector.close()
    process.kill()
    process.wait()
    tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-20:])
    raise StartFailed(f"no `listening on` within {START_TIMEOUT:.0f} s; stderr ends:\n{tail}")


# ---------------------------------------------------------------------------------------------
# /proc: what a worker holds, what waits in the accept queues


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open."""
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


@dataclass(frozen=True)
class TcpEntry:
    """One line of /proc/net/tcp that matters here."""

    local_port: int
    state: int  # 1 ESTABLISHED, 10 LISTEN
    rx_queue: int  # for a listening socket: connections waiting in its accept queue
    inode: int


def _tcp_entries(port: int) -> list[TcpEntry]:
    """The IPv4 sockets whose local port is ``port``."""
    entries = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port != port:
            continue
        rx_queue = int(fields[4].split(":")[1], 16)
        entries.append(TcpEntry(local_port, int(fields[3], 16), rx_queue, int(fields[9])))
    return entries


@dataclass(frozen=True)
class Snapshot:
    """At the moment of the kill: the doomed worker's connections, the accept queues."""

    held_by_victim: int
    queued_on_victim_socket: int
    queued_elsewhere: int


def snapshot(port: int, victim: int) -> Snapshot:
    """What ``victim`` holds and what waits on the listening sockets of ``port``."""
    mine = _socket_inodes(victim)
    entries = _tcp_entries(port)
    held = sum(1 for e in entries if e.state == 1 and e.inode in mine)
    queued_mine = sum(e.rx_queue for e in entries if e.state == 10 and e.inode in mine)
    queued_other = sum(e.rx_queue for e in entries if e.state == 10 and e.inode not in mine)
    return Snapshot(held, queued_mine, queued_other)


# ---------------------------------------------------------------------------------------------
# The client: raw HTTP/1.1 on asyncio streams, so that every connection is exactly one socket


@dataclass
class Outcome:
    """What happened to one request."""

    pid: int | None = None
    error: str | None = None
    latency_s: float = 0.0


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framing, as pyhost sends here)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


def _request(path: str, port: int, close: bool) -> bytes:
    """The bytes of one GET, closing the connection after it or keeping it open."""
    connection = "close" if close else "keep-alive"
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: {connection}\r\n\r\n"
    return head.encode()


def _classify(error: BaseException) -> str:
    """A short name for a failed request."""
    if isinstance(error, ConnectionResetError):
        return "reset (ECONNRESET)"
    if isinstance(error, asyncio.IncompleteReadError):
        return "closed before the response" if not error.partial else "response cut short"
    if isinstance(error, TimeoutError):
        return f"no answer within {CLIENT_TIMEOUT:.0f} s"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    return type(error).__name__


async def one_request(port: int, path: str) -> Outcome:
    """A new connection, one request with `Connection: close`, the worker's pid."""
    started = time.perf_counter()
    outcome = Outcome()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(_request(path, port, close=True))
            await writer.drain()
            status, body = await _read_response(reader)
        if status != 200:
            outcome.error = f"status {status}"
        else:
            outcome.pid = int(json.loads(body)["pid"])
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
        outcome.error = _classify(error)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    outcome.latency_s = time.perf_counter() - started
    return outcome


async def keepalive_connection(port: int, requests: int, opened: asyncio.Event) -> list[Outcome]:
    """One connection, ``requests`` requests on it one after another (after ``opened``)."""
    outcomes: list[Outcome] = []
    try:
        async with asyncio.timeout(CLIENT_TIMEOUT):
            reader, writer = await asyncio.open_connection(HOST, port)
    except (OSError, TimeoutError) as error:
        return [Outcome(error=_classify(error))]
    try:
        await opened.wait()
        for _ in range(requests):
            started = time.perf_counter()
            async with asyncio.timeout(CLIENT_TIMEOUT):
                writer.write(_request("/pid", port, close=False))
                await writer.drain()
                status, body = await _read_response(reader)
            pid = int(json.loads(body)["pid"]) if status == 200 else None
            problem = None if status == 200 else f"status {status}"
            outcomes.append(Outcome(pid, problem, time.perf_counter() - started))
    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
        outcomes.append(Outcome(error=_classify(error)))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return outcomes


# ---------------------------------------------------------------------------------------------
# The measurements


@dataclass
class Spread:
    """How one load spread over the workers, summed over rounds, with each round's max/mean."""

    label: str
    unit: str
    per_worker: Counter[int] = field(default_factory=Counter)  # worker number -> count
    max_over_mean: list[float] = field(default_factory=list)  # one per round
    errors: int = 0

    def add_round(self, server: Server, outcomes: list[Outcome]) -> None:
        """Count one round's outcomes by the worker (number) that answered."""
        numbers = {pid: number for number, (pid, _) in server.workers().items()}
        counts: Counter[int] = Counter({number: 0 for number in numbers.values()})
        for outcome in outcomes:
            if outcome.pid is None:
                self.errors += 1
            else:
                counts[numbers.get(outcome.pid, -1)] += 1
        self.per_worker.update(counts)
        mean = sum(counts.values()) / max(len(counts), 1)
        self.max_over_mean.append(max(counts.values()) / mean if mean else 0.0)


def short_connections(server: Server, total: int, clients: int) -> list[Outcome]:
    """``total`` one-request connections from ``clients`` concurrent clients."""

    async def client(count: int) -> list[Outcome]:
        return [await one_request(server.port, "/pid") for _ in range(count)]

    async def run() -> list[Outcome]:
        shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
        done = await asyncio.gather(*(client(n) for n in shares))
        return [outcome for outcomes in done for outcome in outcomes]

    return asyncio.run(run())


def keepalive_connections(server: Server, connections: int, requests: int) -> list[list[Outcome]]:
    """``connections`` kept-alive connections of ``requests`` requests each, per connection."""

    async def run() -> list[list[Outcome]]:
        opened = asyncio.Event()
        tasks = [
            asyncio.create_task(keepalive_connection(server.port, requests, opened))
            for _ in range(connections)
        ]
        await asyncio.sleep(0.2)  # every connection opened (and accepted) before any request
        opened.set()
        return list(await asyncio.gather(*tasks))

    return asyncio.run(run())


def measure_spread(server: Server, args: argparse.Namespace, spreads: list[Spread]) -> None:
    """Every spread load, ``args.rounds`` times, into ``spreads`` (created on the first call)."""
    if not spreads:
        spreads.extend(
            [
                Spread(f"{args.serial} short connections, 1 client (idle server)", "conns"),
                Spread(f"{args.short} short connections, {args.clients} clients", "conns"),
                Spread(f"{args.keepalive} keep-alive conns x {args.requests} requests", "conns"),
            ]
        )
    serial, short, keepalive = spreads
    for _ in range(args.rounds):
        serial.add_round(server, short_connections(server, args.serial, 1))
        short.add_round(server, short_connections(server, args.short, args.clients))
        per_connection = keepalive_connections(server, args.keepalive, args.requests)
        # A connection's worker: the one that gave its first answer.
        firsts = [next((o for o in outcomes if o.pid), outcomes[0]) for outcomes in per_connection]
        keepalive.add_round(server, firsts)
        keepalive.errors += sum(
            1 for outcomes in per_connection for o in outcomes[1:] if o.pid is None
        )


@dataclass
class KillResult:
    """What a kill -9 did to the requests around it."""

    label: str
    total: int
    snapshot: Snapshot | None
    served_by: dict[str, int] = field(default_factory=dict)  # role -> requests
    errors: dict[str, int] = field(default_factory=dict)  # kind -> requests
    # Seconds after the kill: the supervisor logs the death, starts the replacement, and
    # the replacement is ready.
    died_s: float | None = None
    started_s: float | None = None
    ready_s: float | None = None
    latency_p50_s: float = 0.0
    latency_max_s: float = 0.0


def _roles(server: Server, victim_pid: int) -> dict[int, str]:
    """Pid -> `killed worker`, `other worker`, `replacement`."""
    return {
        pid: "killed worker" if pid == victim_pid else "other worker"
        for pid, _slot in server.workers().values()
    }


def _victim(server: Server) -> tuple[int, int]:
    """(worker number, pid) of the worker in slot 0."""
    for number, (pid, slot) in sorted(server.workers().items()):
        if slot == 0:
            return number, pid
    raise RuntimeError("no worker in slot 0 in the supervisor's log")


def _wait_for_replacement(server: Server, before: set[int], timeout: float = 10.0) -> int | None:
    """The number of the worker started after the kill, once it has logged `ready`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [n for n in server.workers() if n not in before]
        if new and server.logged_at(f"worker {new[0]} ready in") is not None:
            return new[0]
        time.sleep(0.02)
    return None


def _finish_kill(
    server: Server,
    label: str,
    outcomes: list[Outcome],
    shot: Snapshot | None,
    victim_pid: int,
    before: set[int],
    killed_at: float,
) -> KillResult:
    replacement = _wait_for_replacement(server, before)
    roles = _roles(server, victim_pid)
    if replacement is not None:
        roles[server.workers()[replacement][0]] = "replacement"
    result = KillResult(label, len(outcomes), shot)
    for outcome in outcomes:
        if outcome.pid is not None:
            role = roles.get(outcome.pid, f"pid {outcome.pid}")
            result.served_by[role] = result.served_by.get(role, 0) + 1
        else:
            kind = outcome.error or "?"
            result.errors[kind] = result.errors.get(kind, 0) + 1

    def after_kill(text: str) -> float | None:
        at = server.logged_at(text)
        return None if at is None else at - killed_at

    result.died_s = after_kill(f"(pid {victim_pid}) died")
    if replacement is not None:
        result.started_s = after_kill(f"worker {replacement} (pid")
        result.ready_s = after_kill(f"worker {replacement} ready in")
    latencies = [o.latency_s for o in outcomes]
    result.latency_p50_s = statistics.median(latencies)
    result.latency_max_s = max(latencies)
    return result


def kill_queued(server: Server, connections: int, limit: int) -> KillResult:
    """``connections`` slow requests at once, then SIGKILL to a worker holding ``limit``."""
    number, victim_pid = _victim(server)
    before = set(server.workers())
    time.sleep(SETTLE_S)

    async def run() -> tuple[list[Outcome], Snapshot, float]:
        tasks = [asyncio.create_task(one_request(server.port, "/slow")) for _ in range(connections)]
        # Until the victim holds its `limit` connections (or 1 s has passed).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if snapshot(server.port, victim_pid).held_by_victim >= limit:
                break
        shot = snapshot(server.port, victim_pid)
        killed_at = time.time()
        os.kill(victim_pid, signal.SIGKILL)
        return list(await asyncio.gather(*tasks)), shot, killed_at

    outcomes, shot, killed_at = asyncio.run(run())
    label = f"{connections} x GET /slow, max_connections = {limit}, worker {number} killed"
    return _finish_kill(server, label, outcomes, shot, victim_pid, before, killed_at)


def kill_arriving(server: Server, connections: int) -> list[KillResult]:
    """SIGKILL to a worker, then ``connections`` new one-request connections at once, and as
    many again once the supervisor has logged the death (and so had its chance to react)."""
    number, victim_pid = _victim(server)
    before = set(server.workers())
    time.sleep(SETTLE_S)

    async def run() -> tuple[list[Outcome], list[Outcome], float]:
        killed_at = time.time()
        os.kill(victim_pid, signal.SIGKILL)
        at_once = [
            asyncio.create_task(one_request(server.port, "/pid")) for _ in range(connections)
        ]
        deadline = time.monotonic() + 5.0
        while server.logged_at(f"(pid {victim_pid}) died") is None:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.002)
        later = [asyncio.create_task(one_request(server.port, "/pid")) for _ in range(connections)]
        return list(await asyncio.gather(*at_once)), list(await asyncio.gather(*later)), killed_at

    at_once, later, killed_at = asyncio.run(run())
    labels = (
        f"{connections} x GET /pid opened right after worker {number} was killed",
        f"{connections} x GET /pid opened once the supervisor logged the death",
    )
    return [
        _finish_kill(server, label, outcomes, None, victim_pid, before, killed_at)
        for label, outcomes in zip(labels, (at_once, later), strict=True)
    ]


# ---------------------------------------------------------------------------------------------
# The report


def _spread_row(mode: str, spread: Spread) -> str:
    total = sum(spread.per_worker.values())
    shares = " / ".join(
        f"w{n}: {c} ({c / total:.0%})" if total else f"w{n}: 0"
        for n, c in sorted(spread.per_worker.items())
    )
    ratios = ", ".join(f"{ratio:.2f}" for ratio in spread.max_over_mean)
    return f"| {mode} | {spread.label} | {shares} | {ratios} | {spread.errors} |"


def _kill_row(mode: str, result: KillResult) -> str:
    shot = result.snapshot
    held = "" if shot is None else str(shot.held_by_victim)
    queued = "" if shot is None else f"{shot.queued_on_victim_socket} / {shot.queued_elsewhere}"
    served = ", ".join(f"{role} {n}" for role, n in sorted(result.served_by.items())) or "none"
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(result.errors.items())) or "none"
    ready = " / ".join(
        "n/a" if at is None else f"{at:.2f}"
        for at in (result.died_s, result.started_s, result.ready_s)
    )
    return (
        f"| {mode} | {result.label} | {held} | {queued} | {sum(result.served_by.values())} | "
        f"{served} | {errors} | {ready} | {result.latency_p50_s:.2f} / "
        f"{result.latency_max_s:.2f} |"
    )


def render(
    binary: Path,
    rounds: int,
    spreads: list[tuple[str, Spread]],
    kills: list[tuple[str, KillResult]],
    deaths: dict[str, str],
    notes: list[str],
) -> str:
    shown = binary.relative_to(REPO) if binary.is_relative_to(REPO) else binary.name
    command = " ".join([".venv/bin/python", f"scripts/{Path(__file__).name}", *sys.argv[1:]])
    lines = [
        "# pyhost: connection balance over 2 workers, and kill -9",
        "",
        f"- binary: `{shown}`; {os.cpu_count()} cores, nothing pinned; loopback only",
        f"- command: `{command}`",
        "",
        "## Spread",
        "",
        f"Connections per worker, summed over {rounds} round(s) on one server per mode (a "
        "kept-alive connection counted once: all its requests go to one worker); "
        "`max/mean`: the busiest worker's count over the mean, per round (1.00 is an even "
        "split).",
        "",
        "| balance | load | connections per worker | max/mean per round | errors |",
        "| --- | --- | --- | ---: | ---: |",
        *(_spread_row(mode, spread) for mode, spread in spreads),
        "",
        "## kill -9 of one worker",
        "",
        "`held`: established connections the killed worker had at the kill; `queued`: "
        "connections waiting in the accept queue of its own listening socket / of the other "
        "socket(s), at the kill (from /proc/net/tcp; with `shared` there is one socket, held "
        "by both workers, so it counts as its own). `death / start / ready`: seconds from the "
        "kill to the supervisor's log lines saying the worker died, the replacement starts, "
        "the replacement is ready. `latency`: p50 / max over all the requests, seconds.",
        "",
        "| balance | load | held | queued | ok | served by | failed | death / start / ready "
        "| latency |",
        "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: |",
        *(_kill_row(mode, result) for mode, result in kills),
        "",
        "Supervisor's figures at exit: "
        + "; ".join(f"{mode}: {line}" for mode, line in deaths.items()),
        "",
        f"Servers started: {len(deaths) + len(modes_of(spreads))}, "
        f"failed starts (each retried, up to {START_ATTEMPTS} attempts): {len(notes)}",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(lines) + "\n"


def modes_of(spreads: list[tuple[str, Spread]]) -> set[str]:
    """The balance modes the spread loads ran in (one server each)."""
    return {mode for mode, _ in spreads}


def _supervisor_stats(server: Server) -> str:
    for line in reversed(server.log().splitlines()):
        if "pyhost supervisor stats:" in line:
            return "`" + line.split("pyhost supervisor stats:", 1)[1].strip() + "`"
    return "(no stats line)"


@contextlib.contextmanager
def running(
    binary: Path, workdir: Path, mode: str, limit: int | None, notes: list[str]
) -> Iterator[Server]:
    """A server for the ``with`` block, stopped after it (its log stays readable).

    A server that fails to start is started again, up to START_ATTEMPTS times in all; each
    failure goes into ``notes`` for the report.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            server = start_server(binary, workdir, mode, limit)
            break
        except StartFailed as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            # The message's last line, directories left out (temporary, of this machine).
            last = DIRS_RE.sub(".../", lines[-1] if lines else str(error))
            notes.append(f"{mode}: start attempt {attempt} failed: {last}")
            progress(notes[-1])
            if attempt == START_ATTEMPTS:
                raise
    try:
        yield server
    finally:
        server.stop()


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", type=Path, default=REPO / "target" / "debug" / "pyhost")
    parser.add_argument("--modes", default=",".join(MODES), help="balance modes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the spread loads")
    parser.add_argument("--serial", type=int, default=100, help="short conns, one client")
    parser.add_argument("--short", type=int, default=400, help="short connections")
    parser.add_argument("--clients", type=int, default=8, help="concurrent short-conn clients")
    parser.add_argument("--keepalive", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--requests", type=int, default=50, help="requests per keep-alive conn")
    parser.add_argument("--queued", type=int, default=200, help="connections in the kill test")
    parser.add_argument("--limit", type=int, default=20, help="max_connections in the kill test")
    parser.add_argument("--arriving", type=int, default=100, help="connections after a kill, twice")
    parser.add_argument("--out", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    binary = args.bin.resolve()
    if not os.access(binary, os.X_OK):
        print(f"{binary}: no such binary (cargo build -p pyhost)", file=sys.stderr)
        return 2
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    spreads: list[tuple[str, Spread]] = []
    kills: list[tuple[str, KillResult]] = []
    deaths: dict[str, str] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pyhost-balance-") as tmp:
        workdir = Path(tmp)
        (workdir / "app.py").write_text(APP)
        for mode in modes:
            progress(f"{mode}: spread")
            mode_spreads: list[Spread] = []
            with running(binary, workdir, mode, None, notes) as server:
                measure_spread(server, args, mode_spreads)
            spreads.extend((mode, spread) for spread in mode_spreads)
            progress(f"{mode}: kill -9 with connections queued")
            with running(binary, workdir, mode, args.limit, notes) as server:
                kills.append((mode, kill_queued(server, args.queued, args.limit)))
            deaths[f"{mode}, queued"] = _supervisor_stats(server)
            progress(f"{mode}: kill -9, then new connections")
            with running(binary, workdir, mode, None, notes) as server:
                kills.extend((mode, result) for result in kill_arriving(server, args.arriving))
            deaths[f"{mode}, arriving"] = _supervisor_stats(server)
    text = render(binary, args.rounds, spreads, kills, deaths, notes)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
