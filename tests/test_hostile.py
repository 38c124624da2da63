"""A corpus of hostile or malformed requests, each with the status it must get.

Raw cases go over a plain socket exactly as written (an HTTP client would refuse or normalise
most of them); body cases go through httpx. After every case the server must still answer
`GET /health`, and the `/smuggled` route must never have run: its request line is hidden in
the bodies of the request-smuggling shapes, so a server that desynchronised on the framing
would serve it as a second request.

`CLOSED` in an expected set means "the connection was closed without any response".
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.harness import (
    RawResponse,
    Server,
    ServerFactory,
    make_config,
    parse_response,
    raw_exchange,
    raw_request,
)

CLOSED = None

HOSTILE_APP = {
    "app.py": """
        from pyhost import Router

        router = Router()
        counters = {"smuggled": 0}


        @router.get("/health")
        async def health(request):
            return {"ok": True}


        @router.get("/smuggled")
        async def smuggled(request):
            counters["smuggled"] += 1
            return {"smuggled": True}


        @router.get("/counters")
        async def get_counters(request):
            return counters


        @router.post("/echo")
        async def echo(request):
            return {"size": len(request.body)}


        @router.post("/json", body=dict)
        async def json_body(request):
            return {"keys": sorted(request.json)}


        @router.post("/int", body=int)
        async def int_body(request):
            return {"value": request.json, "type": type(request.json).__name__}


        @router.post("/number", body=float)
        async def number_body(request):
            return {"value": request.json}


        @router.get("/items/{item_id:int}")
        async def item(request):
            return {"id": request.path_params["item_id"]}


        @router.get("/files/{rest:path}")
        async def files(request):
            return {"rest": request.path_params["rest"]}


        @router.get("/query")
        async def query(request):
            return {"items": request.query_params.multi_items()}


        @router.get("/whoami")
        async def whoami(request):
            return {"url": request.url, "host": request.headers.getlist("host")}
    """,
}


@pytest.fixture(scope="module")
def app(server_factory: ServerFactory) -> Iterator[Server]:
    # Default limits, but short head/body timeouts so the keep-alive and stalled cases end
    # quickly (an idle keep-alive connection is closed after header_timeout).
    config = make_config(server="header_timeout = 2\nbody_timeout = 3")
    with server_factory.serve(HOSTILE_APP, config) as server:
        yield server


def smuggled_count(server: Server) -> int:
    with server.client() as http:
        count = http.get("/counters").json()["smuggled"]
    assert isinstance(count, int)
    return count


def assert_healthy(server: Server) -> None:
    assert server.is_running(), server.stderr_text()
    with server.client() as http:
        response = http.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}
    assert smuggled_count(server) == 0, "bytes hidden in a body were served as a request"


# --- raw cases -------------------------------------------------------------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def request(
    target: str,
    *headers: str,
    body: bytes = b"",
    method: str = "GET",
    version: str = "HTTP/1.1",
    close: bool = True,
) -> bytes:
    """A request exactly as given, plus `Host` (and `Connection: close` unless `close=False`)."""
    lines = [f"{method} {target} {version}", "Host: pyhost.test", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED
TE_CL_PREFIX = b"%x\r\n" % len(SMUGGLED)
TE_CL_BODY = TE_CL_PREFIX + SMUGGLED + b"\r\n0\r\n\r\n"


@dataclass(frozen=True)
class RawCase:
    id: str
    data: bytes
    expected: frozenset[int | None]
    note: str = ""


def case(id: str, data: bytes, *expected: int | None, note: str = "") -> RawCase:
    return RawCase(id, data, frozenset(expected), note)


RAW_CASES = [
    # The request target.
    case("dot-dot-segment", request("/files/../etc/passwd"), 400),
    case("dot-segment", request("/files/./x"), 400),
    case("encoded-dot-dot", request("/files/%2e%2e/x"), 400),
    case("encoded-dot-dot-upper", request("/files/%2E%2E/x"), 400),
    case("half-encoded-dot-dot", request("/files/.%2e/x"), 400),
    case("trailing-dot-dot", request("/health/.."), 400),
    case("trailing-dot", request("/health/."), 400),
    case("dot-dot-then-query", request("/files/..?x=1"), 400),
    case("dot-dot-on-unrouted-path", request("/nope/../x"), 400),
    case("encoded-dot-dot-on-unrouted-path", request("/nope/%2e%2e/x"), 400),
    case("nul-in-path", request("/files/a%00b"), 400),
    case("invalid-utf8-in-path", request("/files/%ff"), 400),
    case("nul-in-unrouted-path", request("/nope/a%00b"), 400),
    case("invalid-utf8-in-unrouted-path", request("/nope/%ff"), 400),
    case("invalid-utf8-in-query-of-unrouted-path", request("/nope?x=%ff"), 400),
    case("overlong-utf8-in-path", request("/files/%c0%af"), 400),
    case("invalid-utf8-in-query-value", request("/query?x=%ff"), 400),
    case("invalid-utf8-in-query-key", request("/query?%ff=1"), 400),
    case("int-overflow-in-path", request("/items/99999999999999999999999"), 422),
    case("encoded-slash-in-int-segment", request("/items/1%2F2"), 422),
    case("no-leading-slash", request("health"), 400, 404),
    case("absolute-form", request("http://pyhost.test/health"), 200),
    case("asterisk-form", request("*", method="OPTIONS"), 400, 404),
    case("url-over-8192-bytes", request("/files/" + "a" * 8200), 414),
    case("query-over-8192-bytes", request("/query?" + "&".join(["a=1"] * 2100)), 414),
    # The request line.
    case("method-only", b"GET\r\n\r\n", 400),
    case("http-0.9", b"GET /health\r\n\r\n", 400, CLOSED),
    case("unknown-version", request("/health", version="HTTP/9.9"), 400, 505),
    case("http-2.0-over-http1", request("/health", version="HTTP/2.0"), 400, 505),
    case("binary-garbage", b"\x00\x01\x02\x03\xff\xfe\r\n\r\n", 400, CLOSED),
    case("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400),
    case("bad-method-token", request("/health", method="G(T"), 400),
    case("unknown-method", request("/health", method="BREW"), 405),
    case("lower-case-method", request("/health", method="get"), 405),
    case("http-1.0-without-host", b"GET /health HTTP/1.0\r\n\r\n", 200),
    # Host (RFC 9112 3.2): exactly one, a plain host[:port], even with an absolute target.
    case("http-1.1-without-host", b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    case("two-host-headers", request("/health", "Host: other.test"), 400),
    case("same-host-twice", request("/health", "Host: pyhost.test"), 400),
    case("empty-host", b"GET /health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", 400),
    case("host-list", b"GET /health HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n", 400),
    case("userinfo-in-host", b"GET /health HTTP/1.1\r\nHost: u@pyhost.test\r\n\r\n", 400),
    case("userinfo-in-target", request("http://u@pyhost.test/health"), 400),
    case(
        "absolute-form-without-host",
        b"GET http://pyhost.test/health HTTP/1.1\r\nConnection: close\r\n\r\n",
        400,
    ),
    case("http-1.0-with-two-hosts", request("/health", "Host: b", version="HTTP/1.0"), 400),
    # Header syntax and limits.
    case("nul-in-header-value", request("/health", "X-Bad: a\x00b"), 400),
    case("header-without-colon", request("/health", "X-Bad"), 400),
    case("obsolete-line-folding", request("/health", "X-A: a", "  folded"), 400),
    case("space-before-colon", request("/health", "X-A : a"), 400),
    case("non-ascii-header-name", request("/health", "X-\xe9: a"), 400),
    # The default max_headers is 64 (Host and Connection count).
    case("65-headers", request("/health", *(f"X-H{i}: v" for i in range(63))), 431),
    case("64-headers", request("/health", *(f"X-H{i}: v" for i in range(62))), 200),
    case("101-headers", request("/health", *(f"X-H{i}: v" for i in range(99))), 431),
    case("70-KiB-header", request("/health", "X-Big: " + "a" * 70 * 1024), 431),
    case("60-KiB-header", request("/health", "X-Big: " + "a" * 60 * 1024), 200),
    # Content-Length.
    case(
        "cl-not-a-number",
        request("/echo", "Content-Length: abc", body=b"hello", method="POST"),
        400,
    ),
    case("cl-negative", request("/echo", "Content-Length: -1", body=b"hello", method="POST"), 400),
    case("cl-plus-sign", request("/echo", "Content-Length: +5", body=b"hello", method="POST"), 400),
    case("cl-hex", request("/echo", "Content-Length: 0x5", body=b"hello", method="POST"), 400),
    case(
        "cl-overflow",
        request("/echo", "Content-Length: 99999999999999999999999", body=b"x", method="POST"),
        400,
        413,
    ),
    case(
        "cl-duplicate-conflicting",
        request("/echo", "Content-Length: 5", "Content-Length: 6", body=b"hello!", method="POST"),
        400,
    ),
    case(
        "cl-duplicate-equal",
        request("/echo", "Content-Length: 5", "Content-Length: 5", body=b"hello", method="POST"),
        200,
        400,
    ),
    case("cl-list", request("/echo", "Content-Length: 5, 6", body=b"hello!", method="POST"), 400),
    case(
        "cl-over-body-limit",
        request("/echo", "Content-Length: 2000000", "Content-Type: text/plain", method="POST"),
        413,
    ),
    # Request smuggling shapes (keep-alive, so a desynchronised server would answer twice).
    case(
        "cl-te",
        request(
            "/echo",
            f"Content-Length: {len(CL_TE_BODY)}",
            "Transfer-Encoding: chunked",
            body=CL_TE_BODY,
            method="POST",
            close=False,
        ),
        200,
        400,
        CLOSED,
    ),
    case(
        "te-cl",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            f"Content-Length: {len(TE_CL_PREFIX)}",
            body=TE_CL_BODY,
            method="POST",
            close=False,
        ),
        200,
        400,
        CLOSED,
    ),
    case(
        "cl-te-on-get",
        request(
            "/health",
            f"Content-Length: {len(CL_TE_BODY)}",
            "Transfer-Encoding: chunked",
            body=CL_TE_BODY,
            close=False,
        ),
        200,
        400,
        CLOSED,
    ),
    case(
        "te-te-obfuscated",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            "Transfer-encoding: cow",
            f"Content-Length: {len(TE_CL_PREFIX)}",
            body=TE_CL_BODY,
            method="POST",
            close=False,
        ),
        400,
        CLOSED,
    ),
    case(
        "te-xchunked",
        request(
            "/echo",
            "Transfer-Encoding: xchunked",
            f"Content-Length: {len(TE_CL_PREFIX)}",
            body=TE_CL_BODY,
            method="POST",
            close=False,
        ),
        400,
        CLOSED,
    ),
    case(
        "te-space-before-colon",
        request(
            "/echo",
            "Transfer-Encoding : chunked",
            f"Content-Length: {len(TE_CL_PREFIX)}",
            body=TE_CL_BODY,
            method="POST",
            close=False,
        ),
        400,
        CLOSED,
    ),
    case(
        "te-chunked-then-identity",
        request(
            "/echo",
            "Transfer-Encoding: chunked, identity",
            body=chunk(b"hi") + b"0\r\n\r\n",
            method="POST",
        ),
        400,
        CLOSED,
    ),
    case(
        "te-identity",
        request("/echo", "Transfer-Encoding: identity", body=b"hello", method="POST"),
        400,
        CLOSED,
    ),
    case(
        "te-on-http-1.0",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            body=chunk(b"hello") + b"0\r\n\r\n",
            method="POST",
            version="HTTP/1.0",
        ),
        400,
        CLOSED,
    ),
    # Chunked encoding.
    case(
        "chunk-size-not-hex",
        request(
            "/echo", "Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n", method="POST"
        ),
        400,
        CLOSED,
    ),
    case(
        "chunk-size-overflow",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            body=b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            method="POST",
        ),
        400,
        413,
        CLOSED,
    ),
    case(
        "chunk-size-negative",
        request(
            "/echo", "Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n", method="POST"
        ),
        400,
        CLOSED,
    ),
    case(
        "chunk-data-without-crlf",
        request(
            "/echo", "Transfer-Encoding: chunked", body=b"5\r\nhelloXX0\r\n\r\n", method="POST"
        ),
        400,
        CLOSED,
    ),
    case(
        "chunked-over-body-limit",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            body=b"".join(chunk(b"z" * 65536) for _ in range(20)) + b"0\r\n\r\n",
            method="POST",
        ),
        413,
        note="1.25 MiB in chunks against the default 1 MiB limit",
    ),
    case(
        "valid-chunked",
        request(
            "/echo",
            "Transfer-Encoding: chunked",
            body=chunk(b"hello") + chunk(b"!") + b"0\r\n\r\n",
            method="POST",
        ),
        200,
    ),
    # A body on GET is read and ignored; it does not leak into the next request.
    case("body-on-get", request("/health", "Content-Length: 5", body=b"hello"), 200),
    case("garbage-body-on-get", request("/health", "Content-Length: 3", body=b"\x00\xff{"), 200),
]


def exchange(server: Server, data: bytes) -> tuple[RawResponse | None, bytes]:
    """Send `data`, read until the server closes, and parse the first response (None if none)."""
    raw = raw_exchange(server.url, data, timeout=20)
    return (parse_response(raw) if raw else None), raw


@pytest.mark.parametrize("hostile", RAW_CASES, ids=[c.id for c in RAW_CASES])
def test_raw_case(app: Server, hostile: RawCase) -> None:
    response, raw = exchange(app, hostile.data)
    status = response.status if response is not None else CLOSED
    assert status in hostile.expected, (
        f"{hostile.id}: got {status}, expected one of {sorted(hostile.expected, key=str)}; "
        f"response {raw[:300]!r}"
    )
    # At most one response per connection: nothing in the bytes was served as a request.
    assert raw.count(b"HTTP/1.1 ") + raw.count(b"HTTP/1.0 ") <= 1, raw
    assert b"smuggled" not in raw, raw
    if response is not None and response.status >= 500:
        pytest.fail(f"{hostile.id}: server error {raw[:500]!r}")
    assert_healthy(app)


def test_host_generated_client_errors_have_a_json_detail(app: Server) -> None:
    for target in ("/files/../x", "/files/a%00b", "/files/%ff", "/query?x=%ff"):
        response = raw_request(app.url, "GET", target)
        assert response.status == 400, target
        assert response.header("content-type") == "application/json", target
        assert isinstance(response.json().get("detail"), str), target
        assert response.header("x-request-id"), target


def test_414_has_a_json_detail(app: Server) -> None:
    response = raw_request(app.url, "GET", "/files/" + "a" * 9000)
    assert response.status == 414
    assert isinstance(response.json().get("detail"), str)


def test_url_of_exactly_the_limit_is_routed(app: Server) -> None:
    target = "/files/" + "a" * (8192 - len("/files/"))
    assert len(target) == 8192
    response = raw_request(app.url, "GET", target)
    assert response.status == 200
    assert response.json() == {"rest": "a" * (8192 - len("/files/"))}


def test_an_absolute_target_names_the_host_and_host_is_ignored(app: Server) -> None:
    # RFC 9112 3.2.2: the target's authority wins; handlers see it as Host and in the URL.
    response = raw_request(app.url, "GET", "http://target.test:81/whoami?x=1")
    assert response.status == 200, response.body
    assert response.json() == {
        "url": "http://target.test:81/whoami?x=1",
        "host": ["target.test:81"],
    }


def test_pipelined_request_after_a_get_body_is_served_once(app: Server) -> None:
    # The GET's body is consumed by its Content-Length; the request after it is a real one.
    data = request("/health", "Content-Length: 5", body=b"hello", close=False) + request(
        "/files/next"
    )
    raw = raw_exchange(app.url, data, timeout=20)
    assert raw.count(b"HTTP/1.1 ") == 2, raw
    first_end = raw.index(b"HTTP/1.1 ", 1)
    assert parse_response(raw[:first_end]).json() == {"ok": True}
    assert parse_response(raw[first_end:]).json() == {"rest": "next"}
    assert_healthy(app)


def test_pipelined_requests_on_one_connection(app: Server) -> None:
    data = b"".join(request(f"/files/{n}", close=False) for n in range(5)) + request("/files/last")
    raw = raw_exchange(app.url, data, timeout=20)
    assert raw.count(b"HTTP/1.1 200") == 6, raw


# --- body cases (httpx) -----------------------------------------------------------------------

JSON = {"content-type": "application/json"}
DEPTH = 100_000


@dataclass(frozen=True)
class BodyCase:
    id: str
    method: str
    path: str
    expected: frozenset[int]
    kwargs: dict[str, Any] = field(default_factory=dict)


def body_case(id: str, method: str, path: str, *expected: int, **kwargs: Any) -> BodyCase:
    return BodyCase(id, method, path, frozenset(expected), kwargs)


BODY_CASES = [
    body_case("invalid-json", "POST", "/json", 400, content=b'{"a": ', headers=JSON),
    body_case("empty-json-body", "POST", "/json", 400, 422, content=b"", headers=JSON),
    body_case("trailing-garbage", "POST", "/json", 400, content=b'{"a": 1} x', headers=JSON),
    body_case("nan-literal", "POST", "/json", 400, content=b'{"a": NaN}', headers=JSON),
    body_case("invalid-utf8-json", "POST", "/json", 400, content=b'{"a": "\xff"}', headers=JSON),
    body_case(
        "lone-surrogate-escape",
        "POST",
        "/json",
        400,
        422,
        content=b'{"a": "\\ud800"}',
        headers=JSON,
    ),
    body_case("utf8-bom", "POST", "/json", 200, 400, content=b'\xef\xbb\xbf{"a": 1}', headers=JSON),
    body_case(
        "nested-arrays-100000",
        "POST",
        "/json",
        400,
        content=b'{"a": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
        headers=JSON,
    ),
    body_case(
        "nested-objects-100000",
        "POST",
        "/json",
        400,
        content=b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        headers=JSON,
    ),
    body_case("unclosed-nesting-100000", "POST", "/json", 400, content=b"[" * DEPTH, headers=JSON),
    body_case("1e400-in-object", "POST", "/json", 400, 422, content=b'{"x": 1e400}', headers=JSON),
    body_case("minus-1e400", "POST", "/number", 400, 422, content=b"-1e400", headers=JSON),
    body_case("1e400-number", "POST", "/number", 400, 422, content=b"1e400", headers=JSON),
    body_case("1e400-int", "POST", "/int", 400, 422, content=b"1e400", headers=JSON),
    body_case("400-digit-int", "POST", "/int", 400, 422, content=b"9" * 400, headers=JSON),
    body_case(
        "400-digit-negative-int", "POST", "/int", 400, 422, content=b"-" + b"9" * 400, headers=JSON
    ),
    body_case(
        "400-digit-in-object",
        "POST",
        "/json",
        400,
        422,
        content=b'{"x": ' + b"7" * 400 + b"}",
        headers=JSON,
    ),
    body_case("float-for-int", "POST", "/int", 422, content=b"1.5", headers=JSON),
    body_case("wrong-type-for-object", "POST", "/json", 422, content=b"[1, 2]", headers=JSON),
    body_case(
        "text-plain", "POST", "/json", 415, content=b"{}", headers={"content-type": "text/plain"}
    ),
    body_case("form-urlencoded", "POST", "/json", 415, data={"a": "1"}),
    body_case(
        "multipart", "POST", "/json", 415, files={"f": ("f.json", b"{}", "application/json")}
    ),
    body_case(
        "json-with-charset",
        "POST",
        "/json",
        200,
        content=b"{}",
        headers={"content-type": "application/json; charset=utf-8"},
    ),
    body_case("body-over-limit", "POST", "/echo", 413, content=b"x" * (2 * 1024 * 1024)),
    body_case("garbage-body-on-get", "GET", "/health", 200, content=b"{not json"),
    body_case("json-body-on-get", "GET", "/health", 200, json={"a": 1}),
]


@pytest.mark.parametrize("hostile", BODY_CASES, ids=[c.id for c in BODY_CASES])
def test_body_case(app: Server, hostile: BodyCase) -> None:
    with app.client(timeout=30.0) as http:
        response = http.request(hostile.method, hostile.path, **hostile.kwargs)
    assert response.status_code in hostile.expected, (
        f"{hostile.id}: got {response.status_code}, expected one of {sorted(hostile.expected)}; "
        f"{response.text[:300]}"
    )
    if response.status_code >= 400:
        payload = response.json()
        assert "detail" in payload, payload
    assert_healthy(app)


def test_get_body_is_ignored_by_the_handler(app: Server) -> None:
    with app.client() as http:
        response = http.request("GET", "/query?a=1", content=b"b=2")
    assert response.status_code == 200
    assert response.json() == {"items": [["a", "1"]]}


def test_integer_beyond_64_bits_is_not_silently_rounded(app: Server) -> None:
    # An `int` body either arrives exactly or is refused; it never becomes a rounded float.
    for value in (2**64 + 1, -(2**63) - 1, 10**30):
        with app.client() as http:
            response = http.post("/int", content=str(value).encode(), headers=JSON)
        if response.status_code == 200:
            assert response.json() == {"value": value, "type": "int"}, (value, response.text)
        else:
            assert response.status_code in (400, 422), (value, response.text)


def test_integers_within_64_bits_arrive_exactly(app: Server) -> None:
    for value in (2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1):
        with app.client() as http:
            response = http.post("/int", content=str(value).encode(), headers=JSON)
        assert response.status_code == 200, (value, response.text)
        assert response.json() == {"value": value, "type": "int"}


# --- configured limits ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(server_factory: ServerFactory) -> Iterator[Server]:
    config = make_config(
        server="""
            max_headers = 10
            max_head_size = "8 KiB"
            max_url_length = 100
            body_limit = "1 KiB"
        """
    )
    with server_factory.serve(HOSTILE_APP, config) as server:
        yield server


LIMIT_CASES = [
    # raw_request adds Host and Connection: 8 more headers make 10.
    ("10-headers", "/health", 8, 0, 200),
    ("11-headers", "/health", 9, 0, 431),
    ("6-KiB-head", "/health", 0, 6 * 1024, 200),
    ("10-KiB-head", "/health", 0, 10 * 1024, 431),
    ("url-of-100", "/files/" + "a" * 93, 0, 0, 200),
    ("url-of-101", "/files/" + "a" * 94, 0, 0, 414),
    ("query-makes-it-101", "/query?q=" + "a" * 92, 0, 0, 414),
]


@pytest.mark.parametrize(
    ("target", "extra_headers", "header_bytes", "expected"),
    [case[1:] for case in LIMIT_CASES],
    ids=[case[0] for case in LIMIT_CASES],
)
def test_configured_head_limits(
    limited: Server, target: str, extra_headers: int, header_bytes: int, expected: int
) -> None:
    headers = [(f"X-H{i}", "v") for i in range(extra_headers)]
    if header_bytes:
        headers.append(("X-Big", "a" * header_bytes))
    response = raw_request(limited.url, "GET", target, headers=headers)
    assert response.status == expected, response
    assert_healthy(limited)


# The service answers a head over `max_headers` or `max_head_size` itself, with its JSON body
# and an id; hyper reads a head up to twice those limits (and at least 100 header lines), and
# refuses one beyond them itself.
SERVICE_ANSWERS = [
    # raw_request adds Host and Connection: 9 more headers make 11, 18 more make 20.
    ("11-headers", 9, 0, "too many request headers: the limit is 10"),
    ("20-headers", 18, 0, "too many request headers: the limit is 10"),
    ("9-KiB-head", 0, 9 * 1024, "request head too large: the limit is 8192 bytes"),
    ("almost-16-KiB-head", 0, 16 * 1024 - 200, "request head too large: the limit is 8192 bytes"),
]


@pytest.mark.parametrize(
    ("extra_headers", "header_bytes", "detail"),
    [case[1:] for case in SERVICE_ANSWERS],
    ids=[case[0] for case in SERVICE_ANSWERS],
)
def test_a_head_over_a_limit_gets_a_json_answer_with_an_id(
    limited: Server, extra_headers: int, header_bytes: int, detail: str
) -> None:
    headers = [(f"X-H{i}", "v") for i in range(extra_headers)]
    if header_bytes:
        headers.append(("X-Big", "a" * header_bytes))
    response = raw_request(limited.url, "GET", "/health", headers=headers)
    assert response.status == 431, response
    assert response.header("content-type") == "application/json"
    assert response.json() == {"detail": detail}
    assert response.header("x-request-id")
    assert response.header("connection") == "close"
    assert_healthy(limited)


# What hyper answers by itself, for the `limited` server: no body, no `x-request-id`, and the
# connection closed. The README lists these exceptions.
HYPER_ANSWERS = [
    # hyper reads up to 100 header lines (its stack arrays) when max_headers is below that.
    case("101-headers", request("/health", *(f"X-H{i}: v" for i in range(99))), 431),
    # hyper reads at least twice max_head_size, sometimes a little more: far beyond it.
    case("64-KiB-head", request("/health", "X-Big: " + "a" * 64 * 1024), 431),
    case("space-in-target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    case("bad-method-token", request("/health", method="G(T"), 400),
    case("unknown-version", request("/health", version="HTTP/9.9"), 400),
    case("binary-garbage", b"\x00\x01\x02\x03\xff\xfe\r\n\r\n", 400),
    case("header-without-colon", request("/health", "X-Bad"), 400),
    case("nul-in-header-value", request("/health", "X-Bad: a\x00b"), 400),
    case("obsolete-line-folding", request("/health", "X-A: a", "  folded"), 400),
    case("cl-not-a-number", request("/health", "Content-Length: abc", body=b"hello"), 400),
    case(
        "cl-duplicate-conflicting",
        request("/echo", "Content-Length: 5", "Content-Length: 6", body=b"hello!", method="POST"),
        400,
    ),
]


@pytest.mark.parametrize("hostile", HYPER_ANSWERS, ids=[c.id for c in HYPER_ANSWERS])
def test_what_hyper_answers_by_itself(limited: Server, hostile: RawCase) -> None:
    response, raw = exchange(limited, hostile.data)
    assert response is not None, raw
    assert response.status in hostile.expected, raw
    assert sorted(name.lower() for name, _ in response.headers) == [
        "connection",
        "content-length",
        "date",
    ], raw
    assert response.header("connection") == "close"
    assert response.header("content-length") == "0"
    assert response.after_headers == b"", raw
    assert_healthy(limited)


@pytest.mark.parametrize("length", [70_000, 131_000])
def test_a_target_beyond_hypers_own_limit_gets_hypers_414(app: Server, length: int) -> None:
    # hyper refuses a target over 65,534 bytes itself, whatever max_url_length says.
    response, raw = exchange(app, request("/files/" + "a" * length))
    assert response is not None, raw
    assert response.status == 414, raw
    assert response.header("x-request-id") is None
    assert response.after_headers == b"", raw
    assert_healthy(app)


def test_configured_body_limit_applies_to_chunked_bodies(limited: Server) -> None:
    data = request(
        "/echo",
        "Transfer-Encoding: chunked",
        body=chunk(b"x" * 700) + chunk(b"y" * 700) + b"0\r\n\r\n",
        method="POST",
    )
    response, raw = exchange(limited, data)
    assert response is not None, raw
    assert response.status == 413
    assert_healthy(limited)


def test_httpx_sees_431_for_a_huge_header(limited: Server) -> None:
    with limited.client() as http:
        response = http.get("/health", headers={"x-big": "a" * 9000})
    assert response.status_code == 431
    with limited.client() as http:
        assert http.get("/health").status_code == 200


def test_connection_refusing_garbage_does_not_stop_other_clients(app: Server) -> None:
    with httpx.Client(base_url=app.url, trust_env=False, timeout=10) as http:
        for _ in range(5):
            exchange(app, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)
            assert http.get("/health").status_code == 200
