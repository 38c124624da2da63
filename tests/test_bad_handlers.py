"""Handlers that misbehave: BaseExceptions, unserialisable or wrong return values, stray tasks,
floods of output. Each gets a 500 (or its normal answer) and the host keeps serving."""

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, ServerFactory, make_config, wait_until

BAD_APP = {
    "app.py": """
        import asyncio
        import sys

        from pyhost import Router

        router = Router()
        background = {}
        _tasks = set()


        class Custom(BaseException):
            pass


        class UnprintableError(Exception):
            def __str__(self):
                raise RuntimeError("__str__ exploded")

            def __repr__(self):
                raise RuntimeError("__repr__ exploded")


        def throw(kind):
            if kind == "system-exit":
                raise SystemExit(3)
            if kind == "system-exit-none":
                sys.exit()
            if kind == "keyboard-interrupt":
                raise KeyboardInterrupt
            if kind == "generator-exit":
                raise GeneratorExit
            if kind == "custom-base-exception":
                raise Custom("custom")
            if kind == "unprintable":
                raise UnprintableError
            if kind == "recursion":
                def recurse(n):
                    return recurse(n + 1)
                return recurse(0)
            if kind == "memory-error":
                raise MemoryError
            if kind == "exception-group":
                raise ExceptionGroup("group", [ValueError("a"), TypeError("b")])
            if kind == "cancelled-error":
                raise asyncio.CancelledError
            return {"raised": False}


        @router.get("/async-raise/{kind}")
        async def async_raise(request):
            return throw(request.path_params["kind"])


        @router.get("/sync-raise/{kind}")
        def sync_raise(request):
            return throw(request.path_params["kind"])


        @router.get("/raise-after-await/{kind}")
        async def raise_after_await(request):
            await asyncio.sleep(0.01)
            return throw(request.path_params["kind"])


        @router.get("/return/self-dict")
        async def self_dict(request):
            value = {"a": 1}
            value["self"] = value
            return value


        @router.get("/return/self-list")
        async def self_list(request):
            value = [1]
            value.append(value)
            return value


        @router.get("/return/indirect-cycle")
        async def indirect_cycle(request):
            inner = []
            outer = {"inner": inner}
            inner.append(outer)
            return outer


        @router.get("/return/sync-self-dict")
        def sync_self_dict(request):
            value = {}
            value["self"] = value
            return value


        @router.get("/return/deep-list")
        async def deep_list(request):
            value = []
            for _ in range(100_000):
                value = [value]
            return value


        async def helper():
            return {"awaited": True}


        @router.get("/return/coroutine")
        async def return_coroutine(request):
            return helper()


        @router.get("/return/sync-coroutine")
        def sync_return_coroutine(request):
            return helper()


        @router.get("/return/generator")
        async def return_generator(request):
            return (x for x in range(3))


        @router.get("/return/object")
        async def return_object(request):
            return object()


        @router.get("/return/bad-status")
        async def return_bad_status(request):
            return {"a": 1}, "two hundred"


        @router.get("/return/nan")
        async def return_nan(request):
            return {"value": float("nan")}


        @router.get("/return/non-str-key")
        async def return_object_key(request):
            return {object(): 1}


        @router.get("/spawn/{key}")
        async def spawn(request):
            key = request.path_params["key"]

            async def later():
                await asyncio.sleep(0.3)
                background[key] = "done"

            task = asyncio.create_task(later())
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
            return {"spawned": key}


        @router.get("/spawn-failing")
        async def spawn_failing(request):
            async def fail():
                await asyncio.sleep(0.05)
                raise ValueError("background failure")

            task = asyncio.create_task(fail())
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)
            return {"spawned": True}


        @router.get("/background/{key}")
        async def get_background(request):
            return {"state": background.get(request.path_params["key"])}


        @router.get("/print/{stream}")
        async def print_lots(request):
            target = sys.stdout if request.path_params["stream"] == "stdout" else sys.stderr
            for index in range(10_000):
                print(f"line {index} of a handler that talks too much", file=target)
            return {"printed": 10_000}


        @router.get("/sync-print/{stream}")
        def sync_print_lots(request):
            target = sys.stdout if request.path_params["stream"] == "stdout" else sys.stderr
            for index in range(10_000):
                print(f"line {index} from a thread", file=target)
            return {"printed": 10_000}


        @router.get("/print-huge-line")
        async def print_huge_line(request):
            sys.stdout.write("x" * 1_000_000 + "\\n")
            sys.stderr.write("y" * 1_000_000 + "\\n")
            return {"printed": 2_000_000}


        @router.get("/print-binary-junk")
        async def print_binary_junk(request):
            sys.stdout.write("\\udcff\\x00\\x1b[31m\\r")
            print("\\u2603 snowman", file=sys.stderr)
            return {"printed": True}


        @router.get("/health")
        async def health(request):
            return {"ok": True}
    """,
}

