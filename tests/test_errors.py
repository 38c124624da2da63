"""HTTPError, unhandled exceptions (500, request id, log, debug mode), SystemExit in handlers."""

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, ServerFactory, make_config

# --- HTTPError (example app) --------------------------------------------------------------


def test_http_error_default_detail(client: httpx.Client) -> None:
    response = client.get("/errors/not-found")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (429, "Too Many Requests"),
        (503, "Service Unavailable"),
    ],
)
def test_http_error_detail_defaults_to_the_reason_phrase(
    client: httpx.Client, status: int, phrase: str
) -> None:
    response = client.get(f"/errors/status/{status}")
    assert response.status_code == status
    assert response.json() == {"detail": phrase}


def test_http_error_with_detail_and_headers(client: httpx.Client) -> None:
    response = client.get("/errors/teapot")
    assert response.status_code == 418
    assert response.json() == {"detail": "I'm a teapot, not a coffee machine"}
    assert response.headers["x-brew"] == "tea"
    assert response.headers.get("x-request-id")


def test_http_error_with_structured_detail(client: httpx.Client) -> None:
    response = client.post("/errors/conflict")
    assert response.status_code == 409
    assert response.json() == {"detail": {"field": "name", "problem": "already taken"}}


def test_exception_turned_into_http_error_by_the_handler(client: httpx.Client) -> None:
    assert client.get("/errors/divide", params={"a": 7, "b": 2}).json() == {
        "a": 7,
        "b": 2,
        "quotient": 3,
    }
    response = client.get("/errors/divide", params={"a": 7, "b": 0})
    assert response.status_code == 400
    assert response.json() == {"detail": "b must not be zero"}


# --- unhandled exceptions -----------------------------------------------------------------


def assert_generic_500(response: httpx.Response) -> str:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    request_id = payload.get("request_id")
    assert isinstance(request_id, str)
    assert request_id
    assert payload == {"detail": "Internal Server Error", "request_id": request_id}
    assert response.headers["x-request-id"] == request_id
    return request_id


def test_unhandled_exception_in_the_example(client: httpx.Client, example_server: Server) -> None:
    response = client.get("/errors/crash")
    request_id = assert_generic_500(response)
    assert "boom" not in response.text
    assert "Traceback" not in response.text
    log = example_server.wait_for_stderr(request_id, "Traceback", "ValueError: boom")
    assert request_id in log
    assert "/errors/crash" in log
    assert "hello.errors.crash" in log
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom" in log


CRASH_APP = {
    "app.py": """
        from pyhost import Router

        router = Router()


        def crash(kind):
            if kind == "value":
                raise ValueError("boom")
            if kind == "exit":
                raise SystemExit(3)
            if kind == "interrupt":
                raise KeyboardInterrupt
            return {"crashed": False}


        @router.get("/crash/{kind}")
        async def async_crash(request):
            return crash(request.path_params["kind"])


        @router.get("/sync-crash/{kind}")
        def sync_crash(request):
            return crash(request.path_params["kind"])


        @router.get("/ok")
        async def ok(request):
            return {"ok": True}
    """,
}


@pytest.fixture(scope="module")
def crash_app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(CRASH_APP) as server:
        yield server


@pytest.fixture(scope="module")
def debug_app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(CRASH_APP, make_config(server="debug = true")) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "route", "handler"),
    [
        ("/crash/value", "/crash/{kind}", "app.async_crash"),
        ("/sync-crash/value", "/sync-crash/{kind}", "app.sync_crash"),
    ],
)
def test_unhandled_exception_is_a_generic_500_and_logged(
    crash_app: Server, path: str, route: str, handler: str
) -> None:
    with crash_app.client() as http:
        response = http.get(path)
    request_id = assert_generic_500(response)
    assert "boom" not in response.text
    log = crash_app.wait_for_stderr(request_id, route, handler, "ValueError: boom")
    assert request_id in log
    assert route in log
    assert handler in log
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom" in log


def test_each_500_has_its_own_request_id(crash_app: Server) -> None:
    with crash_app.client() as http:
        ids = {assert_generic_500(http.get("/crash/value")) for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("path", ["/crash/value", "/sync-crash/value"])
def test_debug_mode_puts_the_error_and_traceback_in_the_body(debug_app: Server, path: str) -> None:
    with debug_app.client() as http:
        response = http.get(path)
    assert response.status_code == 500
    payload = response.json()
    assert set(payload) == {"detail", "request_id", "error", "traceback"}
    assert payload["detail"] == "Internal Server Error"
    assert payload["request_id"] == response.headers["x-request-id"]
    assert payload["error"] == "ValueError: boom"
    assert isinstance(payload["traceback"], str)
    assert "ValueError: boom" in payload["traceback"]
    assert 'raise ValueError("boom")' in payload["traceback"]


def test_debug_mode_leaves_other_errors_alone(debug_app: Server) -> None:
    with debug_app.client() as http:
        assert http.get("/nowhere").json() == {"detail": "Not Found"}
        assert http.get("/crash/none").json() == {"crashed": False}


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
@pytest.mark.parametrize("prefix", ["/crash", "/sync-crash"])
def test_system_exit_and_keyboard_interrupt_do_not_stop_the_server(
    crash_app: Server, prefix: str, kind: str
) -> None:
    with crash_app.client() as http:
        assert_generic_500(http.get(f"{prefix}/{kind}"))
        assert crash_app.is_running()
        assert http.get("/ok").json() == {"ok": True}
    with crash_app.client() as http:  # a fresh connection is accepted too
        assert http.get("/ok").json() == {"ok": True}
    assert crash_app.is_running()


# --- x-request-id on everything -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 200),
        ("HEAD", "/", 200),
        ("POST", "/errors/conflict", 409),
        ("GET", "/responses/none", 204),
        ("GET", "/nowhere", 404),
        ("DELETE", "/", 405),
        ("GET", "/paths/int/x", 422),
        ("GET", "/errors/crash", 500),
    ],
)
def test_every_response_has_a_request_id(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert response.headers.get("x-request-id")


def test_malformed_json_and_415_have_request_ids(client: httpx.Client) -> None:
    bad_json = client.post("/api/items", content=b"{", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.headers.get("x-request-id")
    wrong_type = client.post("/api/items", content=b"{}", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415
    assert wrong_type.headers.get("x-request-id")
