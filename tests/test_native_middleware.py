"""The host's own middleware, configured in the TOML file: `[cors]` (preflights answered in Rust,
the CORS headers of actual responses), `[compression]` (gzip, brotli and zstd chosen by
`Accept-Encoding`, decoded here with each format's own library) and `server.allowed_hosts`
(400 for a host the server does not serve)."""

import gzip
import json
from collections.abc import Iterator

import brotli
import httpx
import pytest
import zstandard

from tests.h2client import H2Client
from tests.harness import (
    RawResponse,
    Server,
    ServerFactory,
    make_config,
    parse_response,
    raw_exchange,
    raw_request,
)

# --- CORS ---------------------------------------------------------------------------------

CORS_APP = {
    "app.py": """
        from pyhost import Response, Router

        router = Router()
        reached = {"options": 0}


        @router.get("/calls")
        async def calls(request):
            return dict(reached)


        @router.route("/guarded", methods=["OPTIONS"])
        async def guarded_options(request):
            reached["options"] += 1
            raise RuntimeError("a preflight reached the OPTIONS handler")


        @router.get("/guarded")
        async def guarded(request):
            return {"ok": True}


        @router.get("/items")
        async def items(request):
            return Response({"items": [1, 2]}, headers={"x-total": "2"})


        @router.get("/leaky")
        async def leaky(request):
            return Response(
                "x",
                headers={
                    "access-control-allow-origin": "*",
                    "access-control-allow-credentials": "true",
                    "vary": "Cookie",
                },
            )
    """
}

CORS_CONFIG = """
[cors]
allow_origins = ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]
allow_methods = ["GET", "PUT", "DELETE"]
allow_headers = ["content-type", "x-token"]
expose_headers = ["x-total"]
allow_credentials = true
max_age = 600

[app]
module = "app"
"""

ALLOWED = "https://app.example.com"


@pytest.fixture(scope="module")
def cors_server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(CORS_APP, CORS_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def cors(cors_server: Server) -> Iterator[httpx.Client]:
    with cors_server.client() as http:
        yield http


def preflight(
    http: httpx.Client, path: str, origin: str, method: str, headers: str | None = None
) -> httpx.Response:
    request_headers = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        request_headers["access-control-request-headers"] = headers
    return http.options(path, headers=request_headers)


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def vary(response: httpx.Response) -> list[str]:
    return [
        item.strip().lower()
        for value in response.headers.get_list("vary")
        for item in value.split(",")
        if item.strip()
    ]


def options_calls(http: httpx.Client) -> int:
    response = http.get("/calls")
    assert response.status_code == 200, response.text
    calls: int = response.json()["options"]
    return calls


def test_an_allowed_preflight_is_answered_without_python(cors: httpx.Client) -> None:
    before = options_calls(cors)
    response = preflight(cors, "/guarded", ALLOWED, "PUT", "Content-Type, X-Token")
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-credentials": "true",
        "access-control-allow-methods": "GET, PUT, DELETE",
        "access-control-allow-headers": "content-type, x-token",
        "access-control-max-age": "600",
    }
    assert "origin" in vary(response)
    assert response.headers.get("x-request-id")
    # The OPTIONS route's handler raises: had the preflight reached it, this would be a 500
    # and the count would have moved.
    assert options_calls(cors) == before


def test_a_plain_options_request_still_reaches_its_handler(cors: httpx.Client) -> None:
    # The counter the preflight test relies on does count: OPTIONS without
    # Access-Control-Request-Method is no preflight.
    before = options_calls(cors)
    response = cors.options("/guarded", headers={"origin": ALLOWED})
    assert response.status_code == 500
    assert options_calls(cors) == before + 1


