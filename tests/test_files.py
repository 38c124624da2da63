"""Files sent by Rust: `FileResponse` and the `[static]` mounts.

Both answer from the same code (`host/src/streaming/file.rs`), so most checks run against both:
the headers (`Content-Type`, `Content-Length`, a strong `ETag`, `Last-Modified`,
`Accept-Ranges`), the preconditions (304, 412), single ranges (206, 416, `If-Range`), `HEAD`,
over HTTP/1.1 and HTTP/2. Then the attacks: traversal written on a raw socket (so no client
normalises it), symlinks out of the directory, a client that reads slowly or not at all while a
large file is sent, with the server's resident memory watched.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.h2client import H2Client
from tests.harness import (
    RawResponse,
    Server,
    ServerFactory,
    base_env,
    make_config,
    raw_request,
    rss,
    wait_until,
)

MIB = 1 << 20
BIG_SIZE = 128 * MIB
RSS_BOUND = 48 * MIB
"""How far above idle the server's resident memory may go while the big file is sent."""
TEXT = b"hello, files!\n" * 100
SECRET = b"top secret, outside the mount\n"


@dataclass
class Tree:
    root: Path
    public: Path
    big: Path
    big_sha256: str


def _write_big(path: Path) -> str:
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for index in range(BIG_SIZE // MIB):
            # Each MiB differs, so a misplaced chunk changes the digest.
            piece = index.to_bytes(8, "little") + block[8:]
            digest.update(piece)
            out.write(piece)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("files")
    public = root / "public"
    (public / "docs").mkdir(parents=True)
    (public / "sub").mkdir()
    (public / "hello.txt").write_bytes(TEXT)
    (public / "index.html").write_text("<h1>root index</h1>")
    (public / "docs" / "index.html").write_text("<h1>docs</h1>")
    (public / "sub" / "page.json").write_text('{"ok": true}')
    (public / "café.txt").write_text("accented")
    (public / ".env").write_text("SECRET=1")
    (root / "secret.txt").write_bytes(SECRET)
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_bytes(SECRET)
    (public / "escape.txt").symlink_to(root / "secret.txt")
    (public / "escape_dir").symlink_to(root / "outside")
    (public / "inner.txt").symlink_to(public / "hello.txt")
    big = public / "big.bin"
    return Tree(root, public, big, _write_big(big))


def app_files(tree: Tree) -> dict[str, str]:
    return {
        "app.py": f"""
            from pyhost import FileResponse, Router

            router = Router()
            PUBLIC = {str(tree.public)!r}


            @router.get("/file")
            async def file(request):
                return FileResponse(PUBLIC + "/hello.txt")


            @router.get("/download")
            async def download(request):
                return FileResponse(PUBLIC + "/hello.txt", filename="Übersicht \\"2026\\".txt")


            @router.get("/inline")
            async def inline(request):
                return FileResponse(
                    PUBLIC + "/hello.txt", filename="a.txt", content_disposition_type="inline"
                )


            @router.get("/typed")
            async def typed(request):
                return FileResponse(PUBLIC + "/hello.txt", media_type="application/x-custom",
                                    headers={{"cache-control": "max-age=60"}})


            @router.get("/named")
            def named(request):
                return FileResponse(PUBLIC + "/big.bin", filename="picture.png")


            @router.get("/gone")
            async def gone(request):
                return FileResponse(PUBLIC + "/no-such-file.txt")


            @router.get("/directory")
            async def directory(request):
                return FileResponse(PUBLIC + "/docs")


            @router.get("/teapot")
            async def teapot(request):
                return FileResponse(PUBLIC + "/hello.txt", status=418)


            @router.get("/big")
            async def big(request):
                return FileResponse(PUBLIC + "/big.bin")


            @router.get("/static/shadowed")
            async def shadowed(request):
                return "from the route"


            @router.get("/hello")
            async def hello(request):
                return "hello"
        """,
    }


def files_config(tree: Tree, server: str = "") -> str:
    return make_config(server=server) + f'\n[static]\n"/static" = {str(tree.public)!r}\n'


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, tree: Tree) -> Iterator[Server]:
    # send_timeout 2 s: the stalled reader below is closed quickly. The purge delay at 0 makes
    # resident memory show what the server holds (see tests/test_slow_clients.py).
    config = files_config(tree, server="send_timeout = 2")
    env = base_env(MIMALLOC_PURGE_DELAY="0")
    with server_factory.serve(app_files(tree), config, env=env) as server:
        yield server


