"""What error responses reveal: nothing internal with `debug = false` (no traceback, exception
text, or file path), the exception and traceback with `debug = true`; no header injection."""

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, ServerFactory, make_config, raw_request

SECRET = "SECRET-7f3a9c"

SECURITY_APP = {
    "app.py": f"""
        import asyncio

        from pyhost import HTTPError, Query, Response, Router

        router = Router()
        SECRET = "{SECRET}"


        class Custom(BaseException):
            pass


        @router.get("/crash")
        async def crash(request):
            password = SECRET
            raise ValueError(f"could not use {{password}}")


        @router.get("/sync-crash")
        def sync_crash(request):
            raise KeyError(SECRET)


        @router.get("/file-error")
        async def file_error(request):
            raise FileNotFoundError(f"no such file: {{__file__}} ({{SECRET}})")


        @router.get("/system-exit")
        async def system_exit(request):
            raise SystemExit(SECRET)


        @router.get("/custom-base")
        async def custom_base(request):
            raise Custom(SECRET)


        @router.get("/nested")
        async def nested(request):
            try:
                {{}}["missing"]
            except KeyError as exc:
                raise RuntimeError(SECRET) from exc


        @router.get("/self-ref")
        async def self_ref(request):
            value = {{"secret": SECRET}}
            value["self"] = value
            return value


        class Opaque:
            def __repr__(self):
                return f"<Opaque {{SECRET}}>"


        @router.get("/bad-return")
        async def bad_return(request):
            return Opaque()


        async def helper():
            return SECRET


        @router.get("/coroutine")
        async def coroutine(request):
            return helper()


        @router.get("/timeout", timeout=0.2)
        async def timeout(request):
            await asyncio.sleep(5)


        @router.get("/http-error")
        async def http_error(request):
            raise HTTPError(403, "you may not")


        @router.get("/header-injection")
        async def header_injection(request):
            return Response("x", headers={{"x-a": "a\\r\\nset-cookie: injected=1"}})


        @router.get("/header-name-injection")
        async def header_name_injection(request):
            return Response("x", headers=[("x-a\\r\\nset-cookie", "injected=1")])


        @router.get("/header-newline")
        async def header_newline(request):
            return Response("x", headers={{"x-a": "a\\nb"}})


        @router.get("/typed/{{n:int}}", query={{"q": Query(int, default=0, le=10)}})
        async def typed(request):
            return {{"n": request.path_params["n"]}}


        @router.post("/json", body=dict)
        async def json_body(request):
            return {{"ok": True}}


        @router.get("/health")
        async def health(request):
            return {{"ok": True}}
    """,
}

EXCEPTION_ROUTES = [
    "/crash",
    "/sync-crash",
    "/file-error",
    "/system-exit",
    "/custom-base",
    "/nested",
]
OTHER_500_ROUTES = ["/self-ref", "/bad-return", "/coroutine"]


@dataclass(frozen=True)
class Call:
    id: str
    method: str
    path: str
    content: bytes | None = None
    content_type: str | None = None


ERROR_CALLS = [
    *(Call(path.strip("/"), "GET", path) for path in EXCEPTION_ROUTES + OTHER_500_ROUTES),
    Call("timeout", "GET", "/timeout"),
    Call("http-error", "GET", "/http-error"),
    Call("not-found", "GET", f"/no/such/{SECRET}"),
    Call("method-not-allowed", "DELETE", "/health"),
    Call("path-validation", "GET", f"/typed/{SECRET}"),
    Call("query-validation", "GET", "/typed/1?q=99"),
    Call("malformed-json", "POST", "/json", b'{"a": ', "application/json"),
    Call("wrong-content-type", "POST", "/json", b"{}", "text/plain"),
    Call("body-too-large", "POST", "/json", b"x" * 2048, "application/json"),
    Call("schema-mismatch", "POST", "/json", b"[1]", "application/json"),
]


def app_dir(server: Server) -> str:
    return str(server.config.parent)


def leak_markers(server: Server) -> list[str]:
    return [
        SECRET,
        "Traceback",
        'File "',
        "app.py",
        app_dir(server),
        sys.prefix,
        "ValueError",
        "KeyError",
        "FileNotFoundError",
        "RuntimeError",
        "SystemExit",
        "Opaque",
        "helper",
    ]


def send(http: httpx.Client, call: Call) -> httpx.Response:
    headers = {"content-type": call.content_type} if call.content_type else {}
    return http.request(call.method, call.path, content=call.content, headers=headers)


@pytest.fixture(scope="module")
def production(server_factory: ServerFactory) -> Iterator[Server]:
    config = make_config(server='debug = false\nbody_limit = "1 KiB"')
    with server_factory.serve(SECURITY_APP, config) as server:
        yield server


