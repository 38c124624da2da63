"""The watchdog behind handler deadlines: it interrupts only with the host's own exception, and
it sleeps while there is nothing to watch instead of polling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Server, ServerFactory, make_config

APP = {
    "app/__init__.py": """
from pyhost import Router

router = Router()


class HandlerTimeout(Exception):
    '''A handler's own class that happens to share the host's name.'''


@router.get("/own-timeout")
async def own_timeout(request):
    raise HandlerTimeout("not the host's")


@router.get("/spin", timeout=0.3)
async def spin(request):
    while True:
        pass


@router.get("/ok")
async def ok(request):
    return "ok"
""",
}


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(APP, make_config(server="request_timeout = 5")) as running:
        yield running


def test_a_handler_class_named_like_the_interruption_is_a_500(server: Server) -> None:
    with server.client() as http:
        assert http.get("/own-timeout").status_code == 500
        # The host's own interruption is still a 504.
        assert http.get("/spin").status_code == 504


def watchdog_wakeups(pid: int) -> int:
    """Context switches of the watchdog thread so far: each wake-up is at least one."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "pyhost-watchdog":
            return sum(
                int(line.split()[1])
                for line in (task / "status").read_text().splitlines()
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            )
    raise AssertionError("no pyhost-watchdog thread")


def test_the_idle_watchdog_does_not_wake_up(server: Server) -> None:
    with server.client() as http:
        for _ in range(20):
            assert http.get("/ok").status_code == 200
    time.sleep(0.2)
    before = watchdog_wakeups(server.proc.pid)
    time.sleep(2.0)
    # Polling every 5 ms, as it once did, is 400 wake-ups in these two seconds.
    assert watchdog_wakeups(server.proc.pid) - before <= 2
