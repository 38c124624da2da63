"""The servers under test: how to start each one, stop it, and read its CPU time and memory."""

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Layout:
    """Where things are: the pyhost binary, the benchmark's virtualenv and the apps."""

    pyhost_bin: Path
    venv: Path
    apps: Path
    # The WebSocket echo load client (bench/wsload), when a WebSocket scenario runs.
    wsload_bin: Path | None = None

    @property
    def venv_bin(self) -> Path:
        """The virtualenv's scripts directory."""
        return self.venv / "bin"

    @property
    def static_dir(self) -> Path:
        """The directory of the download scenarios' file, served by every server's mount."""
        return self.apps / "static"


def _granian(
    layout: Layout, interface: str, target: str, port: int, workers: int, ws: bool = False
) -> list[str]:
    """Granian: ``workers`` workers of one runtime thread, uvloop, HTTP/1 only, no access log,
    WebSockets off unless ``ws`` (the app serving the ``ws`` scenario)."""
    return [
        str(layout.venv_bin / "granian"),
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        *([] if ws else ["--no-ws"]),
        "--no-access-log",
        "--log-level",
        "warning",
        target,
    ]


def _pyhost(layout: Layout, config_name: str, port: int, workers: int) -> list[str]:
    """pyhost serving ``apps/pyhost_app/<config_name>``; a supervisor of ``workers`` if > 1."""
    config = layout.apps / "pyhost_app" / config_name
    listen = f"127.0.0.1:{port}"
    command = [str(layout.pyhost_bin), "serve", "--config", str(config), "--listen", listen]
    return command if workers == 1 else [*command, "--workers", str(workers)]


