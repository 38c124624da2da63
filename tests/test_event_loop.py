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
    task = asyncio.current_task()
    return {
        "loop": type(asyncio.get_running_loop()).__module__,
        "on_main_thread": threading.current_thread() is threading.main_thread(),
        "task_type": type(task).__name__,
        "task_name": task.get_name(),
    }


class MarkedTask(asyncio.Task):
    pass


def marked_task_factory(loop, coro, **kwargs):
    return MarkedTask(coro, loop=loop, **kwargs)


@router.post("/task-factory")
async def set_task_factory(request):
    asyncio.get_running_loop().set_task_factory(marked_task_factory)
""",
}


@pytest.mark.parametrize(
    ("setting", "expected_module"),
    [
        ("uvloop", "uvloop"),
        ("asyncio", "asyncio.unix_events"),
        ("auto", "uvloop"),
        (None, "uvloop"),  # the default, "auto", with uvloop installed
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
    # Each handler's task is named after it.
    assert payload["task_name"] == "app.loop_kind"


@pytest.mark.parametrize("setting", ["asyncio", "uvloop"])
def test_a_task_factory_set_by_a_handler_makes_later_tasks(
    server_factory: ServerFactory, setting: str
) -> None:
    config = make_config(server=f'event_loop = "{setting}"')
    with server_factory.serve(APP, config) as server, server.client() as http:
        assert http.get("/loop").json()["task_type"] != "MarkedTask"
        assert http.post("/task-factory").status_code == 204
        payload = http.get("/loop").json()
    assert payload["task_type"] == "MarkedTask"
    assert payload["task_name"] == "app.loop_kind"
