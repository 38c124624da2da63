"""The server of the request-stream and form tests: `tests/apps/uploads` under the real
binary, with a temporary directory of its own (`$TMPDIR`) so a test can see every file it
spools, and helpers to read its memory and to send bodies over raw sockets."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.harness import REPO_ROOT, Server, base_env, running_server

APPS = REPO_ROOT / "tests" / "apps"


@contextmanager
def uploads_server(
    binary: Path, tmp: pytest.TempPathFactory, server: str = ""
) -> Iterator[tuple[Server, Path]]:
    """The uploads app served with the extra `[server]` lines `server`; also its spool dir."""
    root = tmp.mktemp("uploads")
    spool = root / "spool"
    spool.mkdir()
    config = root / "pyhost.toml"
    config.write_text(
        "[server]\nrequest_timeout = 60\nmax_in_flight_per_client = 0\n"
        + textwrap.dedent(server).strip()
        + f'\n\n[app]\nmodule = "uploads"\npaths = ["{APPS}"]\n',
        encoding="utf-8",
    )
    env = base_env(TMPDIR=str(spool), MIMALLOC_PURGE_DELAY="0")
    with running_server(binary, config, env=env, cwd=root) as running:
        yield running, spool


def spooled(spool: Path) -> list[str]:
    """The upload files in the server's temporary directory."""
    return sorted(path.name for path in spool.iterdir() if path.name.startswith("pyhost-upload"))


def connect(server: Server, *, sndbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """A raw connection to the server."""
    parts = urlsplit(server.url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.settimeout(timeout)
    sock.connect((parts.hostname, parts.port))
    return sock


def head(server: Server, method: str, target: str, headers: dict[str, str]) -> bytes:
    """A request head, with `Host`."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {urlsplit(server.url).netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
