"""Helpers for the black-box tests: run the real `pyhost` binary and talk HTTP to it.

Everything here drives the binary from the outside: it writes configs and handler packages to
temporary directories, starts `pyhost serve` on a free port, waits for its `listening on` line
and stops it with SIGTERM. `raw_request` speaks HTTP/1.1 over a plain socket for the cases where
an HTTP client would normalise the request or hide what went over the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO_ROOT / "examples" / "hello"
EXAMPLE_CONFIG = EXAMPLE_DIR / "pyhost.toml"

STARTUP_TIMEOUT = 30.0
"""Seconds `pyhost serve` gets to print its `listening on` line (a debug build is slow)."""
STOP_TIMEOUT = 10.0
"""Seconds a server gets to exit after SIGTERM before it is killed."""
CLI_TIMEOUT = 30.0
"""Seconds a `pyhost check` / `routes` / failing `serve` run gets to finish."""

LISTENING_RE = re.compile(r"^listening on (http://(\S+):(\d+))$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

DEFAULT_CONFIG = """\
[app]
module = "app"
"""


def binary_path() -> Path:
    """The binary under test: `$PYHOST_BIN`, else `<repo>/target/debug/pyhost`."""
    configured = os.environ.get("PYHOST_BIN")
    return Path(configured) if configured else REPO_ROOT / "target" / "debug" / "pyhost"


def base_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a pyhost process: this venv as `VIRTUAL_ENV`, no colours.

    An override of `None` removes the variable.
    """
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    env["VIRTUAL_ENV"] = sys.prefix
    env["NO_COLOR"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


def make_config(*, module: str = "app", server: str = "", app: str = "") -> str:
    """A config file text with the given extra `[server]` and `[app]` lines."""
    return (
        f"[server]\n{textwrap.dedent(server).strip()}\n\n"
        f'[app]\nmodule = "{module}"\n{textwrap.dedent(app).strip()}\n'
    )


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    """Write `files` (relative path -> source, dedented) under `root`."""
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


class _LinePump(threading.Thread):
    """Reads a child's pipe line by line so it never fills, keeping every line."""

    def __init__(self, stream: IO[str], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._stream = stream
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.eof = False

    def run(self) -> None:
        try:
            for line in self._stream:
                with self._cond:
                    self._lines.append(line)
                    self._cond.notify_all()
        except ValueError:  # the pipe was closed under us
            pass
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return strip_ansi("".join(self._lines))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """Wait until `predicate(all text so far)` holds; False on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(strip_ansi("".join(self._lines))):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    return False
                self._cond.wait(remaining)


@dataclass
class Server:
    """A running `pyhost serve` process."""

    url: str
    proc: subprocess.Popen[str]
    config: Path
    _stdout: _LinePump
    _stderr: _LinePump

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def stdout_text(self) -> str:
        return self._stdout.text()

    def stderr_text(self) -> str:
        """Everything the server logged so far (ANSI colour codes removed)."""
        return self._stderr.text()

    def wait_for_stderr(self, *needles: str, timeout: float = 5.0) -> str:
        """Wait until the log contains every one of `needles` (logging may lag the response).

        Returns the log either way, so the caller's assertion shows what was there.
        """
        self._stderr.wait_for(lambda text: all(n in text for n in needles), timeout)
        return self.stderr_text()

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.url, trust_env=False, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 10.0)
        return httpx.AsyncClient(base_url=self.url, trust_env=False, **kwargs)

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the server and wait for it; kill it if it outlives `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stdout.join(2)
        self._stderr.join(2)
        return self.proc.returncode


@contextmanager
def running_server(
    binary: Path,
    config: Path,
    *,
    listen: str | None = "127.0.0.1:0",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[Server]:
    """Start `pyhost serve --config config [--listen listen] [extra_args...]`; stop it on exit.

    Fails the test with the captured stderr if the process exits, or prints nothing, before the
    `listening on http://HOST:PORT` line. `preexec_fn` runs in the child before the binary
    (to set resource limits, say).
    """
    args = [str(binary), "serve", "--config", str(config)]
    if listen is not None:
        args += ["--listen", listen]
    args += list(extra_args)
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=dict(env) if env is not None else base_env(),
        cwd=cwd if cwd is not None else config.parent,
        preexec_fn=preexec_fn,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    stdout = _LinePump(proc.stdout, "pyhost-stdout")
    stderr = _LinePump(proc.stderr, "pyhost-stderr")
    stdout.start()
    stderr.start()

    def listening_line(text: str) -> bool:
        return any(LISTENING_RE.match(line) for line in text.splitlines())

    found = stdout.wait_for(listening_line, STARTUP_TIMEOUT)
    if not found:
        if proc.poll() is None:
            problem = f"printed no `listening on` line within {STARTUP_TIMEOUT:.0f}s"
            proc.kill()
        else:
            problem = f"exited with status {proc.returncode} before listening"
        proc.wait()
        stdout.join(2)
        stderr.join(2)
        pytest.fail(
            f"`{' '.join(args)}` {problem}.\n"
            f"--- stdout ---\n{stdout.text()}\n--- stderr ---\n{stderr.text()}",
            pytrace=False,
        )
    match = next(m for m in map(LISTENING_RE.match, stdout.text().splitlines()) if m is not None)
    server = Server(url=match.group(1), proc=proc, config=config, _stdout=stdout, _stderr=stderr)
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """stdout and stderr together, for messages whose stream the contract leaves open."""
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"`{' '.join(self.args)}` exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def run_cli(
    binary: Path,
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = CLI_TIMEOUT,
    preexec_fn: Callable[[], None] | None = None,
) -> CliResult:
    """Run the binary to completion and capture its exit status and output."""
    argv = (str(binary), *args)
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=dict(env) if env is not None else base_env(),
            cwd=cwd,
            timeout=timeout,
            check=False,
            preexec_fn=preexec_fn,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s: {exc}")
    return CliResult(argv, done.returncode, strip_ansi(done.stdout), strip_ansi(done.stderr))


class ServerFactory:
    """Writes handler packages to fresh temporary directories and runs the binary on them.

    Servers run with a working directory of their own (empty), so a host that resolved
    relative config paths against the working directory instead of the config file would fail.
    """

    def __init__(self, binary: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.binary = binary
        self._tmp = tmp_path_factory
        self.cwd = tmp_path_factory.mktemp("cwd")

    def write_app(self, files: Mapping[str, str], config: str = DEFAULT_CONFIG) -> Path:
        """Write a handler package and `pyhost.toml`; return the config's path."""
        root = self._tmp.mktemp("app")
        write_tree(root, files)
        config_path = root / "pyhost.toml"
        config_path.write_text(textwrap.dedent(config), encoding="utf-8")
        return config_path

    @contextmanager
    def serve(
        self,
        files: Mapping[str, str],
        config: str = DEFAULT_CONFIG,
        *,
        listen: str | None = "127.0.0.1:0",
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Iterator[Server]:
        """Write the app and run `pyhost serve` on it for the duration of the block."""
        config_path = self.write_app(files, config)
        with running_server(
            self.binary, config_path, listen=listen, env=env, cwd=self.cwd, preexec_fn=preexec_fn
        ) as s:
            yield s

    @contextmanager
    def serve_config(self, config_path: Path) -> Iterator[Server]:
        with running_server(self.binary, config_path, cwd=self.cwd) as server:
            yield server

    def run(
        self,
        *args: str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = CLI_TIMEOUT,
        preexec_fn: Callable[[], None] | None = None,
    ) -> CliResult:
        """Run `pyhost *args` (from the neutral working directory unless `cwd` is given)."""
        return run_cli(
            self.binary,
            *args,
            cwd=cwd if cwd is not None else self.cwd,
            env=env,
            timeout=timeout,
            preexec_fn=preexec_fn,
        )


# --- raw HTTP/1.1 -------------------------------------------------------------------------


@dataclass(frozen=True)
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    """The body, de-chunked when the response is chunked."""
    after_headers: bytes
    """Every byte the server sent after the header block, as sent."""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_list(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def json(self) -> Any:
        return json.loads(self.body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def parse_response(raw: bytes) -> RawResponse:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        raise AssertionError(f"incomplete HTTP response: {raw[:500]!r}")
    lines = head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    response = RawResponse(int(status), " ".join(reason), headers, rest, rest)
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        body = _dechunk(rest)
    elif (length := response.header("content-length")) is not None:
        body = rest[: int(length)]
    else:
        body = rest
    return RawResponse(response.status, response.reason, headers, body, rest)


def raw_exchange(
    url: str,
    data: bytes | Sequence[bytes],
    *,
    timeout: float = 10.0,
    pause: float = 0.0,
    on_connect: Callable[[socket.socket], None] | None = None,
) -> bytes:
    """Send `data` (several pieces: `pause` seconds apart) and read until the server closes.

    The request should carry `Connection: close`. A reset after the response was sent (servers
    may reset a connection whose request body they did not read) ends the read quietly.
    """
    parts = urlsplit(url)
    pieces = [data] if isinstance(data, bytes) else list(data)
    chunks: list[bytes] = []
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        if on_connect is not None:
            on_connect(sock)
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    time.sleep(pause)
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed; read what it sent
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(
                    f"the server neither answered nor closed within {timeout}s; "
                    f"received so far: {b''.join(chunks)[:500]!r}"
                ) from None
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def raw_request(
    url: str,
    method: str,
    target: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    timeout: float = 10.0,
) -> RawResponse:
    """Send one request exactly as written (plus Host, Connection: close and Content-Length)."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body and not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return parse_response(raw_exchange(url, request, timeout=timeout))


async def _fetch(host: str, port: int, target: str) -> RawResponse:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        return parse_response(await reader.read())
    finally:
        writer.close()


def fetch_concurrently(
    url: str, targets: Sequence[str], timeout: float = 30.0
) -> list[RawResponse]:
    """GET every target at once, each on its own connection, and return the responses in order.

    Plain asyncio streams rather than an HTTP client library: with hundreds of connections a
    client's own overhead would dominate the timings the concurrency tests measure.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80

    async def fetch_all() -> list[RawResponse]:
        requests = (_fetch(host, port, target) for target in targets)
        return list(await asyncio.wait_for(asyncio.gather(*requests), timeout))

    return asyncio.run(fetch_all())


def chunked(*pieces: bytes) -> bytes:
    """Encode `pieces` as an HTTP/1.1 chunked body, terminator included."""
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece)
    return encoded + b"0\r\n\r\n"


def error_locs(payload: Any) -> list[tuple[str, ...]]:
    """The sorted `loc`s of a 422 body, each as a tuple of strings (indices stringified)."""
    return sorted(tuple(str(part) for part in entry["loc"]) for entry in payload["detail"])


def assert_validation_error(payload: Any) -> list[dict[str, Any]]:
    """Check the shape of a 422 body and return its entries."""
    assert isinstance(payload, dict), payload
    assert "detail" in payload, payload
    entries = payload["detail"]
    assert isinstance(entries, list), payload
    assert entries, payload
    for entry in entries:
        assert {"loc", "msg", "type"} <= set(entry), entry
        assert isinstance(entry["loc"], list), entry
        assert entry["loc"], entry
        assert entry["loc"][0] in ("path", "query", "header", "cookie", "body"), entry
        assert isinstance(entry["msg"], str), entry
        assert entry["msg"], entry
        assert isinstance(entry["type"], str), entry
        assert entry["type"], entry
    return entries


def rss(server: Server) -> int:
    """The server process's resident memory, in bytes."""
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a server's resident memory every 20 ms while the block runs: ``baseline`` is
    what it was on entry, ``peak`` the most seen."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.baseline = self.peak = rss(server)
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, rss(self.server))
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._sampler.join()
        self.peak = max(self.peak, rss(self.server))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
