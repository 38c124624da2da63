"""Routing: 404, 405 with Allow, HEAD, typed path segments, the catch-all, included routers."""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import Server, ServerFactory, raw_request


def allow_set(response: httpx.Response) -> set[str]:
    allow = response.headers.get("allow")
    assert allow is not None, f"405 without an Allow header: {response.headers}"
    return {method.strip() for method in allow.split(",") if method.strip()}


def test_index(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json()["app"] == "hello"


def test_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Not Found"}
    assert response.headers.get("x-request-id")


def test_unknown_path_is_404_whatever_the_method(client: httpx.Client) -> None:
    response = client.delete("/no/such/page")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_routes_of_an_included_router_only_exist_under_the_prefix(client: httpx.Client) -> None:
    assert client.get("/api/items").status_code == 200
    assert client.get("/items").status_code == 404


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    response = client.post("/")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Method Not Allowed"}
    assert allow_set(response) == {"GET", "HEAD"}
    assert response.headers.get("x-request-id")


def test_allow_merges_the_routes_declared_on_one_path(client: httpx.Client) -> None:
    response = client.put("/api/items")
    assert response.status_code == 405
    assert allow_set(response) == {"GET", "HEAD", "POST"}

    response = client.post("/api/items/1")
    assert response.status_code == 405
    assert allow_set(response) == {"GET", "HEAD", "PUT", "PATCH", "DELETE"}


def test_head_is_not_allowed_on_a_post_only_route(client: httpx.Client) -> None:
    response = client.head("/api/items/1/orders")
    assert response.status_code == 405
    assert allow_set(response) == {"POST"}


def test_head_on_a_get_route_sends_headers_but_no_body(example_server: Server) -> None:
    get = raw_request(example_server.url, "GET", "/responses/dict")
    head = raw_request(example_server.url, "HEAD", "/responses/dict")
    assert get.status == 200
    assert get.body
    assert head.status == 200
    assert head.header("content-type") == "application/json"
    assert head.header("x-request-id")
    assert head.after_headers == b"", "HEAD response carried a body"


def test_head_on_a_text_route(client: httpx.Client) -> None:
    response = client.head("/hello/world")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == b""


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_one_route_for_several_methods(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/echo")
    assert response.status_code == 200
    assert response.json()["method"] == method


@pytest.mark.parametrize(
    ("path", "value", "type_name"),
    [
        ("/paths/int/42", 42, "int"),
        ("/paths/int/0", 0, "int"),
        ("/paths/float/2.5", 2.5, "float"),
        ("/paths/float/3", 3.0, "float"),
        ("/paths/str/hello", "hello", "str"),
        ("/paths/str/42", "42", "str"),
        (
            "/paths/uuid/12345678-1234-5678-1234-567812345678",
            "12345678-1234-5678-1234-567812345678",
            "UUID",
        ),
        (
            "/paths/uuid/ABCDEFAB-CDEF-ABCD-EFAB-CDEFABCDEFAB",
            "abcdefab-cdef-abcd-efab-cdefabcdefab",
            "UUID",
        ),
        ("/paths/files/readme", "readme", "str"),
        ("/paths/files/docs/guide/intro.md", "docs/guide/intro.md", "str"),
    ],
)
def test_typed_path_segments(
    client: httpx.Client, path: str, value: object, type_name: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload == {"value": value, "type": type_name}
    assert type(payload["value"]) is type(value)


def test_several_path_parameters(client: httpx.Client) -> None:
    response = client.get("/paths/users/7/posts/hello-world")
    assert response.status_code == 200
    assert response.json() == {
        "path_params": {"user_id": 7, "slug": "hello-world"},
        "route": "/paths/users/{user_id:int}/posts/{slug:str}",
    }


def test_a_typed_segment_that_does_not_parse_is_not_a_404(client: httpx.Client) -> None:
    response = client.get("/paths/int/forty-two")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "value"]


def test_random_uuid_roundtrip(client: httpx.Client) -> None:
    value = uuid.uuid4()
    response = client.get(f"/paths/uuid/{value}")
    assert response.json() == {"value": str(value), "type": "UUID"}


ROUTING_APP = {
    "app/__init__.py": """
        from pyhost import Router

        from . import sub

        router = Router()


        @router.route("/lower", methods=["get", "post"])
        async def lower(request):
            return {"method": request.method}


        @router.route("/options", methods=["OPTIONS", "GET"])
        async def options(request):
            return {"method": request.method}


        @router.get("/")
        async def root(request):
            return "root"


        @router.get("/modules/{name:str}")
        async def module_loaded(request):
            import sys

            return {"loaded": request.path_params["name"] in sys.modules}


        router.include(sub.router, prefix="/v1")
    """,
    "app/sub.py": """
        from pyhost import Router

        router = Router()


        @router.get("/ping")
        async def ping(request):
            return {"pong": True, "route": request.route}
    """,
}


@pytest.fixture(scope="module")
def routing_app(server_factory: ServerFactory) -> Iterator[httpx.Client]:
    with server_factory.serve(ROUTING_APP) as server, server.client() as http:
        yield http


def test_methods_declared_in_lower_case_are_served(routing_app: httpx.Client) -> None:
    assert routing_app.post("/lower").json() == {"method": "POST"}
    assert routing_app.get("/lower").json() == {"method": "GET"}
    response = routing_app.delete("/lower")
    assert response.status_code == 405
    assert allow_set(response) == {"GET", "HEAD", "POST"}


def test_options_route(routing_app: httpx.Client) -> None:
    response = routing_app.options("/options")
    assert response.status_code == 200
    assert response.json() == {"method": "OPTIONS"}


def test_root_path(routing_app: httpx.Client) -> None:
    response = routing_app.get("/")
    assert response.status_code == 200
    assert response.text == "root"


def test_an_app_without_uuid_parameters_does_not_load_uuid(routing_app: httpx.Client) -> None:
    # `uuid` imports `platform`; neither is loaded for an app that never uses them.
    assert routing_app.get("/modules/pyhost").json() == {"loaded": True}
    assert routing_app.get("/modules/uuid").json() == {"loaded": False}
    assert routing_app.get("/modules/platform").json() == {"loaded": False}


def test_included_router_prefix(routing_app: httpx.Client) -> None:
    response = routing_app.get("/v1/ping")
    assert response.status_code == 200
    assert response.json() == {"pong": True, "route": "/v1/ping"}
    assert routing_app.get("/ping").status_code == 404


FALLBACK_APP = {
    "app/__init__.py": """
        from pyhost import Router

        router = Router()


        def where(request):
            return {"route": request.route, "path_params": request.path_params}


        @router.get("/people/{pid}")
        async def person(request):
            return where(request)


        @router.post("/people/me")
        async def update_me(request):
            return where(request)


        @router.get("/a/{x}/c")
        async def x_c(request):
            return where(request)


        @router.post("/a/b/{y}")
        async def b_y(request):
            return where(request)


        @router.get("/static/{rest:path}")
        async def static_file(request):
            return where(request)


        @router.post("/static/admin")
        async def static_admin(request):
            return where(request)
    """,
}


@pytest.fixture(scope="module")
def fallback_app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(FALLBACK_APP) as server:
        yield server


@pytest.mark.parametrize(
    ("method", "path", "route", "path_params"),
    [
        # The static route lacks GET: the parameter route that also matches serves it.
        ("GET", "/people/me", "/people/{pid}", {"pid": "me"}),
        ("POST", "/people/me", "/people/me", {}),
        ("GET", "/people/42", "/people/{pid}", {"pid": "42"}),
        # Nested: `/a/b/{y}` is the more specific template, `/a/{x}/c` has the method.
        ("GET", "/a/b/c", "/a/{x}/c", {"x": "b"}),
        ("POST", "/a/b/c", "/a/b/{y}", {"y": "c"}),
        # A catch-all behind a static segment.
        ("GET", "/static/admin", "/static/{rest:path}", {"rest": "admin"}),
        ("POST", "/static/admin", "/static/admin", {}),
        ("GET", "/static/css/site.css", "/static/{rest:path}", {"rest": "css/site.css"}),
    ],
)
def test_a_less_specific_route_serves_a_method_the_more_specific_one_lacks(
    fallback_app: Server, method: str, path: str, route: str, path_params: dict[str, str]
) -> None:
    with fallback_app.client() as http:
        response = http.request(method, path)
    assert response.status_code == 200, response.text
    assert response.json() == {"route": route, "path_params": path_params}


@pytest.mark.parametrize("path", ["/people/me", "/a/b/c", "/static/admin"])
def test_head_falls_back_to_the_get_route_too(fallback_app: Server, path: str) -> None:
    head = raw_request(fallback_app.url, "HEAD", path)
    assert head.status == 200, head
    assert head.header("content-type") == "application/json"
    assert head.header("x-request-id")
    assert head.after_headers == b"", "HEAD response carried a body"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        # Every template matching the path contributes its methods.
        ("PUT", "/people/me", {"GET", "HEAD", "POST"}),
        ("DELETE", "/a/b/c", {"GET", "HEAD", "POST"}),
        ("PUT", "/static/admin", {"GET", "HEAD", "POST"}),
        # Only the templates that match: `/a/{x}/c` does not match `/a/b/d`.
        ("GET", "/a/b/d", {"POST"}),
        ("PUT", "/people/42", {"GET", "HEAD"}),
    ],
)
def test_405_only_when_no_matching_route_has_the_method(
    fallback_app: Server, method: str, path: str, allowed: set[str]
) -> None:
    with fallback_app.client() as http:
        response = http.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert allow_set(response) == allowed
    assert response.headers.get("x-request-id")