@pytest.mark.parametrize("path", ["/items", "/no/such/route"])
def test_a_preflight_needs_no_options_route(cors: httpx.Client, path: str) -> None:
    assert cors.options(path).status_code in (404, 405)
    response = preflight(cors, path, ALLOWED, "DELETE")
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [
        ("https://evil.test", "GET", None),
        ("https://app.example.com.evil.test", "GET", None),
        ("http://app.example.com", "GET", None),
        (ALLOWED, "PATCH", None),
        (ALLOWED, "PUT", "x-token, x-other"),
    ],
)
def test_a_refused_preflight_gets_403_and_no_cors_headers(
    cors: httpx.Client, origin: str, method: str, headers: str | None
) -> None:
    before = options_calls(cors)
    response = preflight(cors, "/guarded", origin, method, headers)
    assert response.status_code == 403, response.text
    assert cors_headers(response) == {}
    assert response.json()["detail"].startswith("CORS preflight refused")
    assert "origin" in vary(response)
    assert options_calls(cors) == before


def test_safelisted_methods_pass_the_preflight(cors: httpx.Client) -> None:
    # POST is not in allow_methods, but Fetch never asks about the safelisted methods.
    response = preflight(cors, "/items", ALLOWED, "POST", "content-type")
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.org", True),
        ("https://deep.sub.example.org", True),
        ("https://example.org", False),
        ("http://a.example.org", False),
        ("https://a.example.org:8443", False),
        ("https://a.example.org.evil.test", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
    ],
)
def test_wildcard_and_exact_origins(cors: httpx.Client, origin: str, allowed: bool) -> None:
    response = cors.get("/items", headers={"origin": origin})
    assert response.status_code == 200
    assert response.headers.get("access-control-allow-origin") == (origin if allowed else None)
    response = preflight(cors, "/items", origin, "PUT")
    assert response.status_code == (204 if allowed else 403)


def test_an_actual_request_from_an_allowed_origin(cors: httpx.Client) -> None:
    response = cors.get("/items", headers={"origin": ALLOWED})
    assert response.status_code == 200
    assert response.json() == {"items": [1, 2]}
    assert cors_headers(response) == {
        "access-control-allow-origin": ALLOWED,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total",
    }
    assert "origin" in vary(response)
    assert response.headers["x-total"] == "2"


def test_a_disallowed_origin_gets_no_cors_headers(cors: httpx.Client) -> None:
    response = cors.get("/items", headers={"origin": "https://evil.test"})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    # The answer depends on the origin: a cache must not give it to an allowed one.
    assert "origin" in vary(response)
    response = cors.get("/items")
    assert cors_headers(response) == {}
    assert "origin" in vary(response)


def test_host_errors_carry_cors_headers_too(cors: httpx.Client) -> None:
    # A browser script can only read an error whose response allows its origin.
    response = cors.get("/no/such/route", headers={"origin": ALLOWED})
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_the_host_owns_the_cors_headers(cors: httpx.Client) -> None:
    response = cors.get("/leaky", headers={"origin": "https://evil.test"})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert vary(response) == ["cookie", "origin"]


def test_any_origin_without_credentials(server_factory: ServerFactory) -> None:
    config = '[cors]\nallow_origins = ["*"]\nallow_methods = ["*"]\n\n[app]\nmodule = "app"\n'
    with server_factory.serve(CORS_APP, config) as server, server.client() as http:
        response = http.get("/items", headers={"origin": "https://anyone.test"})
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
        # `*` does not depend on the origin: no Vary for it.
        assert "origin" not in vary(response)
        response = preflight(http, "/guarded", "https://anyone.test", "PATCH")
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["access-control-allow-methods"] == "PATCH"
        assert options_calls(http) == 0


