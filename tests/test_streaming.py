"""Streamed responses (`StreamingResponse`): chunks go out as they are produced, the producer
is advanced no faster than the client reads, a client that leaves cancels it, and a stream
that fails or stalls ends in a way the client can see is incomplete.

The handlers record what their generators did (how far they got, which `finally` ran) in
module globals the tests read back through `/log`; a generator that must wait for the test
waits on an `asyncio.Event` the test sets through `/release/{name}`.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.h2client import H2Client
from tests.harness import Server, ServerFactory, base_env, make_config, rss, wait_until

APP = {
    "app.py": """
        import asyncio
        import threading
        import time

        from pyhost import HTTPError, Router, StreamingResponse

        router = Router()
        EVENTS = {}
        THREAD_EVENTS = {}
        LOG = []
        PROGRESS = {}


        def event(name):
            return EVENTS.setdefault(name, asyncio.Event())


        def thread_event(name):
            return THREAD_EVENTS.setdefault(name, threading.Event())


        @router.post("/release/{name}")
        async def release(request):
            name = request.path_params["name"]
            event(name).set()
            thread_event(name).set()
            return {"released": name}


        @router.get("/log")
        async def log(request):
            return {"log": LOG, "progress": PROGRESS}


        @router.get("/gated/{name}")
        async def gated(request):
            name = request.path_params["name"]

            async def chunks():
                try:
                    yield b"first\\n"
                    await event(name).wait()
                    yield "second\\n"
                finally:
                    LOG.append(f"finally {name}")

            return StreamingResponse(chunks(), media_type="text/plain", headers={"x-s": "1"})


        @router.get("/endless/{name}")
        async def endless(request):
            name = request.path_params["name"]
            size = int(request.query_params.get("size", "16384"))

            async def chunks():
                n = 0
                try:
                    while True:
                        PROGRESS[name] = n
                        yield b"x" * size
                        n += 1
                finally:
                    LOG.append(f"finally {name}")

            return StreamingResponse(chunks())


        @router.get("/whole")
        async def whole(request):
            return b"y" * 100_000


        @router.get("/fails/{name}")
        async def fails(request):
            name = request.path_params["name"]

            async def chunks():
                yield b"partial"
                await asyncio.sleep(0)
                raise RuntimeError(f"producer {name} broke")

            return StreamingResponse(chunks())


        @router.get("/bad-chunk")
        async def bad_chunk(request):
            async def chunks():
                yield b"fine"
                yield 42

            return StreamingResponse(chunks())


        @router.get("/sync")
        async def sync_generator(request):
            def chunks():
                for n in range(5):
                    time.sleep(0.01)
                    yield f"{n}," if n % 2 else str(n).encode() + b","

            return StreamingResponse(chunks())


        @router.get("/sync-gated/{name}")
        async def sync_gated(request):
            name = request.path_params["name"]

            def chunks():
                try:
                    yield b"before\\n"
                    # Blocks its thread, not the loop: /log still answers meanwhile.
                    thread_event(name).wait(10)
                    yield b"after\\n"
                finally:
                    LOG.append(f"finally {name}")

            return StreamingResponse(chunks())


        @router.get("/list")
        def plain_list(request):
            return StreamingResponse(["a", b"b", "", "\u00e9"], media_type="text/plain")


        @router.get("/not-a-stream")
        async def not_a_stream(request):
            try:
                StreamingResponse("text")
            except TypeError as exc:
                raise HTTPError(400, str(exc))
            return "constructed"
    """,
}

IDLE_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def server(pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    config = make_config(
        server=f"""
            stream_idle_timeout = {IDLE_TIMEOUT}
            request_timeout = 5
        """
    )
    with factory.serve(APP, config) as running:
        yield running


def state(server: Server) -> dict[str, Any]:
    with server.client() as client:
        data: dict[str, Any] = client.get("/log").json()
        return data


def release(server: Server, name: str) -> None:
    with server.client() as client:
        assert client.post(f"/release/{name}").status_code == 200


def open_raw(server: Server, target: str, *, method: str = "GET", rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode())
    return sock


def read_until(sock: socket.socket, predicate: Any, limit: int = 1 << 20) -> bytes:
    data = b""
    while not predicate(data) and len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            return data
        data += chunk
    return data


def test_the_first_chunk_arrives_before_the_generator_finishes(server: Server) -> None:
    with server.client() as client, client.stream("GET", "/gated/h1") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain"
        assert response.headers["x-s"] == "1"
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        chunks = response.iter_raw()
        assert next(chunks) == b"first\n"
        # The generator is parked on the event: it has not finished.
        assert "finally h1" not in state(server)["log"]
        release(server, "h1")
        assert b"".join(chunks) == b"second\n"
    assert wait_until(lambda: "finally h1" in state(server)["log"], 5)


def test_the_first_chunk_arrives_before_the_generator_finishes_over_h2(server: Server) -> None:
    with H2Client(server.host, server.port) as h2:
        stream_id = h2.request("/gated/h2")
        stream = h2.streams[stream_id]
        assert h2.wait(lambda: bytes(stream.body) == b"first\n")
        assert stream.status == 200
        assert not stream.ended
        release(server, "h2")
        stream = h2.response(stream_id)
        assert stream.ended and stream.reset is None
        assert bytes(stream.body) == b"first\nsecond\n"


def test_a_stalled_reader_holds_the_producer_back(server: Server) -> None:
    # A small receive window: the kernel holds little for this client, so what the producer
    # got ahead is what the server holds (its channel and hyper's buffer) plus socket buffers.
    sock = open_raw(server, "/endless/stalled", rcvbuf=4096)
    try:
        assert wait_until(lambda: "stalled" in state(server)["progress"], 5)

        def settled() -> bool:
            before = state(server)["progress"]["stalled"]
            time.sleep(0.3)
            return state(server)["progress"]["stalled"] == before

        assert wait_until(settled, 10), "the producer never stopped while its client read nothing"
        got = state(server)["progress"]["stalled"]
        # What may be ahead of the client: the kernel's send buffer at its largest, and what
        # the server holds (README: 4 chunks, hyper's queue). A producer running free would not
        # have stopped at all.
        kernel = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        ahead = got * 16384
        assert ahead < kernel + (1 << 20), f"the producer got {got} chunks ahead of its client"
        # Reading lets it go on: once the client has taken what the buffers held (the kernel's
        # send buffer may have grown to megabytes), the producer moves again.
        read = 0
        while state(server)["progress"]["stalled"] == got:
            for _ in range(64):
                read += len(sock.recv(65536))
            assert read < 64 << 20, "the client read 64 MiB and the producer did not move"
    finally:
        sock.close()
    assert wait_until(lambda: "finally stalled" in state(server)["log"], 5)


def test_a_client_that_leaves_cancels_the_producer(server: Server) -> None:
    sock = open_raw(server, "/gated/leaver")
    head = read_until(sock, lambda data: b"first\n" in data)
    assert head.startswith(b"HTTP/1.1 200")
    sock.close()
    assert wait_until(lambda: "finally leaver" in state(server)["log"], 5), (
        "the generator's finally did not run after its client left"
    )
    log = server.wait_for_stderr("client went away")
    line = next(line for line in log.splitlines() if "client went away" in line)
    assert " INFO " in line, line
    assert "ERROR" not in line


def test_a_client_that_leaves_an_h2_stream_cancels_the_producer(server: Server) -> None:
    with H2Client(server.host, server.port) as h2:
        stream_id = h2.request("/gated/h2-leaver")
        stream = h2.streams[stream_id]
        assert h2.wait(lambda: bytes(stream.body) == b"first\n")
        h2.conn.reset_stream(stream_id)
        h2.flush()
        assert wait_until(lambda: "finally h2-leaver" in state(server)["log"], 5)


def test_an_exception_mid_stream_leaves_the_response_visibly_incomplete(server: Server) -> None:
    sock = open_raw(server, "/fails/h1")
    raw = read_to_close(sock)
    sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert b"transfer-encoding: chunked" in head.lower()
    assert b"partial" in body
    # No last chunk: the connection was closed instead.
    assert not body.endswith(b"0\r\n\r\n"), body
    request_id = re.search(rb"x-request-id: (\S+)", head, re.IGNORECASE)
    assert request_id is not None
    log = server.wait_for_stderr("producer h1 broke")
    assert f"request {request_id.group(1).decode()}" in log
    assert "RuntimeError" in log
    # And an HTTP client says so.
    with server.client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/fails/httpx")


def test_an_exception_mid_stream_resets_the_h2_stream(server: Server) -> None:
    with H2Client(server.host, server.port) as h2:
        stream = h2.response(h2.request("/fails/h2"))
        assert stream.status == 200
        assert bytes(stream.body) == b"partial"
        assert stream.reset is not None, "the stream ended normally"
        assert not stream.ended


def test_a_chunk_of_the_wrong_type_aborts_the_stream(server: Server) -> None:
    with server.client() as client, pytest.raises(httpx.RemoteProtocolError):
        client.get("/bad-chunk")
    assert "must yield bytes or str, got int" in server.wait_for_stderr("got int")


def test_a_producer_silent_past_the_idle_timeout_is_aborted(server: Server) -> None:
    sock = open_raw(server, "/gated/idle")
    # Nobody releases it: past stream_idle_timeout the host aborts the response, whose
    # incomplete end the client sees, and cancels the generator.
    raw = read_to_close(sock)
    sock.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"first\n" in raw
    assert not raw.endswith(b"0\r\n\r\n")
    assert wait_until(lambda: "finally idle" in state(server)["log"], 5)
    assert "stream_idle_timeout" in server.wait_for_stderr("stream_idle_timeout")


def test_request_timeout_does_not_cut_a_stream_that_keeps_sending(server: Server) -> None:
    # request_timeout (5 s) bounds the time to the head; this stream sends for longer than
    # the idle timeout in total, but never idles that long.
    with server.client() as client, client.stream("GET", "/endless/long?size=1") as response:
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 100_000:
                break
    assert received > 100_000


def test_a_sync_generator_is_iterated_off_the_loop(server: Server) -> None:
    with server.client() as client:
        response = client.get("/sync")
        assert response.status_code == 200
        assert response.content == b"0,1,2,3,4,"
        with client.stream("GET", "/sync-gated/thread") as streamed:
            chunks = streamed.iter_raw()
            assert next(chunks) == b"before\n"
            # The generator's thread is blocked; the loop is not.
            assert client.get("/log").status_code == 200
            release(server, "thread")
            assert b"".join(chunks) == b"after\n"
    assert wait_until(lambda: "finally thread" in state(server)["log"], 5)


def test_a_sync_generator_whose_client_leaves_is_closed(server: Server) -> None:
    sock = open_raw(server, "/sync-gated/thread-leaver")
    read_until(sock, lambda data: b"before\n" in data)
    sock.close()
    time.sleep(0.2)
    release(server, "thread-leaver")
    assert wait_until(lambda: "finally thread-leaver" in state(server)["log"], 5)


def test_a_list_of_str_and_bytes_chunks(server: Server) -> None:
    with server.client() as client:
        response = client.get("/list")
    assert response.status_code == 200
    assert response.content == "ab\u00e9".encode()
    assert response.headers["content-type"] == "text/plain"


def test_a_str_is_not_taken_for_a_stream(server: Server) -> None:
    with server.client() as client:
        response = client.get("/not-a-stream")
    assert response.status_code == 400
    assert "Response for a body already complete" in response.json()["detail"]


def test_head_gets_the_head_only_and_never_runs_the_producer(server: Server) -> None:
    with server.client() as client:
        response = client.head("/endless/head")
    assert response.status_code == 200
    assert response.content == b""
    time.sleep(0.2)
    assert "head" not in state(server)["progress"]


def test_a_reader_that_takes_nothing_for_send_timeout_is_closed(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    with factory.serve(APP, make_config(server="send_timeout = 1")) as server:
        sock = open_raw(server, "/endless/never-reads", rcvbuf=4096)
        try:
            # The socket is never read: once the buffers are full nothing moves, and after
            # send_timeout the server closes the connection, which stops the producer.
            assert wait_until(lambda: "finally never-reads" in state(server)["log"], 30)
        finally:
            sock.close()


STALLED_READERS = 300
CHUNK = 16 << 10
PER_STREAM_BOUND = 4 * CHUNK + (128 << 10) + CHUNK + (32 << 10)
"""What one stalled stream may cost the server (README, "Streamed responses"): its channel (4
chunks), hyper's write queue (twice `max_head_size`, 128 KiB, plus the chunk that crossed it)
and the connection's own state (about 15 KiB). The kernel's socket buffers, which hold most of
what the producer got ahead (megabytes once the send buffer has grown), are not the server's."""


