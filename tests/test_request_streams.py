"""Request bodies as streams (`stream=True` routes), over real sockets against the binary.

The handler package is `tests/apps/uploads`. Memory is read from `/proc/PID/status`: a
200 MiB upload through a streamed route must leave the server's resident memory within
`STREAM_RSS_BOUND` of where it was, since at most a few chunks wait between the connection
and the handler.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.h2client import H2Client, Stream
from tests.harness import PeakRss, Server, chunked, parse_response, wait_until
from tests.uploads import connect, head, read_response, uploads_server

MIB = 1024 * 1024
UPLOAD = 200 * MIB
STREAM_RSS_BOUND = 48 * MIB
"""How much the server's resident memory may grow while a 200 MiB body streams through it.
What it holds for the body: four chunks in the channel (each at most hyper's read buffer,
about 400 KiB), the chunk the handler holds, and the socket buffers, which are the kernel's;
the rest of the margin is the allocator's and the debug build's."""
HELD_BODY = 128 * MIB
SENT_BOUND = 40 * MIB
"""How much of a body a client gets to send while its handler does not read: the kernel's
socket buffers on both ends (a few MiB each on loopback) and the few chunks in flight."""


@pytest.fixture(scope="module")
def served(pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with uploads_server(pyhost_bin, tmp_path_factory, "body_timeout = 2") as (server, _spool):
        yield server


def get_json(server: Server, method: str, path: str) -> dict[str, object]:
    with server.client() as http:
        response = http.request(method, path)
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()
        return result


def test_a_large_upload_streams_through_in_bounded_memory(served: Server) -> None:
    block = os.urandom(MIB)
    expected = hashlib.sha256()
    for _ in range(UPLOAD // MIB):
        expected.update(block)
    with served.client(timeout=300) as http:
        # Warm up: one-time costs (the route, the channel, the allocator's arenas) first.
        assert http.post("/upload", content=block * 4).status_code == 200
        time.sleep(0.3)

        def body() -> Iterator[bytes]:
            for _ in range(UPLOAD // MIB):
                yield block

        with PeakRss(served) as memory:
            response = http.post("/upload", content=body(), headers={"content-length": str(UPLOAD)})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["size"] == UPLOAD
    assert result["sha256"] == expected.hexdigest()
    assert result["chunks"] > 1
    grew = memory.peak - memory.baseline
    assert grew < STREAM_RSS_BOUND, f"RSS grew by {grew / MIB:.1f} MiB during a 200 MiB upload"


def test_a_slow_handler_holds_the_client_back(served: Server) -> None:
    get_json(served, "POST", "/reset")
    block = b"x" * MIB
    sock = connect(served, sndbuf=64 * 1024, timeout=1.0)
    try:
        sock.sendall(
            head(served, "POST", "/held", {"Content-Length": str(HELD_BODY), "Connection": "close"})
        )
        sent = 0
        # The handler reads one chunk and waits: the server stops reading, the kernel's
        # buffers fill, and the client's send blocks (here: times out).
        try:
            while sent < HELD_BODY:
                sent += sock.send(block[: min(MIB, HELD_BODY - sent)])
        except TimeoutError:
            pass
        assert sent < SENT_BOUND, f"the client sent {sent / MIB:.1f} MiB into a held handler"
        assert wait_until(lambda: get_json(served, "GET", "/progress")["chunks"] == 1, 5)
        assert get_json(served, "GET", "/progress")["chunks"] == 1
        get_json(served, "POST", "/release")
        sock.settimeout(60)
        while sent < HELD_BODY:
            piece = block[: min(MIB, HELD_BODY - sent)]
            sock.sendall(piece)
            sent += len(piece)
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 200, response.body
    assert response.json() == {"size": HELD_BODY}


def test_a_body_over_the_route_limit_is_refused_mid_stream(served: Server) -> None:
    sock = connect(served)
    try:
        sock.sendall(
            head(
                served,
                "POST",
                "/limited",
                {"Transfer-Encoding": "chunked", "Connection": "keep-alive"},
            )
        )
        try:
            for _ in range(4):
                sock.sendall(chunked(b"y" * (MIB // 2))[:-5])
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = read_response(sock)
    finally:
        sock.close()
    response = parse_response(raw)
    assert response.status == 413
    assert response.json()["detail"] == "Request body too large: the limit is 1048576 bytes"
    # The rest of the body was never read: the connection does not carry another request.
    assert response.header("connection") == "close"


def test_a_declared_length_over_the_route_limit_is_refused_before_the_handler(
    served: Server,
) -> None:
    started = get_json(served, "GET", "/progress")["started"]
    sock = connect(served)
    try:
        sock.sendall(head(served, "POST", "/limited", {"Content-Length": str(2 * MIB)}))
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 413
    assert response.header("connection") == "close"
    assert get_json(served, "GET", "/progress")["started"] == started


def test_the_route_limit_overrides_the_server_limit(served: Server) -> None:
    with served.client() as http:
        assert http.post("/small", content=b"z" * 1000).json() == {"size": 1000}
        refused = http.post("/small", content=b"z" * 1001)
        assert refused.status_code == 413
        assert refused.json()["detail"] == "Request body too large: the limit is 1000 bytes"
        # /upload allows 256 MiB where the server allows 1 MiB.
        assert http.post("/upload", content=b"u" * (3 * MIB)).json()["size"] == 3 * MIB


def test_a_handler_may_stop_reading_early(served: Server) -> None:
    sock = connect(served)
    try:
        # 50 MiB announced, 1 MiB sent: the answer comes without the rest.
        sock.sendall(head(served, "POST", "/early", {"Content-Length": str(50 * MIB)}))
        sock.sendall(b"e" * MIB)
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 200
    assert response.json()["first"] > 0
    assert response.header("connection") == "close"
    assert get_json(served, "GET", "/progress") is not None


def test_a_handler_raising_mid_stream_is_a_500(served: Server) -> None:
    sock = connect(served)
    try:
        sock.sendall(head(served, "POST", "/raises", {"Content-Length": str(8 * MIB)}))
        sock.sendall(b"r" * MIB)
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 500
    assert response.json()["detail"] == "Internal Server Error"
    assert response.header("connection") == "close"
    assert "the handler gave up mid-stream" in served.wait_for_stderr("gave up mid-stream")


def test_a_client_leaving_mid_upload_leaves_the_server_serving(served: Server) -> None:
    for _ in range(3):
        sock = connect(served)
        sock.sendall(head(served, "POST", "/upload", {"Content-Length": str(64 * MIB)}))
        sock.sendall(b"l" * (2 * MIB))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
    assert get_json(served, "GET", "/progress") is not None
    with served.client() as http:
        assert http.post("/upload", content=b"ok").json()["size"] == 2
    assert "panicked" not in served.stderr_text()


def test_a_pause_between_chunks_longer_than_the_body_timeout_is_a_408(served: Server) -> None:
    sock = connect(served)
    try:
        sock.sendall(head(served, "POST", "/upload", {"Transfer-Encoding": "chunked"}))
        sock.sendall(chunked(b"p" * 1000)[:-5])
        # body_timeout is 2 seconds here; then nothing more is sent.
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 408
    assert "not received within 2.0s" in response.json()["detail"]


def test_body_and_json_read_a_stream_whole(served: Server) -> None:
    with served.client() as http:
        assert http.post("/whole", content=b"w" * (300 * 1024)).json() == {"size": 300 * 1024}
        document = {"a": [1, 2, 3], "b": "text"}
        answered = http.post(
            "/whole", content=json.dumps(document), headers={"content-type": "application/json"}
        )
        assert answered.json() == {"json": document}
        malformed = http.post(
            "/whole", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
        assert malformed.json()["detail"].startswith("Malformed JSON body")
        # An empty body on a streamed route is an empty stream.
        assert http.post("/whole").json() == {"size": 0}


def test_a_stream_route_reads_a_form_whole(served: Server) -> None:
    with served.client() as http:
        answered = http.post("/stream-form", data={"a": "1", "b": "two"})
    assert answered.json() == {"fields": [["a", "1"], ["b", "two"]]}


def test_a_streamed_upload_over_http2(served: Server) -> None:
    data = os.urandom(40_000)
    with H2Client(served.host, served.port) as h2:
        stream_id = h2.conn.get_next_available_stream_id()
        h2.conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/upload"),
                (":authority", h2.authority),
            ],
        )
        # Several DATA frames (the frame size is 16 KiB): a stream of several chunks.
        for start in range(0, len(data), 10_000):
            h2.conn.send_data(stream_id, data[start : start + 10_000])
        h2.conn.end_stream(stream_id)
        h2.streams[stream_id] = Stream()
        h2.flush()
        response = h2.response(stream_id)
    assert response.status == 200
    result = json.loads(bytes(response.body))
    assert result["size"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_client_leaving_is_an_incomplete_body_not_an_end(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Without cancel_on_disconnect the handler runs on after its client left: its stream must
    # then raise, not end as if the body were complete.
    with uploads_server(pyhost_bin, tmp_path_factory, "cancel_on_disconnect = false") as (
        server,
        _spool,
    ):
        with server.client() as http:
            assert http.post("/recorded", content=b"c" * 1000).json() == {"size": 1000}
            assert http.get("/progress").json()["outcome"] == ["complete", 1000]
        sock = connect(server)
        sock.sendall(head(server, "POST", "/recorded", {"Content-Length": str(64 * MIB)}))
        sock.sendall(b"c" * (2 * MIB))
        sock.close()

        def outcome() -> object:
            with server.client() as http:
                return http.get("/progress").json().get("outcome")

        assert wait_until(lambda: outcome() != ["complete", 1000], 10)
        status, detail = outcome()  # type: ignore[misc]
    assert status == 400
    assert "Request body incomplete" in detail or "Could not read the request body" in detail