def test_credentials_with_any_origin_are_refused_at_load(server_factory: ServerFactory) -> None:
    config = '[cors]\nallow_origins = ["*"]\nallow_credentials = true\n\n[app]\nmodule = "app"\n'
    path = server_factory.write_app(CORS_APP, config)
    result = server_factory.run("check", "--config", str(path))
    assert result.returncode == 1, result.describe()
    assert "key `cors.allow_credentials`" in result.output, result.describe()
    assert str(path) in result.output
    assert "wildcard origin" in result.output


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[cors]\nallow_origin = ["*"]', "cors.allow_origin"),
        ("[cors]\nallow_methods = []", "cors.allow_origins"),
        ('[cors]\nallow_origins = ["https://a.test/"]', "cors.allow_origins[0]"),
        ('[cors]\nallow_origins = ["*"]\nmax_age = "1h"', "cors.max_age"),
        ('[compression]\nencodings = ["deflate"]', "compression.encodings[0]"),
        ("[compression]\nmin_size = false", "compression.min_size"),
        ("[compression]\nlevel = 9", "compression.level"),
        ('[server]\nallowed_hosts = ["a.test:80"]', "server.allowed_hosts[0]"),
        ("[server]\nallowed_hosts = []", "server.allowed_hosts"),
    ],
)
def test_bad_middleware_config_names_the_key(
    server_factory: ServerFactory, table: str, key: str
) -> None:
    path = server_factory.write_app(CORS_APP, f'{table}\n\n[app]\nmodule = "app"\n')
    result = server_factory.run("check", "--config", str(path))
    assert result.returncode == 1, result.describe()
    assert f"key `{key}`" in result.output, result.describe()


# --- compression --------------------------------------------------------------------------

COMPRESSION_APP = {
    "app.py": """
        import gzip

        from pyhost import Response, Router

        router = Router()
        DOC = {"items": [{"id": i, "name": f"item number {i}"} for i in range(400)]}
        TEXT = "pyhost compresses text. " * 200


        @router.get("/json")
        async def json_doc(request):
            return DOC


        @router.get("/text")
        async def text(request):
            return TEXT


        @router.get("/small")
        async def small(request):
            return "tiny " * 20


        @router.get("/pre-encoded")
        async def pre_encoded(request):
            return Response(
                gzip.compress(TEXT.encode(), mtime=0),
                headers={"content-encoding": "gzip"},
                media_type="text/plain",
            )


        @router.get("/png")
        async def png(request):
            return Response(b"\\x89PNG" + bytes(5000), media_type="image/png")


        @router.get("/empty")
        async def empty(request):
            return Response(b"", status=204)


        @router.get("/big")
        async def big(request):
            # Past the size compressed with the tokio worker handed off (block_in_place).
            return "".join(f"line {i}: some text to compress\\n" for i in range(40000))


        @router.get("/tagged")
        async def tagged(request):
            return Response(TEXT, headers={"etag": '"v1"'})
    """
}

DOC = {"items": [{"id": i, "name": f"item number {i}"} for i in range(400)]}
TEXT = ("pyhost compresses text. " * 200).encode()


@pytest.fixture(scope="module")
def compressing(server_factory: ServerFactory) -> Iterator[Server]:
    config = '[compression]\n\n[app]\nmodule = "app"\n'
    with server_factory.serve(COMPRESSION_APP, config) as server:
        yield server


def fetch(server: Server, path: str, accept: str | None, method: str = "GET") -> RawResponse:
    headers = [] if accept is None else [("Accept-Encoding", accept)]
    response = raw_request(server.url, method, path, headers=headers)
    length = response.header("content-length")
    if method != "HEAD" and response.status != 204:
        # Every byte after the head is the body: Content-Length counts the encoded body.
        assert length is not None and int(length) == len(response.after_headers), response
    return response


def decode(response: RawResponse) -> bytes:
    coding = response.header("content-encoding")
    if coding == "gzip":
        return gzip.decompress(response.body)
    if coding == "br":
        return bytes(brotli.decompress(response.body))
    if coding == "zstd":
        return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(response.body))
    assert coding is None, coding
    return response.body


