"""The event loop the host runs handlers on: uvloop when configured or available, else asyncio."""

import pytest

from tests.harness import ServerFactory, make_config

APP = {
    "app/__init__.py": """
import asyncio
import threading

from pyhost import Router

router = Router()


@router.get("/loop")
async def loop_kind(request):
    return {
        "loop": type(asyncio.get_running_loop()).__module__,
        "on_main_thread": threading.current_thread() is threading.main_thread(),
    }
""",
}


@pytest.mark.parametrize(
    ("setting", "expected_module"),
    [
        ("uvloop", "uvloop"),
        ("asyncio", "asyncio.unix_events"),
        ("auto", "uvloop"),
        (None, "asyncio.unix_events"),
    ],
)
def test_event_loop_setting(
    server_factory: ServerFactory, setting: str | None, expected_module: str
) -> None:
    config = make_config(server="" if setting is None else f'event_loop = "{setting}"')
    with server_factory.serve(APP, config) as server, server.client() as http:
        payload = http.get("/loop").json()
    assert payload["loop"] == expected_module
    # Handlers run on the host's loop thread, not on the thread that started Python.
    assert payload["on_main_thread"] is False