@pytest.fixture(scope="module")
def debugging(server_factory: ServerFactory) -> Iterator[Server]:
    config = make_config(server='debug = true\nbody_limit = "1 KiB"')
    with server_factory.serve(SECURITY_APP, config) as server:
        yield server


@pytest.mark.parametrize("call", ERROR_CALLS, ids=[call.id for call in ERROR_CALLS])
def test_error_responses_reveal_nothing_without_debug(production: Server, call: Call) -> None:
    with production.client() as http:
        response = send(http, call)
    assert response.status_code >= 400, response.text
    # The secret may only come back where the client sent it (path echoed in a 422 is fine);
    # nothing the server holds (paths, traceback, exception text) may appear.
    sent = call.path + (call.content or b"").decode("latin-1")
    exposed = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    leaks = [
        marker for marker in leak_markers(production) if marker in exposed and marker not in sent
    ]
    assert leaks == [], f"{call.id} ({response.status_code}) reveals {leaks}: {exposed[:1000]}"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", EXCEPTION_ROUTES + OTHER_500_ROUTES)
def test_500_body_is_exactly_detail_and_request_id_without_debug(
    production: Server, path: str
) -> None:
    with production.client() as http:
        response = http.get(path)
    assert response.status_code == 500
    payload = response.json()
    assert set(payload) == {"detail", "request_id"}, payload
    assert payload["detail"] == "Internal Server Error"
    assert payload["request_id"] == response.headers["x-request-id"]


def test_the_log_still_has_the_traceback_without_debug(production: Server) -> None:
    with production.client() as http:
        response = http.get("/crash")
    request_id = response.json()["request_id"]
    log = production.wait_for_stderr(request_id, "Traceback", SECRET)
    assert "Traceback (most recent call last)" in log
    assert f"ValueError: could not use {SECRET}" in log


@pytest.mark.parametrize("path", EXCEPTION_ROUTES)
def test_debug_500_carries_the_exception_and_traceback(debugging: Server, path: str) -> None:
    with debugging.client() as http:
        response = http.get(path)
    assert response.status_code == 500
    payload = response.json()
    assert payload["detail"] == "Internal Server Error"
    assert payload["request_id"] == response.headers["x-request-id"]
    assert SECRET in payload["error"], payload
    traceback = payload["traceback"]
    assert isinstance(traceback, str)
    assert "Traceback (most recent call last)" in traceback or 'File "' in traceback, traceback
    assert app_dir(debugging) in traceback, traceback
    assert SECRET in traceback, traceback


def test_debug_500_names_the_exception_type(debugging: Server) -> None:
    with debugging.client() as http:
        payload = http.get("/crash").json()
    assert payload["error"] == f"ValueError: could not use {SECRET}"
    assert "in crash" in payload["traceback"]


def test_debug_500_includes_the_cause_chain(debugging: Server) -> None:
    with debugging.client() as http:
        payload = http.get("/nested").json()
    assert "KeyError" in payload["traceback"], payload["traceback"]
    assert "RuntimeError" in payload["traceback"], payload["traceback"]


def test_debug_does_not_change_non_500_errors(debugging: Server, production: Server) -> None:
    for call in ERROR_CALLS:
        if call.path in EXCEPTION_ROUTES + OTHER_500_ROUTES:
            continue
        with debugging.client() as debug_http, production.client() as prod_http:
            debug_response = send(debug_http, call)
            prod_response = send(prod_http, call)
        assert debug_response.status_code == prod_response.status_code, call
        assert debug_response.json() == prod_response.json(), call


def test_the_handler_directory_is_a_real_path(production: Server) -> None:
    # Guards the leak checks above: the directory they look for is where the app lives.
    assert (Path(app_dir(production)) / "app.py").is_file()


@pytest.mark.parametrize("path", ["/header-injection", "/header-name-injection", "/header-newline"])
def test_handler_headers_cannot_inject_lines(production: Server, path: str) -> None:
    response = raw_request(production.url, "GET", path)
    names = [name.lower() for name, _ in response.headers]
    assert "set-cookie" not in names, response.headers
    assert not any(value.startswith("injected") for _, value in response.headers)
    assert response.status == 500, response
    assert production.is_running()


def test_not_found_does_not_reflect_markup(production: Server) -> None:
    response = raw_request(production.url, "GET", "/%3Cscript%3Ealert(1)%3C/script%3E")
    assert response.status == 404
    assert response.header("content-type") == "application/json"
    assert response.json() == {"detail": "Not Found"}