def vary_of(response: RawResponse) -> list[str]:
    return [
        item.strip().lower()
        for value in response.header_list("vary")
        for item in value.split(",")
        if item.strip()
    ]


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_each_encoding_decodes_to_the_body(compressing: Server, coding: str) -> None:
    response = fetch(compressing, "/json", coding)
    assert response.status == 200
    assert response.header("content-encoding") == coding
    assert "accept-encoding" in vary_of(response)
    assert len(response.body) < len(json.dumps(DOC)) // 4
    assert json.loads(decode(response)) == DOC
    text = fetch(compressing, "/text", coding)
    assert text.header("content-encoding") == coding
    assert decode(text) == TEXT


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("gzip;q=0.5, br;q=0.9", "br"),
        ("gzip;q=0.9, br;q=0.5, zstd;q=0.1", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("*", "zstd"),
        ("zstd;q=0, *;q=0.5", "br"),
        ("x-gzip", "gzip"),
        ("identity", None),
        ("gzip;q=0", None),
        ("*;q=0", None),
        ("gzip;q=0.5, identity", None),
        ("deflate", None),
        ("", None),
    ],
)
def test_q_values_choose_the_encoding(
    compressing: Server, accept: str, expected: str | None
) -> None:
    response = fetch(compressing, "/text", accept)
    assert response.status == 200
    assert response.header("content-encoding") == expected
    assert decode(response) == TEXT
    assert "accept-encoding" in vary_of(response)


def test_no_accept_encoding_means_identity_with_vary(compressing: Server) -> None:
    response = fetch(compressing, "/text", None)
    assert response.header("content-encoding") is None
    assert response.body == TEXT
    assert "accept-encoding" in vary_of(response)


def test_head_is_never_compressed(compressing: Server) -> None:
    response = fetch(compressing, "/text", "gzip, br, zstd", method="HEAD")
    assert response.status == 200
    assert response.header("content-encoding") is None
    assert response.header("content-length") == str(len(TEXT))
    assert response.after_headers == b""
    assert "accept-encoding" in vary_of(response)


@pytest.mark.parametrize("path", ["/small", "/png", "/empty"])
def test_what_is_not_worth_compressing_is_not(compressing: Server, path: str) -> None:
    response = fetch(compressing, path, "gzip, br, zstd")
    assert response.header("content-encoding") is None
    # Nothing another Accept-Encoding would change: no Vary either.
    assert "accept-encoding" not in vary_of(response)


def test_a_pre_encoded_response_is_left_alone(compressing: Server) -> None:
    response = fetch(compressing, "/pre-encoded", "br, zstd, gzip")
    assert response.header("content-encoding") == "gzip"
    assert response.body == gzip.compress(TEXT, mtime=0)
    assert gzip.decompress(response.body) == TEXT


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_large_body_is_compressed_off_the_hot_path(compressing: Server, coding: str) -> None:
    expected = "".join(f"line {i}: some text to compress\n" for i in range(40000)).encode()
    assert len(expected) > 1024 * 1024
    response = fetch(compressing, "/big", coding)
    assert response.header("content-encoding") == coding
    assert len(response.body) < len(expected) // 4
    assert decode(response) == expected


def test_a_strong_etag_becomes_weak_when_compressed(compressing: Server) -> None:
    assert fetch(compressing, "/tagged", "gzip").header("etag") == 'W/"v1"'
    assert fetch(compressing, "/tagged", None).header("etag") == '"v1"'


def test_compression_over_http2(compressing: Server) -> None:
    with H2Client(compressing.host, compressing.port) as client:
        stream_id = client.request("/json", extra=[("accept-encoding", "br")])
        stream = client.response(stream_id)
    headers = dict(stream.headers)
    assert stream.status == 200
    assert headers["content-encoding"] == "br"
    assert int(headers["content-length"]) == len(stream.body)
    assert json.loads(brotli.decompress(bytes(stream.body))) == DOC


def test_min_size_encodings_and_media_types_are_configurable(
    server_factory: ServerFactory,
) -> None:
    config = (
        "[compression]\nmin_size = 64\n"
        'encodings = ["gzip"]\nmedia_types = ["text/"]\n\n[app]\nmodule = "app"\n'
    )
    with server_factory.serve(COMPRESSION_APP, config) as server:
        small = fetch(server, "/small", "gzip")
        assert small.header("content-encoding") == "gzip"
        assert gzip.decompress(small.body) == b"tiny " * 20
        # brotli is not among the encodings: identity, not an encoding the config left out.
        assert fetch(server, "/text", "br").header("content-encoding") is None
        assert fetch(server, "/text", "br;q=1, gzip;q=0.1").header("content-encoding") == "gzip"
        # JSON is not text/: left alone.
        assert fetch(server, "/json", "gzip").header("content-encoding") is None


