"""Talking to the servers: readiness polling, correctness checks, and wrk runs."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .scenarios import Scenario

HOST = "127.0.0.1"
WRK_TIMEOUT = "5s"  # a request slower than this counts as a wrk timeout error


def probe_hello(port: int) -> bool:
    """One raw HTTP/1.1 ``GET /hello``; True if the server answered 200."""
    request = f"GET /hello HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(request.encode())
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def wait_for_hello(port: int, timeout: float, alive: Callable[[], bool]) -> float | None:
    """Poll ``GET /hello`` in a tight loop until it answers 200; perf_counter() then, or None.

    Gives up after ``timeout`` seconds, or as soon as ``alive()`` says the server has died.
    """
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if probe_hello(port):
            return time.perf_counter()
        if not alive():
            return None
        time.sleep(0.0005)
    return None


def check_scenario(
    port: int, scenario: Scenario, bench_file: Path | None = None, wsload: Path | None = None
) -> str | None:
    """Request the scenario once with urllib; None if status and JSON body are right, else why.

    A download's body must be the bytes of ``bench_file``. A WebSocket scenario is checked by
    ``wsload --check`` instead: a few messages (up to 70 KB, non-ASCII text among them) must
    come back unchanged.
    """
    if scenario.protocol == "websocket":
        return _check_websocket(port, scenario, wsload)
    url = f"http://{HOST}:{port}{scenario.path}"
    headers = {"Content-Type": "application/json"} if scenario.body is not None else {}
    request = urllib.request.Request(
        url, data=scenario.body, method=scenario.method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, got = error.code, error.read(), error.headers
    except OSError as error:
        return f"{scenario.method} {scenario.path}: no answer ({error})"
    if status != 200:
        return f"{scenario.method} {scenario.path}: status {status}, body {raw[:200]!r}"
    if scenario.file_size:
        return _check_file(scenario, raw, bench_file)
    try:
        body = json.loads(raw)
    except ValueError:
        return f"{scenario.method} {scenario.path}: body is not JSON: {raw[:200]!r}"
    if body != scenario.expected:
        return f"{scenario.method} {scenario.path}: body {body!r}, expected {scenario.expected!r}"
    for name, value in scenario.headers:
        if got.get_all(name) != [value]:
            return (
                f"{scenario.method} {scenario.path}: header {name} is {got.get_all(name)!r}, "
                f"expected [{value!r}]"
            )
    return None


def _check_file(scenario: Scenario, raw: bytes, bench_file: Path | None) -> str | None:
    where = f"{scenario.method} {scenario.path}"
    if len(raw) != scenario.file_size:
        return f"{where}: {len(raw)} bytes, expected {scenario.file_size}"
    if bench_file is None or raw != bench_file.read_bytes():
        return f"{where}: the body is not the file's content"
    return None


def _check_websocket(port: int, scenario: Scenario, wsload: Path | None) -> str | None:
    if wsload is None:
        return f"{scenario.path}: no WebSocket load client (bench/wsload) was built"
    url = f"ws://{HOST}:{port}{scenario.path}"
    try:
        done = subprocess.run(
            [str(wsload), "--url", url, "--check"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"WebSocket {scenario.path}: the echo check did not finish within 30 s"
    if done.returncode != 0:
        return f"WebSocket {scenario.path}: {done.stderr.strip()[-500:]}"
    return None


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported (latencies in microseconds)."""

    requests: int
    duration_s: float
    p50_us: float
    p99_us: float
    socket_errors: int
    status_errors: int

    @property
    def rps(self) -> float:
        """Requests per second over the run."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses."""
        return self.socket_errors + self.status_errors


def run_wrk(
    prefix: list[str],
    port: int,
    scenario: Scenario,
    script: Path,
    *,
    duration: int,
    connections: int,
    threads: int,
) -> WrkResult:
    """Run wrk against the scenario for ``duration`` whole seconds; RuntimeError if it fails."""
    command = [
        *prefix,
        "wrk",
        f"--threads={min(threads, connections)}",
        f"--connections={connections}",
        f"--duration={duration}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        f"--script={script}",
        f"http://{HOST}:{port}{scenario.path}",
    ]
    return _run_load("wrk", command, duration)


def _run_load(name: str, command: list[str], duration: int) -> WrkResult:
    """Run a load client that ends by printing a ``BENCH_RESULT`` JSON line (wrk with
    report.lua, or wsload); RuntimeError if it does not."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"{name} did not finish within {error.timeout:.0f} s") from error
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return _parse_result(json.loads(line.removeprefix("BENCH_RESULT ")))
    output = done.stdout[-2000:] + done.stderr[-2000:]
    raise RuntimeError(f"{name} exited {done.returncode} without a result:\n{output}")


def _parse_result(data: dict[str, float]) -> WrkResult:
    """Turn the JSON line printed by report.lua's ``done()`` into a WrkResult."""
    socket_errors = sum(int(data[key]) for key in ("connect", "read", "write", "timeout"))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        p50_us=data["p50_us"],
        p99_us=data["p99_us"],
        socket_errors=socket_errors,
        status_errors=int(data["status"]),
    )


def run_wsload(
    prefix: list[str],
    port: int,
    scenario: Scenario,
    wsload: Path,
    *,
    duration: int,
    connections: int,
    size: int,
) -> WrkResult:
    """Run the WebSocket echo load for ``duration`` seconds; RuntimeError if it fails.

    Its result line has wrk's fields: messages echoed count as requests, an echo that differs
    from the message sent as a status error.
    """
    command = [
        *prefix,
        str(wsload),
        "--url",
        f"ws://{HOST}:{port}{scenario.path}",
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--size",
        str(size),
    ]
    return _run_load("wsload", command, duration)
