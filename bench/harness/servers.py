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

    @property
    def venv_bin(self) -> Path:
        """The virtualenv's scripts directory."""
        return self.venv / "bin"


def _granian(layout: Layout, interface: str, target: str, port: int) -> list[str]:
    """Granian: one worker, one runtime thread, uvloop, HTTP/1 only, no access log."""
    return [
        str(layout.venv_bin / "granian"),
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--no-access-log",
        "--log-level",
        "warning",
        target,
    ]


def _pyhost(layout: Layout, config_name: str, port: int) -> list[str]:
    """pyhost serving ``apps/pyhost_app/<config_name>``."""
    config = layout.apps / "pyhost_app" / config_name
    listen = f"127.0.0.1:{port}"
    return [str(layout.pyhost_bin), "serve", "--config", str(config), "--listen", listen]


def server_command(name: str, layout: Layout, port: int) -> list[str]:
    """The command line that serves the benchmark app with server ``name`` on ``port``."""
    if name == "pyhost":
        return _pyhost(layout, "pyhost.toml", port)
    if name == "pyhost-no-batch":
        return _pyhost(layout, "pyhost-no-batch.toml", port)
    if name == "granian-rsgi":
        return _granian(layout, "rsgi", "rsgi_app:app", port)
    if name == "granian-rsgi-batch":
        # The same scheduling policy pyhost uses by default, applied from outside.
        return ["chrt", "--batch", "0", *_granian(layout, "rsgi", "rsgi_app:app", port)]
    if name == "granian-asgi":
        return _granian(layout, "asgi", "asgi_app:app", port)
    if name == "uvicorn":
        return [
            str(layout.venv_bin / "uvicorn"),
            "asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
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
    # References, not peers: how much of the difference is the scheduling policy alone.
    "pyhost-no-batch",
    "granian-rsgi-batch",
)


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


def steal_seconds() -> float:
    """CPU seconds, all CPUs together, in which the hypervisor ran something else instead.

    The ``steal`` column of ``/proc/stat``'s ``cpu`` line; it stays at 0 on bare metal.
    """
    with open(PROC / "stat") as stat:
        fields = stat.readline().split()
    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0


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


def parse_pyhost_stats(stderr: str) -> dict[str, float] | None:
    """The figures of a ``pyhost stats: key=value ...`` line on stderr, or None if absent."""
    marker = "pyhost stats:"
    for line in reversed(stderr.splitlines()):
        index = line.find(marker)
        if index < 0:
            continue
        stats: dict[str, float] = {}
        for token in line[index + len(marker) :].split():
            key, sep, value = token.partition("=")
            if not sep:
                continue
            try:
                stats[key] = float(value.rstrip(","))
            except ValueError:
                continue
        return stats
    return None