def test_without_compression_nothing_is_touched(server_factory: ServerFactory) -> None:
    with server_factory.serve(COMPRESSION_APP) as server:
        response = fetch(server, "/text", "gzip, br, zstd")
        assert response.header("content-encoding") is None
        assert response.body == TEXT
        assert vary_of(response) == []


# --- allowed hosts ------------------------------------------------------------------------

HOSTS_CONFIG = make_config(
    server='allowed_hosts = ["api.example.com", "*.example.net", "127.0.0.1"]'
)


@pytest.fixture(scope="module")
def hosts_server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(CORS_APP, HOSTS_CONFIG) as server:
        yield server


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("api.example.com", True),
        ("API.Example.Com:8000", True),
        ("api.example.com.", True),
        ("a.example.net", True),
        ("a.b.example.net:443", True),
        ("127.0.0.1:1", True),
        ("example.net", False),
        ("evil.test", False),
        ("api.example.com.evil.test", False),
        ("localhost", False),
        ("127.0.0.2", False),
    ],
)
def test_allowed_hosts(hosts_server: Server, host: str, allowed: bool) -> None:
    with hosts_server.client() as http:
        response = http.get("/items", headers={"host": host})
    if allowed:
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [1, 2]}
    else:
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Bad request: the Host header names a host this server does not serve"
        }
        assert response.headers.get("x-request-id")


def test_allowed_hosts_hold_http2_authority_too(hosts_server: Server) -> None:
    with H2Client(hosts_server.host, hosts_server.port) as client:
        good = client.request("/items")
        bad = client.request("/items", authority="evil.test")
        assert client.response(good).status == 200
        refused = client.response(bad)
    assert refused.status == 400
    assert b"does not serve" in refused.body


def test_an_http10_request_without_host_is_refused(hosts_server: Server) -> None:
    response = parse_response(raw_exchange(hosts_server.url, b"GET /items HTTP/1.0\r\n\r\n"))
    assert response.status == 400


# --- all together -------------------------------------------------------------------------


def test_everything_together_in_every_worker(server_factory: ServerFactory) -> None:
    config = (
        '[server]\nworkers = 2\nshutdown_grace = 5.0\nallowed_hosts = ["127.0.0.1"]\n\n'
        '[cors]\nallow_origins = ["https://app.example.com"]\n\n'
        '[compression]\n\n[app]\nmodule = "app"\n'
    )
    with server_factory.serve(COMPRESSION_APP, config) as server:
        # Each request on a new connection, so both workers' services answer some.
        for _ in range(10):
            response = raw_request(
                server.url,
                "GET",
                "/text",
                headers=[("Origin", ALLOWED), ("Accept-Encoding", "gzip")],
            )
            assert response.status == 200
            assert response.header("content-encoding") == "gzip"
            assert gzip.decompress(response.body) == TEXT
            assert response.header("access-control-allow-origin") == ALLOWED
            # One Vary line naming both.
            assert response.header_list("vary") == ["Origin, Accept-Encoding"]
        with server.client() as http:
            refused = http.get("/text", headers={"host": "evil.test"})
            assert refused.status_code == 400
            allowed = preflight(http, "/text", ALLOWED, "GET")
            assert allowed.status_code == 204
            # The host is checked before a preflight is answered.
            rebound = http.options(
                "/text",
                headers={
                    "host": "evil.test",
                    "origin": ALLOWED,
                    "access-control-request-method": "GET",
                },
            )
            assert rebound.status_code == 400
            assert "access-control-allow-origin" not in rebound.headers
