"""The host's log under attack: what a client controls cannot forge a record, and a flood of
per-request warnings is held to a bounded rate with a count of what was held back."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest

from tests.harness import Server, ServerFactory, base_env

APP = {
    "app/__init__.py": """
import asyncio

from pyhost import Router

router = Router()
started = 0


@router.get("/started")
async def count(request):
    return {"started": started}


@router.get("/boom/{word}")
async def boom(request):
    raise ValueError("bad word " + request.path_params["word"])


@router.get("/slow")
async def slow(request):
    global started
    started += 1
    await asyncio.sleep(30)
    return "late"
""",
}

CANCELLED = "was cancelled"
SUPPRESSED_RE = re.compile(r"was cancelled \((\d+) similar records suppressed\)")


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(APP) as running:
        yield running


def test_a_newline_in_a_path_parameter_cannot_forge_a_record(server: Server) -> None:
    forged = "2026-01-01T00:00:00.000000Z  INFO pyhost: forged"
    encoded = forged.replace(" ", "%20").replace(":", "%3A")
    with server.client() as http:
        response = http.get(f"/boom/x%0a{encoded}%0d%1b[2J")
    assert response.status_code == 500
    log = server.wait_for_stderr("bad word x")
    lines = log.splitlines()
    assert not any(line.startswith(forged) for line in lines), log
    # The text is there, as a continuation of its record, with the other controls escaped.
    assert any(line == f"    {forged}\\x0d\\x1b[2J" for line in lines), log


def hang_up_on_slow(server: Server) -> None:
    """Send a request to `/slow` and close the connection, so its handler is cancelled."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.005)


def test_a_flood_of_cancelled_handlers_is_logged_at_a_bounded_rate(server: Server) -> None:
    def handlers_started() -> int:
        with server.client() as http:
            return http.get("/started").json()["started"]

    before = server.stderr_text().count(CANCELLED)
    handlers_before = handlers_started()
    started = time.monotonic()
    flood = 300
    for _ in range(flood):
        hang_up_on_slow(server)
    elapsed = time.monotonic() - started
    # Every cancellation is logged within a second or is counted; wait for the last ones.
    time.sleep(1.5)
    hang_up_on_slow(server)
    cancelled = handlers_started() - handlers_before
    assert cancelled > flood // 2, "most requests should have reached their handler"

    def accounted(log: str) -> tuple[int, int]:
        logged = log.count(CANCELLED) - before
        return logged, sum(int(n) for n in SUPPRESSED_RE.findall(log))

    # The last hang-up's record, a second after the flood, reports what was held back.
    deadline = time.monotonic() + 10
    while sum(accounted(server.stderr_text())) < cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    logged, held_back = accounted(server.stderr_text())
    seconds = int(elapsed) + 3
    assert logged <= 20 * seconds, f"{logged} lines in about {seconds} s"
    # What was not written was counted: each cancelled handler is a line or in a count (a
    # request cancelled before its handler's first step is too, so there may be more), and
    # nothing is counted twice.
    assert cancelled <= logged + held_back <= flood + 1, (logged, held_back, cancelled)


LOGGING_APP = {
    "app/__init__.py": """
import logging

from pyhost import Router

router = Router()
log = logging.getLogger("app.detail")


@router.get("/log")
async def write(request):
    log.debug("a debug record %s", "shown")
    log.info("an info record")
    return "ok"
""",
}


@pytest.mark.parametrize(("filter_", "debug_shown"), [("debug", True), (None, False)])
def test_python_logging_follows_the_host_filter(
    server_factory: ServerFactory, filter_: str | None, debug_shown: bool
) -> None:
    env = base_env(PYHOST_LOG=filter_)
    with server_factory.serve(LOGGING_APP, env=env) as server, server.client() as http:
        assert http.get("/log").status_code == 200
        log = server.wait_for_stderr("an info record")
    assert ("a debug record shown" in log) == debug_shown, log
