"""Property tests (hypothesis) against a live server: routing, query parsing, validation.

Each property compares the server with a small Python model of what the contract says:
- random paths of literal / int / float / uuid / text segments reach the handler the model
  picks, with typed parameters, or get 404 (422 when a typed segment does not parse), never 500;
- random query strings (repeated keys, any text, `%20` or `+` for spaces) come back through
  `request.query_params` exactly, in order;
- random numbers against `ge`/`le`/`gt`/`lt` bounds (query) and `minimum`/`maximum` (body)
  give 200 or 422 exactly as the bounds say.
"""

import math
import re
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import ServerFactory

PROPERTY_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

PROPERTY_APP = {
    "app.py": """
        from pyhost import Query, Router

        router = Router()


        def answer(name, request):
            params = {
                key: str(value) if not isinstance(value, int | float | str) else value
                for key, value in request.path_params.items()
            }
            return {"handler": name, "params": params, "route": request.route}


        @router.get("/")
        async def root(request):
            return answer("root", request)


        @router.get("/items")
        async def items(request):
            return answer("items", request)


        @router.get("/items/{item_id:int}")
        async def item(request):
            return answer("item", request)


        @router.get("/items/{item_id:int}/tags/{tag}")
        async def item_tag(request):
            return answer("item_tag", request)


        @router.get("/users/me")
        async def me(request):
            return answer("me", request)


        @router.get("/users/{user_id:uuid}")
        async def user(request):
            return answer("user", request)


        @router.get("/pair/{a:int}/{b:float}")
        async def pair(request):
            return answer("pair", request)


        @router.get("/files/{rest:path}")
        async def files(request):
            return answer("files", request)


        @router.get("/echo-query")
        async def echo_query(request):
            params = request.query_params
            return {
                "multi": [list(pair) for pair in params.multi_items()],
                "last": dict(params.items()),
                "keys": list(params.keys()),
                "getlist": {key: params.getlist(key) for key in params.keys()},
            }


        @router.get("/ge-le", query={"n": Query(int, ge=-5, le=5)})
        async def ge_le(request):
            return {"n": request.query["n"]}


        @router.get("/gt-lt", query={"n": Query(int, gt=-5, lt=5)})
        async def gt_lt(request):
            return {"n": request.query["n"]}


        @router.get("/float-range", query={"x": Query(float, ge=-1.5, le=2.5)})
        async def float_range(request):
            return {"x": request.query["x"]}


        BOUNDED_BODY = {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": -5, "maximum": 5},
                "m": {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": 5},
            },
            "required": ["n"],
        }


        @router.post("/bounded-body", body=BOUNDED_BODY)
        async def bounded_body(request):
            return request.json
    """,
}


@pytest.fixture(scope="module")
def http(server_factory: ServerFactory) -> Iterator[httpx.Client]:
    with server_factory.serve(PROPERTY_APP) as server, server.client(timeout=30.0) as client:
        yield client


# --- routing ---------------------------------------------------------------------------------

I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1
INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
FLOAT_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.I | re.ASCII
)


def parse_int(segment: str) -> int | None:
    if not INT_RE.fullmatch(segment):
        return None
    value = int(segment)
    return value if I64_MIN <= value <= I64_MAX else None


def parse_float(segment: str) -> float | None:
    if not FLOAT_RE.fullmatch(segment):
        return None
    value = float(segment)
    return value if math.isfinite(value) else None


def parse_uuid(segment: str) -> str | None:
    return str(uuid.UUID(segment)) if UUID_RE.fullmatch(segment) else None


Expected = tuple[int, str | None, dict[str, Any]]
"""(status, handler name, path params); for 422 the name of the failing parameter set."""


def route_model(segments: list[str]) -> Expected:
    """Which handler the contract sends `/<segments...>` to, with its typed parameters."""
    n = len(segments)
    head = segments[0] if segments else None
    if n == 0:
        return 200, "root", {}
    if head == "items":
        if n == 1:
            return 200, "items", {}
        if n == 2 or (n == 4 and segments[2] == "tags"):
            item_id = parse_int(segments[1])
            if item_id is None:
                return 422, None, {"item_id": None}
            if n == 2:
                return 200, "item", {"item_id": item_id}
            return 200, "item_tag", {"item_id": item_id, "tag": segments[3]}
    if head == "users" and n == 2:
        if segments[1] == "me":
            return 200, "me", {}
        user_id = parse_uuid(segments[1])
        if user_id is None:
            return 422, None, {"user_id": None}
        return 200, "user", {"user_id": user_id}
    if head == "pair" and n == 3:
        a, b = parse_int(segments[1]), parse_float(segments[2])
        if a is None or b is None:
            failing = {name: None for name, value in (("a", a), ("b", b)) if value is None}
            return 422, None, failing
        return 200, "pair", {"a": a, "b": b}
    if head == "files" and n >= 2:
        return 200, "files", {"rest": "/".join(segments[1:])}
    return 404, None, {}


LITERALS = ["items", "users", "me", "tags", "files", "pair", "Items", "ITEMS", "x"]

text_segments = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="/"
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))

segments_strategy = st.one_of(
    st.sampled_from(LITERALS),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=-1000, max_value=1000).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    text_segments,
)

paths_strategy = st.one_of(
    st.lists(segments_strategy, max_size=5),
    st.tuples(
        st.sampled_from(["items", "users", "pair", "files"]),
        st.lists(segments_strategy, max_size=4),
    ).map(lambda parts: [parts[0], *parts[1]]),
)