def test_many_stalled_readers_of_endless_streams_cost_bounded_memory(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    config = make_config(server="max_connections = 2000")
    env = base_env(MIMALLOC_PURGE_DELAY="0")
    with factory.serve(APP, config, env=env) as server:
        with server.client() as client:
            client.get("/log")
        idle = rss(server)
        sockets = []
        try:
            for n in range(STALLED_READERS):
                sockets.append(open_raw(server, f"/endless/s{n}?size={CHUNK}", rcvbuf=4096))
            assert wait_until(lambda: len(state(server)["progress"]) == STALLED_READERS, 30)

            def total() -> int:
                return sum(state(server)["progress"].values())

            def settled() -> bool:
                before = total()
                time.sleep(1)
                return total() == before

            assert wait_until(settled, 120), "the producers never stopped"
            grown = rss(server) - idle
            bound = STALLED_READERS * PER_STREAM_BOUND + (32 << 20)
            assert grown < bound, f"{STALLED_READERS} stalled readers grew the server by {grown}"
        finally:
            for sock in sockets:
                sock.close()
        assert wait_until(
            lambda: (
                sum(entry.startswith("finally s") for entry in state(server)["log"])
                == STALLED_READERS
            ),
            30,
        )


def test_stalled_streams_do_not_fill_the_buffer_of_whole_responses(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # What a stream holds is bounded by its own channel and hyper's queue, so it is charged to
    # its connection (for the send timeout) but not to the server's response budget: 20
    # stalled streams, whose queued chunks pass that budget, must not make a whole response
    # on another connection a 503.
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    config = make_config(server='response_buffer = "1 MiB"\nbody_timeout = 30')
    with factory.serve(APP, config) as server:
        sockets = [open_raw(server, f"/endless/b{n}?size=65536", rcvbuf=4096) for n in range(20)]
        try:
            assert wait_until(lambda: len(state(server)["progress"]) == 20, 30)
            time.sleep(1.0)
            with server.client() as client:
                statuses = [client.get("/whole").status_code for _ in range(5)]
            assert statuses == [200] * 5, statuses
        finally:
            for sock in sockets:
                sock.close()