def get(server: Server, target: str, *headers: tuple[str, str], method: str = "GET") -> RawResponse:
    """One request written as given (no client normalises the path)."""
    return raw_request(server.url, method, target, headers=headers)


FILE_TARGETS = ["/file", "/static/hello.txt"]


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_a_file_is_sent_with_its_validators(server: Server, tree: Tree, target: str) -> None:
    response = get(server, target)
    assert response.status == 200
    assert response.body == TEXT
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert response.header("content-length") == str(len(TEXT))
    assert response.header("transfer-encoding") is None
    assert response.header("accept-ranges") == "bytes"
    etag = response.header("etag")
    assert etag is not None and etag.startswith('"') and not etag.startswith("W/")
    stat = (tree.public / "hello.txt").stat()
    assert etag == f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    modified = response.header("last-modified")
    assert modified == email.utils.formatdate(int(stat.st_mtime), usegmt=True)
    assert response.header("x-request-id")


def test_file_response_and_static_mount_agree(server: Server) -> None:
    a, b = get(server, "/file"), get(server, "/static/hello.txt")
    for name in ("etag", "last-modified", "content-type", "content-length", "accept-ranges"):
        assert a.header(name) == b.header(name), name


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_preconditions(server: Server, target: str) -> None:
    first = get(server, target)
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag and modified
    cases: list[tuple[list[tuple[str, str]], int]] = [
        ([("If-None-Match", etag)], 304),
        ([("If-None-Match", f"W/{etag}")], 304),
        ([("If-None-Match", f'"other", {etag}')], 304),
        ([("If-None-Match", "*")], 304),
        ([("If-None-Match", '"other"')], 200),
        ([("If-Modified-Since", modified)], 304),
        ([("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], 200),
        ([("If-Modified-Since", "not a date")], 200),
        # If-None-Match wins over If-Modified-Since (RFC 9110 §13.1.3).
        ([("If-None-Match", '"other"'), ("If-Modified-Since", modified)], 200),
        ([("If-Match", '"other"')], 412),
        ([("If-Match", f"W/{etag}")], 412),
        ([("If-Match", etag)], 200),
        ([("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")], 412),
        ([("If-Unmodified-Since", modified)], 200),
    ]
    for headers, status in cases:
        response = get(server, target, *headers)
        assert response.status == status, headers
        if status == 304:
            assert response.after_headers == b"", headers
            assert response.header("etag") == etag
            assert response.header("last-modified") == modified
        if status == 200:
            assert response.body == TEXT


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_single_ranges(server: Server, target: str) -> None:
    size = len(TEXT)
    etag = get(server, target).header("etag")
    modified = get(server, target).header("last-modified")
    assert etag and modified
    cases = [
        ("bytes=0-4", 0, 4),
        ("bytes=10-", 10, size - 1),
        ("bytes=-7", size - 7, size - 1),
        ("bytes=5-999999", 5, size - 1),
        ("bytes=-999999", 0, size - 1),
        ("bytes=7-7", 7, 7),
    ]
    for spec, first, last in cases:
        response = get(server, target, ("Range", spec))
        assert response.status == 206, spec
        assert response.header("content-range") == f"bytes {first}-{last}/{size}", spec
        assert response.header("content-length") == str(last - first + 1)
        assert response.body == TEXT[first : last + 1], spec
    # Under If-Range: a current validator keeps the range, a stale one gets the whole file.
    for validator, status in [(etag, 206), (modified, 206), ('"stale"', 200), (f"W/{etag}", 200)]:
        response = get(server, target, ("Range", "bytes=0-4"), ("If-Range", validator))
        assert response.status == status, validator
        assert response.body == (TEXT[:5] if status == 206 else TEXT)


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_unsatisfiable_and_ignored_ranges(server: Server, target: str) -> None:
    size = len(TEXT)
    for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = get(server, target, ("Range", spec))
        assert response.status == 416, spec
        assert response.header("content-range") == f"bytes */{size}", spec
    # Several ranges, another unit, or nonsense: the whole file (RFC 9110 allows ignoring).
    for spec in ("bytes=0-1,5-6", "lines=0-1", "bytes=5-1", "bytes=x-y"):
        response = get(server, target, ("Range", spec))
        assert response.status == 200, spec
        assert response.body == TEXT


@pytest.mark.parametrize("target", FILE_TARGETS)
def test_head_has_the_get_headers_and_no_body(server: Server, target: str) -> None:
    got = get(server, target)
    head = get(server, target, method="HEAD")
    assert head.status == 200
    assert head.after_headers == b""
    for name in ("content-length", "content-type", "etag", "last-modified", "accept-ranges"):
        assert head.header(name) == got.header(name), name
    # Ranges are for GET alone (RFC 9110 §14.2): HEAD with one answers the whole file's head.
    ranged = get(server, target, ("Range", "bytes=0-4"), method="HEAD")
    assert ranged.status == 200 and ranged.header("content-length") == str(len(TEXT))
    assert ranged.after_headers == b""
    revalidated = get(server, target, ("If-None-Match", got.header("etag") or ""), method="HEAD")
    assert revalidated.status == 304


def test_content_disposition_encodes_a_non_ascii_name(server: Server) -> None:
    response = get(server, "/download")
    assert response.status == 200
    assert response.header("content-disposition") == (
        'attachment; filename="_bersicht _2026_.txt"; '
        "filename*=UTF-8''%C3%9Cbersicht%20%222026%22.txt"
    )
    assert get(server, "/inline").header("content-disposition") == 'inline; filename="a.txt"'


def test_media_type_and_headers_from_the_handler(server: Server) -> None:
    typed = get(server, "/typed")
    assert typed.header("content-type") == "application/x-custom"
    assert typed.header("cache-control") == "max-age=60"
    assert typed.body == TEXT
    # The download name's extension, not the path's, gives the type.
    named = get(server, "/named", method="HEAD")
    assert named.header("content-type") == "image/png"
    assert named.header("content-disposition") == 'attachment; filename="picture.png"'
    # Another status: sent as it is, no preconditions or ranges.
    teapot = get(server, "/teapot", ("Range", "bytes=0-1"), ("If-None-Match", "*"))
    assert teapot.status == 418 and teapot.body == TEXT


def test_a_missing_or_unreadable_file_is_a_clear_error(server: Server) -> None:
    gone = get(server, "/gone")
    assert gone.status == 404
    assert gone.json() == {"detail": "Not Found"}
    request_id = gone.header("x-request-id")
    log = server.wait_for_stderr("no-such-file.txt")
    assert f"request {request_id}: FileResponse names" in log
    directory = get(server, "/directory")
    assert directory.status == 500
    assert "could not be read" in directory.json()["detail"]
    log = server.wait_for_stderr("is not a regular file")
    assert f"request {directory.header('x-request-id')}" in log
    assert get(server, "/hello").body == b"hello"


def test_static_directories_index_and_redirect(server: Server) -> None:
    docs = get(server, "/static/docs/")
    assert docs.status == 200 and docs.body == b"<h1>docs</h1>"
    assert docs.header("content-type") == "text/html; charset=utf-8"
    redirect = get(server, "/static/docs?x=1")
    assert redirect.status == 308
    assert redirect.header("location") == "/static/docs/?x=1"
    assert get(server, "/static").header("location") == "/static/"
    assert get(server, "/static/").body == b"<h1>root index</h1>"
    assert get(server, "/static/sub").status == 404  # a directory without an index
    assert get(server, "/static/sub/").status == 404
    page = get(server, "/static/sub/page.json")
    assert page.status == 200 and page.header("content-type") == "application/json"
    assert get(server, "/static/caf%C3%A9.txt").body == b"accented"
    assert get(server, "/static/nothing.txt").status == 404
    assert get(server, "/static/hello.txt/").status == 404
    assert get(server, "/static/inner.txt").body == TEXT  # a symlink inside the directory


def test_static_answers_get_and_head_only(server: Server) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = get(server, "/static/hello.txt", method=method)
        assert response.status == 405, method
        assert response.header("allow") == "GET, HEAD"
    # OPTIONS is left to admission (CORS preflights); no route takes it here.
    assert get(server, "/static/hello.txt", method="OPTIONS").status == 404


def test_a_mount_takes_precedence_over_routes(server: Server) -> None:
    # `/static/shadowed` is also a route; the mount owns its prefix, the route is not reached.
    response = get(server, "/static/shadowed")
    assert response.status == 404
    assert b"from the route" not in response.body
    log = server.stderr_text()
    assert "/static/shadowed" in log and "[static]" in log, log
    assert get(server, "/staticx").status == 404  # not under the prefix: routed as usual


TRAVERSALS = [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/..%5csecret.txt",
    "/static/..\\secret.txt",
    "/static/%2e%2e%5c%2e%2e%5csecret.txt",
    "/static//secret.txt",
    "/static/%2f..%2fsecret.txt",
    "/static/hello.txt%00.png",
    "/static/%00",
    "/static/./hello.txt",
    "/static/%252e%252e/secret.txt",
    "/static/.env",
    "/static/%2eenv",
    "/static/escape.txt",
    "/static/escape_dir/secret.txt",
    "/static/escape_dir/",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused_over_http1(server: Server, target: str) -> None:
    response = get(server, target)
    assert response.status in (400, 404), (target, response.status)
    assert SECRET not in response.body and b"SECRET" not in response.body
    assert response.header("content-type") == "application/json"


def test_traversal_is_refused_over_h2(server: Server) -> None:
    with H2Client(server.host, server.port) as client:
        ids = {target: client.request(target) for target in TRAVERSALS}
        for target, stream_id in ids.items():
            stream = client.response(stream_id)
            assert stream.status in (400, 404), (target, stream.status)
            assert SECRET not in stream.body and b"SECRET" not in stream.body


def test_h2_serves_files_ranges_and_304(server: Server) -> None:
    with H2Client(server.host, server.port) as client:
        for target in FILE_TARGETS:
            stream = client.response(client.request(target))
            assert stream.status == 200
            headers = dict(stream.headers)
            assert bytes(stream.body) == TEXT
            assert headers["content-length"] == str(len(TEXT))
            ranged = client.response(client.request(target, extra=[("range", "bytes=2-5")]))
            assert ranged.status == 206 and bytes(ranged.body) == TEXT[2:6]
            assert dict(ranged.headers)["content-range"] == f"bytes 2-5/{len(TEXT)}"
            cached = client.response(
                client.request(target, extra=[("if-none-match", headers["etag"])])
            )
            assert cached.status == 304 and not cached.body
            head = client.response(client.request(target, method="HEAD"))
            assert head.status == 200 and not head.body
            assert dict(head.headers)["content-length"] == str(len(TEXT))


def download(server: Server, target: str, *, read_size: int = 1 << 20) -> tuple[str, int, int]:
    """GET `target` on a raw socket; return the body's sha256, its length and the server's
    peak resident memory seen meanwhile."""
    digest = hashlib.sha256()
    peak = rss(server)
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert f"content-length: {BIG_SIZE}".encode() in head.lower()
        digest.update(rest)
        received = len(rest)
        reads = 0
        while True:
            chunk = sock.recv(read_size)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
            reads += 1
            if reads % 16 == 0:
                peak = max(peak, rss(server))
    return digest.hexdigest(), received, peak


@pytest.mark.parametrize("target", ["/big", "/static/big.bin"])
def test_a_large_file_arrives_whole_with_memory_bounded(
    server: Server, tree: Tree, target: str
) -> None:
    idle = rss(server)
    sha, received, peak = download(server, target)
    print(f"figure: {target} {BIG_SIZE // MIB} MiB, server RSS +{(peak - idle) / MIB:.1f} MiB")
    assert received == BIG_SIZE
    assert sha == tree.big_sha256
    assert peak - idle < RSS_BOUND, f"server RSS went {(peak - idle) / MIB:.0f} MiB above idle"


def test_large_file_over_h2(server: Server, tree: Tree) -> None:
    with H2Client(server.host, server.port, timeout=60) as client:
        stream = client.response(client.request("/static/big.bin"), timeout=120)
        assert stream.status == 200
        assert len(stream.body) == BIG_SIZE
        assert hashlib.sha256(stream.body).hexdigest() == tree.big_sha256


def test_a_slow_reader_costs_bounded_memory_and_a_stalled_one_is_closed(server: Server) -> None:
    idle = rss(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        # Slow: 16 KiB every 20 ms for two seconds (well within send_timeout each time).
        received = 0
        peak = idle
        started = time.monotonic()
        while time.monotonic() - started < 2:
            received += len(sock.recv(16384))
            time.sleep(0.02)
            peak = max(peak, rss(server))
        assert 0 < received < BIG_SIZE // 4
        assert peak - idle < RSS_BOUND, f"{(peak - idle) / MIB:.0f} MiB above idle"
        # Stalled: the server gives up after send_timeout (2 s) without progress and closes.
        time.sleep(4)
        sock.settimeout(5)
        closed = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += len(chunk)
        assert closed, "the stalled connection was kept open"
        assert received < BIG_SIZE, "the whole file was sent to a stalled reader"
    finally:
        sock.close()
    assert wait_until(lambda: rss(server) - idle < RSS_BOUND, timeout=5)


def test_many_stalled_downloads_are_bounded(server: Server) -> None:
    idle = rss(server)
    sockets = []
    try:
        for _ in range(50):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((server.host, server.port))
            sock.sendall(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sockets.append(sock)
        peak = idle
        started = time.monotonic()
        while time.monotonic() - started < 1.5:
            peak = max(peak, rss(server))
            time.sleep(0.05)
        print(f"figure: 50 stalled downloads, server RSS +{(peak - idle) / MIB:.1f} MiB")
        # Each holds at most three 256 KiB chunks: two in hyper's write queue (it asks for the
        # next once less than 128 KiB of the one it writes is left), and one read ahead when
        # the file is not cached. 1.5 MiB leaves room for the allocator; without the bound
        # this is 50 times the file.
        per_download = (peak - idle) / 50
        assert per_download < 1.5 * MIB, f"{per_download / MIB:.2f} MiB per stalled download"
        with server.client() as http:
            assert http.get("/hello").text == "hello"  # the server still answers
    finally:
        for sock in sockets:
            sock.close()


def test_static_config_errors_name_the_file_and_key(
    server_factory: ServerFactory, tree: Tree
) -> None:
    for table, needle in [
        ('"/assets" = "no-such-dir"', "no-such-dir"),
        (f'"/" = {str(tree.public)!r}', "not '/' alone"),
        (f'"assets" = {str(tree.public)!r}', "starting with '/'"),
        (f'"/a/../b" = {str(tree.public)!r}', "plain path segments"),
        (f'"/hello.txt" = {str(tree.public / "hello.txt")!r}', "is not one"),
    ]:
        config = make_config() + f"\n[static]\n{table}\n"
        path = server_factory.write_app(
            {"app.py": "from pyhost import Router\nrouter = Router()\n"}, config
        )
        result = server_factory.run("check", "--config", str(path))
        assert result.returncode != 0, table
        assert "static." in result.output and str(path) in result.output, result.output
        assert needle in result.output, result.output
    # A relative directory is the config file's.
    config = make_config() + '\n[static]\n"/assets" = "assets"\n'
    path = server_factory.write_app(
        {"app.py": "from pyhost import Router\nrouter = Router()\n", "assets/a.css": "a{}"}, config
    )
    with server_factory.serve_config(path) as relative:
        response = get(relative, "/assets/a.css")
        assert response.status == 200 and response.body == b"a{}"
        assert response.header("content-type") == "text/css; charset=utf-8"


def test_cors_applies_to_mounted_files(server_factory: ServerFactory, tree: Tree) -> None:
    config = files_config(tree) + '\n[cors]\nallow_origins = ["https://a.test"]\n'
    with server_factory.serve(app_files(tree), config) as served:
        origin = ("Origin", "https://a.test")
        preflight = get(
            served,
            "/static/hello.txt",
            origin,
            ("Access-Control-Request-Method", "GET"),
            method="OPTIONS",
        )
        assert preflight.status == 204
        assert preflight.header("access-control-allow-origin") == "https://a.test"
        response = get(served, "/static/hello.txt", origin)
        assert response.status == 200 and response.body == TEXT
        assert response.header("access-control-allow-origin") == "https://a.test"