@PROPERTY_SETTINGS
@given(segments=paths_strategy)
def test_random_paths_route_to_the_right_handler_or_404(
    http: httpx.Client, segments: list[str]
) -> None:
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    response = http.get(path)
    status, handler, params = route_model(segments)
    assert response.status_code != 500, (path, response.text)
    assert response.status_code == status, (path, segments, response.text)
    payload = response.json()
    if status == 200:
        assert payload["handler"] == handler, (path, payload)
        assert payload["params"] == params, (path, payload)
    elif status == 422:
        failing = {entry["loc"][1] for entry in payload["detail"]}
        assert all(entry["loc"][0] == "path" for entry in payload["detail"]), payload
        assert failing == set(params), (path, payload)
    else:
        assert payload == {"detail": "Not Found"}


# --- query strings ---------------------------------------------------------------------------

query_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10
)
query_keys = st.one_of(st.sampled_from(["a", "b", "c", "a b", "ä"]), query_text)


def query_model(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    last: dict[str, str] = {}
    getlist: dict[str, list[str]] = {}
    for key, value in pairs:
        last[key] = value
        getlist.setdefault(key, []).append(value)
    return {
        "multi": [[key, value] for key, value in pairs],
        "last": {key: last[key] for key in getlist},
        "keys": list(getlist),
        "getlist": getlist,
    }


@PROPERTY_SETTINGS
@given(pairs=st.lists(st.tuples(query_keys, query_text), max_size=20), plus=st.booleans())
def test_query_pairs_round_trip_exactly(
    http: httpx.Client, pairs: list[tuple[str, str]], plus: bool
) -> None:
    encode = quote_plus if plus else quote
    query = "&".join(f"{encode(key, safe='')}={encode(value, safe='')}" for key, value in pairs)
    response = http.get(f"/echo-query?{query}")
    assert response.status_code == 200, (query, response.text)
    assert response.json() == query_model(pairs), query


# --- validation bounds -----------------------------------------------------------------------

numbers = st.one_of(
    st.integers(min_value=-8, max_value=8),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=-(2**70), max_value=2**70),
)


def single_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    entries = response.json()["detail"]
    assert len(entries) == 1, entries
    entry: dict[str, Any] = entries[0]
    return entry


@PROPERTY_SETTINGS
@given(n=numbers)
def test_int_query_against_ge_le(http: httpx.Client, n: int) -> None:
    response = http.get("/ge-le", params={"n": str(n)})
    if -5 <= n <= 5:
        assert response.status_code == 200, response.text
        assert response.json() == {"n": n}
        return
    entry = single_error(response)
    assert entry["loc"] == ["query", "n"]
    if I64_MIN <= n <= I64_MAX:
        assert entry["type"] == ("greater_than_equal" if n < -5 else "less_than_equal"), entry
    else:
        assert entry["type"] in ("int_parsing", "greater_than_equal", "less_than_equal"), entry


@PROPERTY_SETTINGS
@given(n=numbers)
def test_int_query_against_gt_lt(http: httpx.Client, n: int) -> None:
    response = http.get("/gt-lt", params={"n": str(n)})
    if -5 < n < 5:
        assert response.status_code == 200, response.text
        assert response.json() == {"n": n}
        return
    entry = single_error(response)
    assert entry["loc"] == ["query", "n"]
    if I64_MIN <= n <= I64_MAX:
        assert entry["type"] == ("greater_than" if n <= -5 else "less_than"), entry
    else:
        assert entry["type"] in ("int_parsing", "greater_than", "less_than"), entry


@PROPERTY_SETTINGS
@given(
    x=st.one_of(
        st.floats(min_value=-3, max_value=4),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([-1.5, 2.5, -1.5000000000000002, 2.5000000000000004]),
    )
)
def test_float_query_against_ge_le(http: httpx.Client, x: float) -> None:
    response = http.get("/float-range", params={"x": repr(x)})
    if -1.5 <= x <= 2.5:
        assert response.status_code == 200, response.text
        assert response.json() == {"x": x}
        return
    entry = single_error(response)
    assert entry["loc"] == ["query", "x"]
    assert entry["type"] == ("greater_than_equal" if x < -1.5 else "less_than_equal"), entry


@PROPERTY_SETTINGS
@given(n=numbers, m=st.one_of(st.none(), numbers))
def test_body_integers_against_minimum_and_maximum(
    http: httpx.Client, n: int, m: int | None
) -> None:
    body: dict[str, int] = {"n": n} if m is None else {"n": n, "m": m}
    response = http.post("/bounded-body", json=body)
    if any(not (I64_MIN <= value <= U64_MAX) for value in body.values()):
        # JSON integers beyond 64 bits are refused rather than rounded to floats.
        assert response.status_code == 400, response.text
        assert "64 bits" in response.json()["detail"]
        return
    n_ok = -5 <= n <= 5
    m_ok = m is None or -5 < m < 5
    assert response.status_code != 500, response.text
    if n_ok and m_ok:
        assert response.status_code == 200, response.text
        assert response.json() == body
        return
    assert response.status_code == 422, response.text
    entries = response.json()["detail"]
    found = {(tuple(entry["loc"]), entry["type"]) for entry in entries}
    wanted = set()
    if not n_ok:
        wanted.add((("body", "n"), "minimum" if n < -5 else "maximum"))
    if not m_ok:
        assert m is not None
        wanted.add((("body", "m"), "exclusiveMinimum" if m <= -5 else "exclusiveMaximum"))
    assert found == wanted, entries