RAISING_KINDS = [
    "system-exit",
    "system-exit-none",
    "keyboard-interrupt",
    "generator-exit",
    "custom-base-exception",
    "unprintable",
    "recursion",
    "memory-error",
    "exception-group",
]


@pytest.fixture(scope="module")
def app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(BAD_APP, make_config(server="sync_threads = 2")) as server:
        yield server


@pytest.fixture(scope="module")
def http(app: Server) -> Iterator[httpx.Client]:
    with app.client(timeout=30.0) as client:
        yield client


def assert_500(response: httpx.Response) -> str:
    assert response.status_code == 500, response.text
    payload = response.json()
    request_id = payload.get("request_id")
    assert isinstance(request_id, str)
    assert request_id
    assert payload == {"detail": "Internal Server Error", "request_id": request_id}
    assert response.headers["x-request-id"] == request_id
    return request_id


def assert_healthy(app: Server) -> None:
    assert app.is_running(), app.stderr_text()
    # A fresh connection, in case the failing request's connection was closed.
    with app.client() as client:
        response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("kind", RAISING_KINDS)
@pytest.mark.parametrize("route", ["async-raise", "sync-raise", "raise-after-await"])
def test_raising_handler_gives_500_and_the_host_keeps_serving(
    app: Server, http: httpx.Client, route: str, kind: str
) -> None:
    request_id = assert_500(http.get(f"/{route}/{kind}"))
    handler = {
        "async-raise": "app.async_raise",
        "sync-raise": "app.sync_raise",
        "raise-after-await": "app.raise_after_await",
    }[route]
    log = app.wait_for_stderr(request_id, handler)
    assert request_id in log
    assert any(request_id in line and " ERROR " in line for line in log.splitlines()), log
    assert_healthy(app)


def test_handler_raising_cancelled_error_itself(app: Server, http: httpx.Client) -> None:
    # Neither a timeout nor a disconnect: the host answers it as a failed (500) or cancelled
    # (503) request, with a JSON detail, and carries on.
    for route in ("async-raise", "raise-after-await"):
        response = http.get(f"/{route}/cancelled-error")
        assert response.status_code in (500, 503), response.text
        assert "detail" in response.json()
    assert_healthy(app)


def test_many_base_exceptions_in_a_row(app: Server, http: httpx.Client) -> None:
    for _ in range(10):
        for kind in ("system-exit", "keyboard-interrupt", "generator-exit"):
            assert http.get(f"/async-raise/{kind}").status_code == 500
            assert http.get(f"/sync-raise/{kind}").status_code == 500
    assert_healthy(app)


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        ("/return/self-dict", "app.self_dict"),
        ("/return/self-list", "app.self_list"),
        ("/return/indirect-cycle", "app.indirect_cycle"),
        ("/return/sync-self-dict", "app.sync_self_dict"),
    ],
)
def test_self_referencing_return_value_is_a_500_naming_the_handler(
    app: Server, http: httpx.Client, path: str, handler: str
) -> None:
    request_id = assert_500(http.get(path))
    log = app.wait_for_stderr(request_id, handler)
    lines = [line for line in log.splitlines() if request_id in line]
    assert any(handler in line for line in lines), log
    assert_healthy(app)


