"""How handler return values become responses: status, content-type and body for each kind."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Server, ServerFactory

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
HTML = "text/html; charset=utf-8"


@pytest.mark.parametrize(
    ("path", "status", "payload"),
    [
        (
            "/responses/dict",
            200,
            {"kind": "dict", "nested": {"ok": True, "n": [1, 2, 3]}, "nothing": None},
        ),
        ("/responses/list", 200, [1, "two", 3.0, None, {"four": 4}]),
        ("/responses/int", 200, 42),
        ("/responses/float", 200, 2.5),
        ("/responses/bool", 200, True),
        ("/responses/response-json", 203, {"via": "Response"}),
        ("/responses/json", 200, "a JSON string"),
    ],
)
def test_json_values(client: httpx.Client, path: str, status: int, payload: Any) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == JSON
    assert response.json() == payload
    assert type(response.json()) is type(payload)


def test_str_is_utf8_text(client: httpx.Client) -> None:
    response = client.get("/responses/str")
    assert response.status_code == 200
    assert response.headers["content-type"] == TEXT
    assert response.content == "plain text, UTF-8 encoded: héllo ✓".encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/responses/bytes", b"\x00\x01\x02binary\xff"),
        ("/responses/bytearray", b"from a bytearray"),
        ("/responses/memoryview", b"from a memoryview"),
    ],
)
def test_binary_values(client: httpx.Client, path: str, body: bytes) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == BINARY
    assert response.content == body


def test_none_is_204(client: httpx.Client) -> None:
    response = client.get("/responses/none")
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers.get("x-request-id")


def test_tuple_body_status(client: httpx.Client) -> None:
    response = client.get("/responses/tuple")
    assert response.status_code == 201
    assert response.headers["content-type"] == JSON
    assert response.json() == {"created": True}


def test_tuple_body_status_headers(client: httpx.Client) -> None:
    response = client.get("/responses/tuple-headers")
    assert response.status_code == 202
    assert response.headers["content-type"] == TEXT
    assert response.text == "accepted for later"
    assert response.headers["retry-after"] == "30"
    assert response.headers["x-queue"] == "slow"


def test_response_with_media_type_and_headers(client: httpx.Client) -> None:
    response = client.get("/responses/response")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="items.csv"'
    assert response.text == "id,name\n1,hammer\n"


def test_repeated_response_headers(client: httpx.Client) -> None:
    response = client.get("/responses/cookies")
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == ["theme=dark; Path=/", "lang=en; Path=/"]


def test_json_response_headers(client: httpx.Client) -> None:
    response = client.get("/responses/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.content == b'"a JSON string"'


def test_plain_text_response_with_status(client: httpx.Client) -> None:
    response = client.get("/responses/text")
    assert response.status_code == 404
    assert response.headers["content-type"] == TEXT
    assert response.text == "nothing to see here"


def test_html_response(client: httpx.Client) -> None:
    response = client.get("/responses/html")
    assert response.status_code == 200
    assert response.headers["content-type"] == HTML
    assert response.text == "<!doctype html><h1>Hello from pyhost</h1>"


def test_tuple_with_201_and_location_from_the_crud_example(client: httpx.Client) -> None:
    response = client.post("/api/items", json={"name": "kettle", "price": 24.5})
    assert response.status_code == 201
    created = response.json()
    assert created["name"] == "kettle"
    assert created["kind"] == "tool"
    assert created["tags"] == []
    assert response.headers["location"] == f"/api/items/{created['id']}"
    assert client.get(response.headers["location"]).json() == created
    patched = client.patch(response.headers["location"], json={"price": 20})
    assert patched.status_code == 200
    assert patched.json() == created | {"price": 20}
    deleted = client.delete(response.headers["location"])
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert client.get(response.headers["location"]).status_code == 404


# --- values the host cannot send --------------------------------------------------------

UNSERIALIZABLE_APP = {
    "app.py": """
        from pyhost import Router

        router = Router()


        class Widget:
            pass


        @router.get("/widget")
        async def return_widget(request):
            return Widget()


        @router.get("/set")
        def return_set(request):
            return {1, 2, 3}


        @router.get("/nested")
        async def return_nested_widget(request):
            return {"widget": Widget()}


        @router.get("/fine")
        async def fine(request):
            return {"ok": True}
    """,
}


@pytest.fixture(scope="module")
def unserializable(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(UNSERIALIZABLE_APP) as server:
        yield server


def assert_internal_error(response: httpx.Response) -> str:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == JSON
    payload = response.json()
    assert payload == {"detail": "Internal Server Error", "request_id": payload["request_id"]}
    assert payload["request_id"] == response.headers["x-request-id"]
    return str(payload["request_id"])


@pytest.mark.parametrize(
    ("path", "handler", "type_name"),
    [("/widget", "app.return_widget", "Widget"), ("/set", "app.return_set", "set")],
)
def test_unsupported_return_value_is_500_and_logged(
    unserializable: Server, path: str, handler: str, type_name: str
) -> None:
    with unserializable.client() as http:
        request_id = assert_internal_error(http.get(path))
        log = unserializable.wait_for_stderr(request_id, handler, type_name)
        assert handler in log
        assert type_name in log
        # The server is still fine.
        assert http.get("/fine").json() == {"ok": True}


def test_unserializable_json_content_is_500(unserializable: Server) -> None:
    with unserializable.client() as http:
        request_id = assert_internal_error(http.get("/nested"))
        log = unserializable.wait_for_stderr(request_id, "app.return_nested_widget")
        assert "app.return_nested_widget" in log
        assert http.get("/fine").status_code == 200
