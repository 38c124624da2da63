"""The request object handlers get: every attribute, typed parameters, headers, body, JSON."""

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import Server, ServerFactory, parse_response, raw_exchange, raw_request

REQUEST_APP = {
    "app.py": """
        import uuid

        from pyhost import Query, Router

        router = Router()

        ATTRIBUTES = [
            "method", "path", "url", "query_string", "path_params", "query_params", "query",
            "headers", "body", "client", "request_id", "route",
        ]


        def plain(value):
            if isinstance(value, uuid.UUID):
                return str(value)
            if isinstance(value, (list, tuple)):
                return [plain(item) for item in value]
            return value


        def typed(mapping):
            return {key: [type(value).__name__, plain(value)] for key, value in mapping.items()}


        def getitem_raises_key_error(request):
            try:
                request["no_such_attribute"]
            except KeyError:
                return True
            return False


        def describe(request):
            return {
                "method": request.method,
                "path": request.path,
                "url": request.url,
                "query_string": request.query_string,
                "path_params": typed(request.path_params),
                "query": typed(request.query),
                "query_params": {
                    "multi": [[k, v] for k, v in request.query_params.multi_items()],
                    "items": [[k, v] for k, v in request.query_params.items()],
                    "keys": list(request.query_params.keys()),
                    "getlist_x": request.query_params.getlist("x"),
                },
                "body": request.body.hex(),
                "body_type": type(request.body).__name__,
                "client": list(request.client) if request.client is not None else None,
                "request_id": request.request_id,
                "route": request.route,
                "dict_style": {
                    name: (
                        request[name] == getattr(request, name)
                        and request.get(name) == getattr(request, name)
                        and name in request
                    )
                    for name in ATTRIBUTES
                },
                "missing": {
                    "get": request.get("no_such_attribute", "fallback"),
                    "in": "no_such_attribute" in request,
                    "getitem_raises_key_error": getitem_raises_key_error(request),
                },
            }


        @router.route(
            "/inspect/{name}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        )
        async def inspect(request):
            return describe(request)


        @router.get("/typed/{i:int}/{f:float}/{u:uuid}/{s}/{rest:path}")
        async def typed_path(request):
            return describe(request)


        @router.get(
            "/query",
            query={
                "n": Query(int, default=5),
                "ratio": Query(float, default=0.5),
                "flag": Query(bool, default=False),
                "owner": Query(uuid.UUID, default=None),
                "name": Query(str, default="anon"),
                "tags": Query(str, default=[], multiple=True),
                "ids": Query(int, default=[7], multiple=True),
            },
        )
        def query(request):
            return describe(request)


        @router.get("/headers")
        async def headers(request):
            h = request.headers
            return {
                "exact": h["X-Custom"],
                "lower": h["x-custom"],
                "upper": h["X-CUSTOM"],
                "get": h.get("X-Custom"),
                "get_missing": h.get("x-absent", "default"),
                "first_of_repeated": h["x-multi"],
                "getlist": h.getlist("X-Multi"),
                "contains": "X-MIXED-CASE" in h,
                "contains_missing": "x-absent" in h,
                "items": [[k, v] for k, v in h.items()],
                "keys": list(h.keys()),
            }


        @router.post("/json")
        async def json_body(request):
            value = request.json
            return {"json": value, "type": type(value).__name__}


        @router.post("/declared", body=dict[str, int])
        async def declared(request):
            return {"json": request.json, "type": type(request.json).__name__}


        @router.post("/echo")
        async def echo(request):
            return request.json


        @router.post("/echo-declared", body={"type": "object"})
        async def echo_declared(request):
            return request.json
    """,
}


@pytest.fixture(scope="module")
def app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(REQUEST_APP) as server:
        yield server


@pytest.fixture(scope="module")
def http(app: Server) -> Iterator[httpx.Client]:
    with app.client() as client:
        yield client