def test_very_deep_return_value_is_a_500_not_a_crash(app: Server, http: httpx.Client) -> None:
    response = http.get("/return/deep-list")
    assert response.status_code in (200, 500), response.text[:300]
    if response.status_code == 500:
        assert_500(response)
    assert_healthy(app)


@pytest.mark.parametrize(
    ("path", "handler"),
    [
        ("/return/coroutine", "app.return_coroutine"),
        ("/return/sync-coroutine", "app.sync_return_coroutine"),
        ("/return/generator", "app.return_generator"),
        ("/return/object", "app.return_object"),
        ("/return/bad-status", "app.return_bad_status"),
        ("/return/non-str-key", "app.return_object_key"),
    ],
)
def test_unusable_return_value_is_a_500_naming_the_handler(
    app: Server, http: httpx.Client, path: str, handler: str
) -> None:
    request_id = assert_500(http.get(path))
    log = app.wait_for_stderr(request_id, handler)
    assert any(request_id in line and handler in line for line in log.splitlines()), log
    assert_healthy(app)


def test_nan_in_a_return_value_is_never_invalid_json(app: Server, http: httpx.Client) -> None:
    # JSON has no NaN: the host either refuses the value (500) or encodes it as valid JSON.
    response = http.get("/return/nan")
    assert response.status_code in (200, 500), response.text
    response.json()  # valid JSON either way (Python's json accepts NaN, so check the text too)
    assert "NaN" not in response.text, response.text
    assert_healthy(app)


def test_task_spawned_by_a_handler_outlives_the_request(app: Server, http: httpx.Client) -> None:
    key = uuid.uuid4().hex
    started = time.monotonic()
    response = http.get(f"/spawn/{key}")
    assert response.status_code == 200
    assert response.json() == {"spawned": key}
    # The handler did not wait for its background task (which sleeps 0.3 s)...
    assert http.get(f"/background/{key}").json() == {"state": None} or (
        time.monotonic() - started >= 0.3
    )
    # ...which still runs to its end afterwards.
    assert wait_until(
        lambda: http.get(f"/background/{key}").json() == {"state": "done"}, timeout=5.0
    )


def test_failing_background_task_does_not_hurt_the_host(app: Server, http: httpx.Client) -> None:
    for _ in range(5):
        response = http.get("/spawn-failing")
        assert response.status_code == 200
        assert response.json() == {"spawned": True}
    time.sleep(0.3)
    assert_healthy(app)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
@pytest.mark.parametrize("route", ["print", "sync-print"])
def test_handler_printing_10000_lines_still_answers(
    app: Server, http: httpx.Client, route: str, stream: str
) -> None:
    response = http.get(f"/{route}/{stream}")
    assert response.status_code == 200, response.text
    assert response.json() == {"printed": 10_000}
    assert_healthy(app)


def test_handler_printing_a_megabyte_line_still_answers(app: Server, http: httpx.Client) -> None:
    response = http.get("/print-huge-line")
    assert response.status_code == 200
    assert response.json() == {"printed": 2_000_000}
    assert_healthy(app)


def test_handler_printing_junk_still_answers(app: Server, http: httpx.Client) -> None:
    response = http.get("/print-binary-junk")
    assert response.status_code in (200, 500)
    assert_healthy(app)


def test_concurrent_printing_and_failing_handlers(app: Server) -> None:
    async def run() -> list[int]:
        async with app.async_client(timeout=60.0) as client:
            paths = ["/print/stdout", "/async-raise/system-exit", "/sync-print/stderr"] * 4
            paths += ["/return/self-dict", "/return/coroutine", "/health"] * 4
            responses = await asyncio.gather(*(client.get(path) for path in paths))
            return [response.status_code for response in responses]

    statuses = asyncio.run(run())
    assert statuses == ([200, 500, 200] * 4) + ([500, 500, 200] * 4)
    assert_healthy(app)
