"""How handler return values become responses: status, content-type and body for each kind."""

import json
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


# --- one JSON encoder for returned values and Response bodies ---------------------------

# Written into the app as `samples.py` and run here too, so both sides hold the same values.
SAMPLES_SOURCE = """
import random
import struct


def sample_floats():
    # Spellings that differ between float formatters, then random doubles of any magnitude.
    values = [0.1, 1e16, 1234567890123456.0, 1e-05, 0.0001, 100.0, -0.0, 0.0, 5e-324,
              1.7976931348623157e308, 1.5e-07, 2.5, 1e22, 12345.678, -2.2250738585072014e-308]
    rng = random.Random(20240601)
    while len(values) < 400:
        value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if value - value == 0:  # finite
            values.append(value)
    return values


ENCODABLE = {
    "floats": sample_floats(),
    "edges": {
        "u64": 2**64 - 1,
        "i64": -(2**63),
        "text": 'ü ✓ "quoted" \\\\ \\n \\t \\x00 \\x1f \\x7f',
        "nested": [[{"k": None}], (1, 2)],
        1: "int key",
        2.5: "float key",
        True: "bool key",
        None: "null key",
        2**70: "big int key",
    },
}

REFUSED = {
    "nan": {"x": float("nan")},
    "inf": [float("inf")],
    "-inf": -float("inf"),
    "nan-key": {float("nan"): 1},
    "big": {"n": 2**64},
    "small": [-(2**63) - 1],
}
"""

SAMPLES: dict[str, Any] = {}
exec(SAMPLES_SOURCE, SAMPLES)

ENCODER_APP = {
    "samples.py": SAMPLES_SOURCE,
    "app.py": """
        from pyhost import JSONResponse, Router

        from samples import ENCODABLE, REFUSED

        router = Router()
        VALUES = {**ENCODABLE, **REFUSED}


        @router.get("/value/{case}")
        async def as_value(request):
            return VALUES[request.path_params["case"]]


        @router.get("/response/{case}")
        async def as_json_response(request):
            return JSONResponse(VALUES[request.path_params["case"]])
    """,
}

HANDLERS = {"value": "app.as_value", "response": "app.as_json_response"}


@pytest.fixture(scope="module")
def encoder(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(ENCODER_APP) as server:
        yield server


def strict_json(body: bytes) -> Any:
    """json.loads that refuses NaN and Infinity, as JSON does."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"invalid JSON: {constant} in {body[:200]!r}")

    return json.loads(body, parse_constant=refuse)


@pytest.mark.parametrize("path", ["value", "response"])
@pytest.mark.parametrize("case", ["floats", "edges"])
def test_both_paths_write_what_json_dumps_writes(encoder: Server, path: str, case: str) -> None:
    with encoder.client() as http:
        response = http.get(f"/{path}/{case}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == JSON
    expected = json.dumps(SAMPLES["ENCODABLE"][case], separators=(",", ":"), ensure_ascii=False)
    assert response.content == expected.encode()
    strict_json(response.content)


@pytest.mark.parametrize("path", ["value", "response"])
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("nan", "out of range float values are not JSON compliant: nan"),
        ("inf", "out of range float values are not JSON compliant: inf"),
        ("-inf", "out of range float values are not JSON compliant: -inf"),
        ("nan-key", "out of range float values are not JSON compliant: nan"),
        ("big", "the integer 18446744073709551616 does not fit in 64 bits"),
        ("small", "the integer -9223372036854775809 does not fit in 64 bits"),
    ],
)
def test_what_json_cannot_carry_is_500_on_both_paths(
    encoder: Server, path: str, case: str, reason: str
) -> None:
    with encoder.client() as http:
        response = http.get(f"/{path}/{case}")
        request_id = assert_internal_error(response)
        strict_json(response.content)
        handler = HANDLERS[path]
        log = encoder.wait_for_stderr(request_id, handler, reason)
        line = next((line for line in log.splitlines() if request_id in line), "")
        assert handler in line, log
        assert reason in log, log
        assert http.get("/value/edges").status_code == 200