def test_method_path_route_and_path_params(http: httpx.Client) -> None:
    payload = http.get("/inspect/abc").json()
    assert payload["method"] == "GET"
    assert payload["path"] == "/inspect/abc"
    assert payload["route"] == "/inspect/{name}"
    assert payload["path_params"] == {"name": ["str", "abc"]}
    assert payload["query"] == {}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method(http: httpx.Client, method: str) -> None:
    response = http.request(method, "/inspect/m")
    assert response.status_code == 200
    assert response.json()["method"] == method


def test_url_query_string_and_query_params_with_repeated_keys(app: Server) -> None:
    target = "/inspect/abc?x=1&y=hello%20world&x=2&caf%C3%A9=%E2%9C%93"
    response = raw_request(app.url, "GET", target)
    assert response.status == 200
    payload = response.json()
    assert payload["url"] == app.url + target
    assert payload["query_string"] == "x=1&y=hello%20world&x=2&caf%C3%A9=%E2%9C%93"
    assert payload["query_params"] == {
        "multi": [["x", "1"], ["y", "hello world"], ["x", "2"], ["café", "✓"]],
        "items": [["x", "2"], ["y", "hello world"], ["café", "✓"]],
        "keys": ["x", "y", "café"],
        "getlist_x": ["1", "2"],
    }
    # Undeclared parameters are in query_params only.
    assert payload["query"] == {}


def test_no_query_string(app: Server, http: httpx.Client) -> None:
    payload = http.get("/inspect/plain").json()
    assert payload["url"] == f"{app.url}/inspect/plain"
    assert payload["query_string"] == ""
    assert payload["query_params"]["multi"] == []


def test_typed_path_params(http: httpx.Client) -> None:
    value = uuid.uuid4()
    payload = http.get(f"/typed/7/2.5/{value}/word/a/b/c.txt").json()
    assert payload["path_params"] == {
        "i": ["int", 7],
        "f": ["float", 2.5],
        "u": ["UUID", str(value)],
        "s": ["str", "word"],
        "rest": ["str", "a/b/c.txt"],
    }
    assert payload["route"] == "/typed/{i:int}/{f:float}/{u:uuid}/{s}/{rest:path}"


def test_declared_query_defaults(http: httpx.Client) -> None:
    payload = http.get("/query").json()
    assert payload["query"] == {
        "n": ["int", 5],
        "ratio": ["float", 0.5],
        "flag": ["bool", False],
        "owner": ["NoneType", None],
        "name": ["str", "anon"],
        "tags": ["list", []],
        "ids": ["list", [7]],
    }


def test_declared_query_typed_values(http: httpx.Client) -> None:
    owner = uuid.uuid4()
    params: list[tuple[str, str]] = [
        ("n", "12"),
        ("ratio", "0.25"),
        ("flag", "true"),
        ("owner", str(owner)),
        ("name", "bob"),
        ("tags", "a"),
        ("tags", "b"),
        ("ids", "1"),
        ("ids", "2"),
        ("ids", "3"),
        ("extra", "zzz"),
    ]
    payload = http.get("/query", params=params).json()
    assert payload["query"] == {
        "n": ["int", 12],
        "ratio": ["float", 0.25],
        "flag": ["bool", True],
        "owner": ["UUID", str(owner)],
        "name": ["str", "bob"],
        "tags": ["list", ["a", "b"]],
        "ids": ["list", [1, 2, 3]],
    }
    assert ["extra", "zzz"] in payload["query_params"]["multi"]


def test_bool_query_false(http: httpx.Client) -> None:
    payload = http.get("/query", params={"flag": "false"}).json()
    assert payload["query"]["flag"] == ["bool", False]


