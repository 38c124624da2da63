"""`server.body_limit`: 413 decided from Content-Length, or while a chunked body streams in."""

from collections.abc import Iterator

import pytest

from tests.harness import (
    Server,
    ServerFactory,
    chunked,
    make_config,
    parse_response,
    raw_exchange,
    raw_request,
)

LIMIT = 1024

UPLOAD_APP = {
    "app.py": """
        from pyhost import Router

        router = Router()
        calls = {"n": 0}


        @router.post("/upload")
        async def upload(request):
            calls["n"] += 1
            return {"size": len(request.body)}


        @router.post("/json", body=dict)
        async def json_body(request):
            calls["n"] += 1
            return {"keys": len(request.json)}


        @router.get("/calls")
        async def get_calls(request):
            return {"calls": calls["n"]}
    """,
}


@pytest.fixture(scope="module")
def app(server_factory: ServerFactory) -> Iterator[Server]:
    config = make_config(server='body_limit = "1 KiB"')
    with server_factory.serve(UPLOAD_APP, config) as server:
        yield server


def calls(server: Server) -> int:
    with server.client() as http:
        count = http.get("/calls").json()["calls"]
    assert isinstance(count, int)
    return count


def assert_413(status: int, body: object) -> None:
    assert status == 413, body
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str), body


def chunked_upload(server: Server, *pieces: bytes, pause: float = 0.0) -> bytes:
    head = (
        f"POST /upload HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    body = chunked(*pieces)
    return raw_exchange(
        server.url, [head, *(body[i : i + 300] for i in range(0, len(body), 300))], pause=pause
    )


def test_body_at_the_limit_is_accepted(app: Server) -> None:
    with app.client() as http:
        response = http.post("/upload", content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"size": LIMIT}


def test_body_over_the_limit_by_content_length(app: Server) -> None:
    before = calls(app)
    with app.client() as http:
        response = http.post("/upload", content=b"x" * (LIMIT + 1))
    assert_413(response.status_code, response.json())
    assert response.headers.get("x-request-id")
    assert calls(app) == before


def test_json_body_over_the_limit(app: Server) -> None:
    before = calls(app)
    payload = {f"key{i}": "v" * 20 for i in range(100)}
    with app.client() as http:
        response = http.post("/json", json=payload)
    assert_413(response.status_code, response.json())
    assert calls(app) == before


def test_413_is_decided_from_content_length_without_reading_the_body(app: Server) -> None:
    # Announce 10 MB and send none of it: the answer must come from the header alone.
    before = calls(app)
    response = raw_request(
        app.url,
        "POST",
        "/upload",
        headers=[("Content-Length", str(10 * 1024 * 1024)), ("Content-Type", "text/plain")],
        timeout=10,
    )
    assert_413(response.status, response.json())
    assert calls(app) == before


def test_chunked_body_within_the_limit(app: Server) -> None:
    response = parse_response(chunked_upload(app, b"a" * 256, b"b" * 256, b"c" * 100))
    assert response.status == 200
    assert response.json() == {"size": 612}


def test_chunked_body_over_the_limit_is_stopped_while_streaming(app: Server) -> None:
    before = calls(app)
    response = parse_response(chunked_upload(app, *(b"z" * 400 for _ in range(4)), pause=0.05))
    assert_413(response.status, response.json())
    assert calls(app) == before


def test_chunked_body_over_the_limit_without_ever_finishing(app: Server) -> None:
    # The body never ends: the server must answer once it has seen more than the limit.
    head = (
        f"POST /upload HTTP/1.1\r\nHost: {app.host}:{app.port}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    unterminated = b"".join(b"%x\r\n%s\r\n" % (500, b"q" * 500) for _ in range(3))
    response = parse_response(raw_exchange(app.url, [head, unterminated], timeout=10))
    assert_413(response.status, response.json())


def test_integer_body_limit(server_factory: ServerFactory) -> None:
    with (
        server_factory.serve(UPLOAD_APP, make_config(server="body_limit = 100")) as server,
        server.client() as http,
    ):
        assert http.post("/upload", content=b"x" * 100).json() == {"size": 100}
        response = http.post("/upload", content=b"x" * 101)
        assert_413(response.status_code, response.json())


def test_streamed_request_body_from_a_client_generator(app: Server) -> None:
    def pieces() -> Iterator[bytes]:
        yield b"a" * 300
        yield b"b" * 300

    with app.client() as http:
        response = http.post("/upload", content=pieces())
    assert response.status_code == 200
    assert response.json() == {"size": 600}


def test_empty_body(app: Server) -> None:
    with app.client() as http:
        assert http.post("/upload").json() == {"size": 0}
