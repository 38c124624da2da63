"""422 for invalid path / query / body input (handler not called), 400 malformed JSON, 415."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import ServerFactory, assert_validation_error, error_locs

VALIDATION_APP = {
    "app.py": """
        import dataclasses
        import uuid
        from typing import Literal, TypedDict

        from pyhost import Query, Router

        router = Router()
        calls = {"n": 0}


        def called():
            calls["n"] += 1


        @router.get("/calls")
        async def get_calls(request):
            return {"calls": calls["n"]}


        @router.get("/items/{item_id:int}")
        async def item(request):
            called()
            return {"item_id": request.path_params["item_id"]}


        @router.get("/floats/{x:float}")
        async def floats(request):
            called()
            return {"x": request.path_params["x"]}


        @router.get("/uuids/{u:uuid}")
        async def uuids(request):
            called()
            return {"u": str(request.path_params["u"])}


        @router.get("/items/{item_id:int}/detail", query={"verbose": Query(bool, default=False)})
        async def item_detail(request):
            called()
            return {}


        @router.get(
            "/search",
            query={
                "limit": Query(int, default=10, ge=1, le=100),
                "ratio": Query(float, default=0.5, gt=0, lt=1),
                "flag": Query(bool, default=False),
                "owner": Query(uuid.UUID, default=None),
                "name": Query(str, default=None, min_length=2, max_length=5),
                "code": Query(str, default=None, pattern="^[A-Z]{3}$"),
                "color": Query(str, default=None, choices=["red", "green"]),
                "size": Query(int, default=None, choices=[1, 2, 3]),
            },
        )
        def search(request):
            called()
            query = dict(request.query)
            if query["owner"] is not None:
                query["owner"] = str(query["owner"])
            return query


        @router.get("/required", query={"q": Query(str), "n": Query(int)})
        async def required(request):
            called()
            return request.query


        @router.get("/multi", query={"ids": Query(int, multiple=True, ge=0)})
        async def multi(request):
            called()
            return request.query


        @dataclasses.dataclass
        class Size:
            width: float
            height: float


        @dataclasses.dataclass
        class Thing:
            name: str
            count: int
            size: Size
            kind: Literal["a", "b"] = "a"
            tags: list[str] = dataclasses.field(default_factory=list)


        class Patch(TypedDict, total=False):
            name: str
            count: int


        class Strict(TypedDict):
            name: str


        ORDER = {
            "type": "object",
            "properties": {"quantity": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["quantity"],
        }


        @router.post("/things", body=Thing)
        async def things(request):
            called()
            return {"received": request.json}


        @router.post("/typed-dict", body=Strict)
        async def typed_dict(request):
            called()
            return {"received": request.json}


        @router.patch("/typed-dict", body=Patch)
        async def typed_dict_patch(request):
            called()
            return {"received": request.json}


        @router.post("/schema", body=ORDER)
        async def schema(request):
            called()
            return {"received": request.json}
    """,
}

GOOD_THING: dict[str, Any] = {"name": "box", "count": 2, "size": {"width": 1.5, "height": 2}}


@pytest.fixture(scope="module")
def http(server_factory: ServerFactory) -> Iterator[httpx.Client]:
    with server_factory.serve(VALIDATION_APP) as server, server.client() as client:
        yield client


def calls(http: httpx.Client) -> int:
    response = http.get("/calls")
    assert response.status_code == 200
    count = response.json()["calls"]
    assert isinstance(count, int)
    return count


def send(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send a request that must be rejected before the handler runs."""
    before = calls(http)
    response = http.request(method, url, **kwargs)
    assert calls(http) == before, f"the handler ran for a rejected request: {response.text}"
    assert response.headers.get("x-request-id")
    return response


def rejected(http: httpx.Client, method: str, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    response = send(http, method, url, **kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    return assert_validation_error(response.json())


def single(entries: list[dict[str, Any]]) -> tuple[list[Any], str]:
    assert len(entries) == 1, entries
    return entries[0]["loc"], entries[0]["type"]


# --- accepted input: the handler runs -----------------------------------------------------


def test_valid_input_calls_the_handler(http: httpx.Client) -> None:
    before = calls(http)
    response = http.get(
        "/search",
        params={
            "limit": "100",
            "ratio": "0.25",
            "flag": "true",
            "owner": "12345678-1234-5678-1234-567812345678",
            "name": "ab",
            "code": "ABC",
            "color": "green",
            "size": "3",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "limit": 100,
        "ratio": 0.25,
        "flag": True,
        "owner": "12345678-1234-5678-1234-567812345678",
        "name": "ab",
        "code": "ABC",
        "color": "green",
        "size": 3,
    }
    assert calls(http) == before + 1


def test_bounds_are_inclusive_for_ge_and_le(http: httpx.Client) -> None:
    assert http.get("/search", params={"limit": "1"}).status_code == 200
    assert http.get("/search", params={"limit": "100"}).status_code == 200


def test_valid_body_calls_the_handler(http: httpx.Client) -> None:
    before = calls(http)
    response = http.post("/things", json=GOOD_THING)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": GOOD_THING}
    assert calls(http) == before + 1


def test_json_content_type_with_charset_is_accepted(http: httpx.Client) -> None:
    response = http.post(
        "/schema",
        content=b'{"quantity": 3}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": {"quantity": 3}}


# --- path parameters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "loc", "error_type"),
    [
        ("/items/abc", ["path", "item_id"], "int_parsing"),
        ("/items/1.5", ["path", "item_id"], "int_parsing"),
        ("/floats/abc", ["path", "x"], "float_parsing"),
        ("/uuids/not-a-uuid", ["path", "u"], "uuid_parsing"),
    ],
)
def test_path_parameter_errors(
    http: httpx.Client, url: str, loc: list[str], error_type: str
) -> None:
    assert single(rejected(http, "GET", url)) == (loc, error_type)


# --- query parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "loc", "error_type"),
    [
        ({"limit": "abc"}, ["query", "limit"], "int_parsing"),
        ({"limit": "0"}, ["query", "limit"], "greater_than_equal"),
        ({"limit": "101"}, ["query", "limit"], "less_than_equal"),
        ({"ratio": "abc"}, ["query", "ratio"], "float_parsing"),
        ({"ratio": "0"}, ["query", "ratio"], "greater_than"),
        ({"ratio": "1"}, ["query", "ratio"], "less_than"),
        ({"flag": "maybe"}, ["query", "flag"], "bool_parsing"),
        ({"owner": "nobody"}, ["query", "owner"], "uuid_parsing"),
        ({"name": "a"}, ["query", "name"], "string_too_short"),
        ({"name": "abcdef"}, ["query", "name"], "string_too_long"),
        ({"code": "abc"}, ["query", "code"], "string_pattern_mismatch"),
        ({"color": "blue"}, ["query", "color"], "enum"),
        ({"size": "4"}, ["query", "size"], "enum"),
    ],
)
def test_query_parameter_errors(
    http: httpx.Client, params: dict[str, str], loc: list[str], error_type: str
) -> None:
    assert single(rejected(http, "GET", "/search", params=params)) == (loc, error_type)


def test_missing_required_query_parameters(http: httpx.Client) -> None:
    entries = rejected(http, "GET", "/required")
    assert error_locs({"detail": entries}) == [("query", "n"), ("query", "q")]
    assert {entry["type"] for entry in entries} == {"missing"}


def test_one_of_two_required_query_parameters_missing(http: httpx.Client) -> None:
    assert single(rejected(http, "GET", "/required", params={"q": "x"})) == (
        ["query", "n"],
        "missing",
    )


def test_missing_required_multiple_query_parameter(http: httpx.Client) -> None:
    assert single(rejected(http, "GET", "/multi")) == (["query", "ids"], "missing")


def test_multiple_query_parameter_values_are_each_validated(http: httpx.Client) -> None:
    response = http.get("/multi", params=[("ids", "1"), ("ids", "2")])
    assert response.status_code == 200
    assert response.json() == {"ids": [1, 2]}
    entries = rejected(http, "GET", "/multi", params=[("ids", "1"), ("ids", "x")])
    assert entries[0]["loc"][:2] == ["query", "ids"]
    assert entries[0]["type"] == "int_parsing"


def test_one_entry_per_failing_query_parameter(http: httpx.Client) -> None:
    entries = rejected(
        http, "GET", "/search", params={"limit": "0", "ratio": "2", "flag": "maybe", "name": "ab"}
    )
    assert error_locs({"detail": entries}) == [
        ("query", "flag"),
        ("query", "limit"),
        ("query", "ratio"),
    ]
    by_name = {entry["loc"][1]: entry["type"] for entry in entries}
    assert by_name == {
        "limit": "greater_than_equal",
        "ratio": "less_than",
        "flag": "bool_parsing",
    }


def test_path_and_query_errors_are_reported_together(http: httpx.Client) -> None:
    entries = rejected(http, "GET", "/items/abc/detail", params={"verbose": "maybe"})
    assert error_locs({"detail": entries}) == [("path", "item_id"), ("query", "verbose")]


# --- JSON bodies --------------------------------------------------------------------------


def test_body_missing_required_property(http: httpx.Client) -> None:
    body = {key: value for key, value in GOOD_THING.items() if key != "name"}
    assert single(rejected(http, "POST", "/things", json=body)) == (["body", "name"], "required")


def test_body_wrong_type(http: httpx.Client) -> None:
    body = GOOD_THING | {"count": "three"}
    assert single(rejected(http, "POST", "/things", json=body)) == (["body", "count"], "type")


def test_body_nested_wrong_type(http: httpx.Client) -> None:
    body = GOOD_THING | {"size": {"width": "wide", "height": 2}}
    assert single(rejected(http, "POST", "/things", json=body)) == (
        ["body", "size", "width"],
        "type",
    )


def test_body_nested_missing_property(http: httpx.Client) -> None:
    body = GOOD_THING | {"size": {"width": 1}}
    assert single(rejected(http, "POST", "/things", json=body)) == (
        ["body", "size", "height"],
        "required",
    )


def test_body_literal_is_an_enum(http: httpx.Client) -> None:
    body = GOOD_THING | {"kind": "c"}
    assert single(rejected(http, "POST", "/things", json=body)) == (["body", "kind"], "enum")


def test_body_array_item(http: httpx.Client) -> None:
    body = GOOD_THING | {"tags": ["ok", 5]}
    entries = rejected(http, "POST", "/things", json=body)
    assert len(entries) == 1
    assert [str(part) for part in entries[0]["loc"]] == ["body", "tags", "1"]
    assert entries[0]["type"] == "type"


def test_body_unknown_property_of_a_dataclass(http: httpx.Client) -> None:
    body = GOOD_THING | {"extra": 1}
    entries = rejected(http, "POST", "/things", json=body)
    assert len(entries) == 1
    assert entries[0]["type"] == "extra_forbidden"
    assert entries[0]["loc"] == ["body", "extra"]
    assert entries[0]["msg"] == "Extra inputs are not permitted"


def test_body_each_unknown_property_is_an_entry_of_its_own(http: httpx.Client) -> None:
    body = GOOD_THING | {
        "surplus_a": 1,
        "surplus_b": "two",
        "size": {"width": 1, "height": 2, "surplus": 3},
    }
    entries = rejected(http, "POST", "/things", json=body)
    assert sorted(entries, key=lambda entry: entry["loc"]) == [
        {"loc": loc, "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        for loc in (["body", "size", "surplus"], ["body", "surplus_a"], ["body", "surplus_b"])
    ]


def test_body_unknown_properties_beside_other_failures(http: httpx.Client) -> None:
    body = {"name": "box", "count": "two", "size": {"width": 1}, "surplus": True}
    entries = rejected(http, "POST", "/things", json=body)
    assert sorted((entry["loc"], entry["type"]) for entry in entries) == [
        (["body", "count"], "type"),
        (["body", "size", "height"], "required"),
        (["body", "surplus"], "extra_forbidden"),
    ]


def test_body_not_an_object(http: httpx.Client) -> None:
    assert single(rejected(http, "POST", "/things", json=[1, 2])) == (["body"], "type")


def test_body_one_entry_per_failing_field(http: httpx.Client) -> None:
    body = {"count": "x", "size": {"width": 1, "height": 2}}
    entries = rejected(http, "POST", "/things", json=body)
    assert error_locs({"detail": entries}) == [("body", "count"), ("body", "name")]
    by_field = {entry["loc"][1]: entry["type"] for entry in entries}
    assert by_field == {"count": "type", "name": "required"}


def test_typed_dict_body(http: httpx.Client) -> None:
    assert http.post("/typed-dict", json={"name": "n", "other": 1}).status_code == 200
    assert single(rejected(http, "POST", "/typed-dict", json={})) == (
        ["body", "name"],
        "required",
    )
    assert single(rejected(http, "POST", "/typed-dict", json={"name": 1})) == (
        ["body", "name"],
        "type",
    )


def test_non_total_typed_dict_body(http: httpx.Client) -> None:
    assert http.patch("/typed-dict", json={}).status_code == 200
    assert single(rejected(http, "PATCH", "/typed-dict", json={"count": "x"})) == (
        ["body", "count"],
        "type",
    )


@pytest.mark.parametrize(
    ("body", "error_type"),
    [({"quantity": 0}, "minimum"), ({"quantity": 11}, "maximum"), ({"quantity": 1.5}, "type")],
)
def test_json_schema_dict_body(http: httpx.Client, body: dict[str, Any], error_type: str) -> None:
    assert single(rejected(http, "POST", "/schema", json=body)) == (
        ["body", "quantity"],
        error_type,
    )


# --- malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [b'{"name": ', b"not json", b"{'single': 'quotes'}"])
def test_malformed_json_is_400(http: httpx.Client, content: bytes) -> None:
    response = send(
        http, "POST", "/things", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail.startswith("Malformed JSON body: "), detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(http: httpx.Client, content_type: str) -> None:
    response = send(
        http,
        "POST",
        "/things",
        content=b'{"name": "box", "count": 2, "size": {"width": 1, "height": 2}}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 415, response.text
    assert isinstance(response.json()["detail"], str)


# --- query patterns: Rust `regex` syntax, searched (not anchored) -------------------------

PATTERN_APP = {
    "app.py": r"""
        from pyhost import Query, Router

        router = Router()


        @router.get(
            "/patterns",
            query={
                "anywhere": Query(str, default=None, pattern="a"),
                "start": Query(str, default=None, pattern="^a"),
                "whole": Query(str, default=None, pattern="^a$"),
                # Python's `re` refuses both; Rust's `regex`, which checks values, does not.
                "letters": Query(str, default=None, pattern=r"^\p{L}+$"),
                "year": Query(str, default=None, pattern=r"^(?<year>\d{4})$"),
            },
        )
        async def patterns(request):
            return request.query
    """,
}


@pytest.fixture(scope="module")
def patterns(server_factory: ServerFactory) -> Iterator[httpx.Client]:
    with server_factory.serve(PATTERN_APP) as server, server.client() as client:
        yield client


@pytest.mark.parametrize(
    ("param", "value", "accepted"),
    [
        # Searched: the pattern may match anywhere in the value...
        ("anywhere", "ba", True),
        ("anywhere", "a", True),
        ("anywhere", "bcd", False),
        # ...so anchors say where.
        ("start", "ab", True),
        ("start", "ba", False),
        ("whole", "a", True),
        ("whole", "ab", False),
        # `$` is the very end: a trailing newline (`%0A`) is not skipped as Python's `re` would.
        ("whole", "a\n", False),
        ("letters", "Öl", True),
        ("letters", "a1", False),
        ("year", "2024", True),
        ("year", "24", False),
    ],
)
def test_query_patterns_are_searched_with_rust_regex_syntax(
    patterns: httpx.Client, param: str, value: str, accepted: bool
) -> None:
    response = patterns.get("/patterns", params={param: value})
    if accepted:
        assert response.status_code == 200, response.text
        assert response.json()[param] == value
    else:
        assert response.status_code == 422, response.text
        entries = assert_validation_error(response.json())
        assert [(e["loc"], e["type"]) for e in entries] == [
            (["query", param], "string_pattern_mismatch")
        ]