def test_headers_are_case_insensitive_and_keep_repeats(app: Server) -> None:
    response = raw_request(
        app.url,
        "GET",
        "/headers",
        headers=[
            ("X-Custom", "Value-1"),
            ("X-Multi", "a"),
            ("X-MiXeD-CaSe", "yes"),
            ("x-multi", "b"),
        ],
    )
    assert response.status == 200
    payload = response.json()
    assert payload["exact"] == payload["lower"] == payload["upper"] == "Value-1"
    assert payload["get"] == "Value-1"
    assert payload["get_missing"] == "default"
    assert payload["first_of_repeated"] == "a"
    assert payload["getlist"] == ["a", "b"]
    assert payload["contains"] is True
    assert payload["contains_missing"] is False
    items = payload["items"]
    assert all(name == name.lower() for name, _ in items), items
    assert ["x-mixed-case", "yes"] in items
    assert ["x-custom", "Value-1"] in items
    multi = [value for name, value in items if name == "x-multi"]
    assert multi == ["a", "b"]
    assert "host" in payload["keys"]


def test_raw_body_bytes(http: httpx.Client) -> None:
    body = bytes(range(256)) * 4
    payload = http.post("/inspect/b", content=body).json()
    assert payload["body"] == body.hex()
    assert payload["body_type"] == "bytes"


def test_empty_body(http: httpx.Client) -> None:
    payload = http.get("/inspect/e").json()
    assert payload["body"] == ""
    assert payload["body_type"] == "bytes"


def test_json_parsed_on_access(http: httpx.Client) -> None:
    value: Any = [1, {"a": None, "b": [True, 2.5]}, "x"]
    response = http.post("/json", json=value)
    assert response.status_code == 200
    assert response.json() == {"json": value, "type": "list"}


def test_malformed_json_on_access_is_400(http: httpx.Client) -> None:
    response = http.post("/json", content=b'{"a": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "detail" in response.json()


def test_declared_body_json_is_preparsed(http: httpx.Client) -> None:
    response = http.post("/declared", json={"a": 1, "b": 2})
    assert response.status_code == 200
    assert response.json() == {"json": {"a": 1, "b": 2}, "type": "dict"}


ORDERED_BODIES = [
    b'{"zeta":1,"alpha":2}',
    b'{"zeta":1,"alpha":{"z":[{"y":1,"b":2.5}],"a":null},"mid":"x","beta":[true,false]}',
    # A repeated key keeps its first position and its last value, as json.loads does.
    b'{"b":1,"a":2,"b":3}',
]


@pytest.mark.parametrize("path", ["/echo", "/echo-declared"])
@pytest.mark.parametrize("body", ORDERED_BODIES)
def test_json_keeps_the_bodys_key_order(http: httpx.Client, path: str, body: bytes) -> None:
    response = http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    # The echo re-encodes compactly, so the bytes show the order the handler saw.
    assert response.content == json.dumps(json.loads(body), separators=(",", ":")).encode()


def test_client_address(app: Server) -> None:
    local: list[tuple[str, int]] = []

    def remember(sock: socket.socket) -> None:
        local.append(sock.getsockname()[:2])

    request = (
        f"GET /inspect/c HTTP/1.1\r\nHost: {app.host}:{app.port}\r\nConnection: close\r\n\r\n"
    ).encode()
    response = parse_response(raw_exchange(app.url, request, on_connect=remember))
    assert response.status == 200
    host, port = local[0]
    assert response.json()["client"] == [host, port]


def test_request_id_matches_header_and_is_unique(http: httpx.Client) -> None:
    ids = set()
    for _ in range(3):
        response = http.get("/inspect/id")
        request_id = response.json()["request_id"]
        assert request_id
        assert response.headers["x-request-id"] == request_id
        ids.add(request_id)
    assert len(ids) == 3


def test_dict_style_access_matches_attributes(http: httpx.Client) -> None:
    payload = http.post("/inspect/d?x=1", content=b"body").json()
    assert payload["dict_style"] == dict.fromkeys(payload["dict_style"], True)
    assert len(payload["dict_style"]) == 12
    assert payload["missing"] == {
        "get": "fallback",
        "in": False,
        "getitem_raises_key_error": True,
    }