def server_command(name: str, layout: Layout, port: int, workers: int = 1) -> list[str]:
    """The command line that serves the benchmark app with server ``name`` on ``port``.

    With ``workers`` above 1, each server runs that many worker processes: pyhost under its
    supervisor (``--workers``), Granian and uvicorn with their own ``--workers``.
    """
    if name == "pyhost":
        return _pyhost(layout, "pyhost.toml", port, workers)
    if name == "pyhost-no-batch":
        return _pyhost(layout, "pyhost-no-batch.toml", port, workers)
    if name == "granian-rsgi":
        return _granian(layout, "rsgi", "rsgi_app:app", port, workers)
    if name == "granian-rsgi-batch":
        # The same scheduling policy pyhost uses by default, applied from outside (every
        # worker process inherits it).
        granian = _granian(layout, "rsgi", "rsgi_app:app", port, workers)
        return ["chrt", "--batch", "0", *granian]
    if name == "granian-static":
        # Granian's own static files (Rust, before the app): the same RSGI app behind them.
        *granian, target = _granian(layout, "rsgi", "rsgi_app:app", port, workers)
        mount = ["--static-path-route", "/static", "--static-path-mount", str(layout.static_dir)]
        return [*granian, *mount, target]
    if name == "granian-asgi":
        return _granian(layout, "asgi", "asgi_app:app", port, workers)
    if name == "starlette-granian":
        return _granian(layout, "asgi", "starlette_app:app", port, workers, ws=True)
    if name == "starlette-granian-basehttp":
        return _granian(layout, "asgi", "starlette_app:app_basehttp", port, workers)
    if name in ("uvicorn", "starlette-uvicorn"):
        return [
            str(layout.venv_bin / "uvicorn"),
            "asgi_app:app" if name == "uvicorn" else "starlette_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    raise ValueError(f"unknown server {name!r}")


SERVERS: tuple[str, ...] = (
    "pyhost",
    "granian-rsgi",
    "granian-asgi",
    "uvicorn",
    # A framework on a server: Starlette on Granian, its middleware written both ways.
    "starlette-granian",
    "starlette-granian-basehttp",
    # Granian's static file serving, for the static directory download.
    "granian-static",
    # References, not peers: how much of the difference is the scheduling policy alone.
    "pyhost-no-batch",
    "granian-rsgi-batch",
)

# The scenarios of the peers' raw apps (``asgi_app.py``, ``rsgi_app.py``): every one but
# ``mw``, since an app without a framework has no middleware to run.
RAW_SCENARIOS = frozenset({"hello", "users", "echo", "sleep0", "sleep50"})
# The scenarios each server's app implements; a server not listed here implements them all.
# Starlette's app is there for the framework comparisons: ``mw`` and ``hello`` beside it, and
# ``ws`` (a WebSocket echo; its BaseHTTPMiddleware twin has no WebSocket route).
IMPLEMENTS: dict[str, frozenset[str]] = {
    # The RSGI app also sends the download with `response_file` (Rust reads the file).
    "granian-rsgi": RAW_SCENARIOS | {"file"},
    "granian-rsgi-batch": RAW_SCENARIOS | {"file"},
    "granian-static": frozenset({"static"}),
    "granian-asgi": RAW_SCENARIOS,
    "uvicorn": RAW_SCENARIOS,
    "starlette-granian": frozenset({"hello", "mw", "ws"}),
    "starlette-granian-basehttp": frozenset({"hello", "mw"}),
}


def implements(server: str, scenario: str) -> bool:
    """Whether server ``server``'s app implements scenario ``scenario`` (else it is skipped)."""
    supported = IMPLEMENTS.get(server)
    return supported is None or scenario in supported


def select_servers(names: list[str] | None) -> list[str]:
    """The servers named (all when ``names`` is None); ValueError if one is unknown."""
    if names is None:
        return list(SERVERS)
    unknown = [name for name in names if name not in SERVERS]
    if unknown:
        raise ValueError(f"unknown server(s) {unknown}; known: {list(SERVERS)}")
    return names


def server_env(layout: Layout) -> dict[str, str]:
    """The environment of every server: the benchmark's virtualenv first on PATH, activated."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(layout.venv)
    env["PATH"] = f"{layout.venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    return env


class Server:
    """One running server process (and whatever it forks), started in its own session."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log_stem: Path) -> None:
        """Start ``command``; its stdout and stderr go to ``log_stem`` + ``.out`` / ``.err``."""
        self.stdout_path = log_stem.with_suffix(".out")
        self.stderr_path = log_stem.with_suffix(".err")
        self.started = time.perf_counter()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The process id of the server (``taskset`` execs it, so this is the server itself)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the server process is still running."""
        return self.process.poll() is None

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL the whole process group after a timeout); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(timeout=STOP_TIMEOUT)
        self._kill_group()  # workers a supervisor left behind, if any
        return self.process.returncode

    def _kill_group(self) -> None:
        """SIGKILL what is left of the process group this server leads."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stderr_text(self) -> str:
        """Everything the server wrote on stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of stderr and stdout, for error messages."""
        text = self.stderr_text() + self.stdout_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible in /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """``pid`` and all its live descendants (``children``: a map already read, if any)."""
    if children is None:
        children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None if gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, all threads included.

    /proc/<pid>/stat's utime/stime cover every thread of a process, dead ones too, and
    cutime/cstime cover its children that have exited and been reaped, so a window's delta counts
    every thread and child that ran in it.
    """
    ticks = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            # utime, stime, cutime, cstime are fields 14-17 of stat, 11-14 after the name.
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def own_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of process ``pid`` alone (its threads, not its children); None if gone.

    The scheduler's ``se.sum_exec_runtime`` of each thread (``/proc/<pid>/task/*/sched``, in
    ms with ns precision) when the kernel shows it: an idle supervisor uses well under one
    clock tick (10 ms) a second, which ``/proc/<pid>/stat`` could not tell from nothing.
    Otherwise utime + stime from ``stat``, in ticks.
    """
    total, found = 0.0, False
    with contextlib.suppress(OSError):
        for task in (PROC / str(pid) / "task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                for line in (task / "sched").read_text().splitlines():
                    if line.startswith("se.sum_exec_runtime"):
                        total += float(line.split(":", 1)[1]) / 1000
                        found = True
                        break
    if found:
        return total
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return sum(int(value) for value in fields[11:13]) / CLOCK_TICKS


def resident_kib(pid: int) -> int | None:
    """``VmRSS`` of process ``pid`` in KiB, or None if it is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid`` (a supervisor's workers)."""
    return sorted(_children_map().get(pid, []))


def steal_seconds() -> float:
    """CPU seconds, all CPUs together, in which the hypervisor ran something else instead.

    The ``steal`` column of ``/proc/stat``'s ``cpu`` line; it stays at 0 on bare metal.
    """
    with open(PROC / "stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0


def machine_busy_seconds() -> float:
    """CPU seconds, all CPUs together, that processes ran (``/proc/stat``'s ``cpu`` line: user,
    nice and system).

    Interrupts and softirqs are left out: the loopback traffic's softirq work is charged there
    and not to the processes that caused it, so counting it would make the benchmark's own
    traffic look like someone else's load.
    """
    with open(PROC / "stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:4]]
    return sum(fields) / CLOCK_TICKS


def worker_peak_rss_kib(pid: int) -> int:
    """Peak resident memory (VmHWM, KiB) of the process serving the requests in ``pid``'s tree.

    That is the largest process without children: Granian's worker rather than its supervisor
    (which can be the larger of the two: about 30 MiB, against the worker's 29 at 64
    connections), and the server itself where there is only one process.
    """
    children = _children_map()
    peak = 0
    for member in process_tree(pid, children):
        if children.get(member):
            continue
        try:
            status = (PROC / str(member) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


def _stats_fields(text: str) -> dict[str, float]:
    """The ``key=value`` figures of a stats line (after its marker); non-numbers skipped."""
    stats: dict[str, float] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            continue
        try:
            stats[key] = float(value.rstrip(","))
        except ValueError:
            continue
    return stats


def parse_pyhost_stats(stderr: str) -> dict[str, float] | None:
    """The figures of a ``pyhost stats: key=value ...`` line on stderr, or None if absent."""
    marker = "pyhost stats:"
    for line in reversed(stderr.splitlines()):
        index = line.find(marker)
        if index >= 0:
            return _stats_fields(line[index + len(marker) :])
    return None


def parse_worker_stats(stderr: str) -> list[dict[str, float]]:
    """Every ``pyhost stats: worker=N ...`` line of a supervised pyhost, one per worker run."""
    marker = "pyhost stats: worker="
    return [
        _stats_fields(line[line.find(marker) + len("pyhost stats: ") :])
        for line in stderr.splitlines()
        if marker in line
    ]


def parse_supervisor_stats(stderr: str) -> dict[str, float] | None:
    """The figures of the ``pyhost supervisor stats: ...`` line, or None if absent."""
    marker = "pyhost supervisor stats:"
    for line in reversed(stderr.splitlines()):
        index = line.find(marker)
        if index >= 0:
            return _stats_fields(line[index + len(marker) :])
    return None
