"""Deadlines: per-route and server-wide handler timeouts (504), head/body read timeouts, and
what happens to a handler whose client goes away (`server.cancel_on_disconnect`).

Every timing assertion has a wide margin so a loaded machine does not make it flaky: a 0.3 s
deadline is asserted as "answered within 3 s"; lower bounds are only used where the waiting
is the behaviour under test.
"""

import select
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import (
    Server,
    ServerFactory,
    make_config,
    parse_response,
    raw_exchange,
    raw_request,
    wait_until,
)

TIMEOUT_APP = {
    "app.py": """
        import asyncio
        import time

        from pyhost import Query, Router

        router = Router()
        # Per test key: what the handler got to do ("started", "finally", "aexit", "late", ...).
        events = {}


        def record(key, event):
            events.setdefault(key, []).append(event)


        class Resource:
            def __init__(self, key):
                self.key = key

            async def __aenter__(self):
                record(self.key, "aenter")
                return self

            async def __aexit__(self, *exc_info):
                record(self.key, "aexit")


        KEY = {"key": Query(str, default="-")}


        @router.get("/slow", query=KEY, timeout=0.3)
        async def slow(request):
            key = request.query["key"]
            record(key, "started")
            try:
                async with Resource(key):
                    await asyncio.sleep(2.0)
                    record(key, "late")
                    return {"late": True}
            except asyncio.CancelledError:
                record(key, "cancelled")
                raise
            finally:
                record(key, "finally")


        @router.get("/spin", query=KEY, timeout=0.3)
        async def spin(request):
            record(request.query["key"], "started")
            while True:
                pass


        @router.get("/sleep", query={"seconds": Query(float)})
        async def sleep(request):
            await asyncio.sleep(request.query["seconds"])
            return {"slept": request.query["seconds"]}


        @router.get("/generous", query={"seconds": Query(float)}, timeout=5)
        async def generous(request):
            await asyncio.sleep(request.query["seconds"])
            return {"slept": request.query["seconds"]}


        @router.get("/sync-block", query=KEY, timeout=0.3)
        def sync_block(request):
            key = request.query["key"]
            record(key, "started")
            time.sleep(1.5)
            record(key, "returned")
            return {"late": True}


        @router.get("/sync-quick", timeout=10)
        def sync_quick(request):
            return {"quick": True}


        @router.get("/events/{key}")
        async def get_events(request):
            return {"events": events.get(request.path_params["key"], [])}


        @router.post("/upload")
        async def upload(request):
            return {"size": len(request.body)}


        @router.get("/health")
        async def health(request):
            return {"ok": True}
    """,
}

DISCONNECT_APP = {
    "app.py": """
        import asyncio
        import time

        from pyhost import Query, Router

        router = Router()
        events = {}


        def record(key, event):
            events.setdefault(key, []).append(event)


        KEY = {"key": Query(str), "seconds": Query(float, default=1.0)}


        @router.get("/hang", query=KEY)
        async def hang(request):
            key = request.query["key"]
            record(key, "started")
            try:
                await asyncio.sleep(request.query["seconds"])
                record(key, "completed")
                return {"completed": True}
            except asyncio.CancelledError:
                record(key, "cancelled")
                raise
            finally:
                record(key, "finally")


        @router.post("/upload-hang", query=KEY)
        async def upload_hang(request):
            key = request.query["key"]
            record(key, "started")
            try:
                await asyncio.sleep(request.query["seconds"])
                record(key, "completed")
                return {"size": len(request.body)}
            finally:
                record(key, "finally")


        @router.get("/sync-hang", query=KEY)
        def sync_hang(request):
            key = request.query["key"]
            record(key, "started")
            time.sleep(request.query["seconds"])
            record(key, "completed")
            return {"completed": True}


        @router.get("/events/{key}")
        async def get_events(request):
            return {"events": events.get(request.path_params["key"], [])}


        @router.get("/health")
        async def health(request):
            return {"ok": True}
    """,
}


@pytest.fixture(scope="module")
def app(server_factory: ServerFactory) -> Iterator[Server]:
    config = make_config(
        server="""
            request_timeout = 1.0
            header_timeout = 1.0
            body_timeout = 1.0
            sync_threads = 1
        """
    )
    with server_factory.serve(TIMEOUT_APP, config) as server:
        yield server


def new_key() -> str:
    return uuid.uuid4().hex


def events(server: Server, key: str) -> list[str]:
    with server.client() as http:
        response = http.get(f"/events/{key}")
    assert response.status_code == 200, response.text
    found = response.json()["events"]
    assert isinstance(found, list)
    return found


def assert_healthy(server: Server) -> None:
    with server.client() as http:
        response = http.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True}


def timed_get(server: Server, target: str, **params: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with server.client(timeout=30.0) as http:
        response = http.get(target, params=params)
    return response, time.monotonic() - started


# --- handler deadlines ---------------------------------------------------------------------


def test_async_handler_past_its_route_timeout_gets_504(app: Server) -> None:
    key = new_key()
    response, elapsed = timed_get(app, "/slow", key=key)
    assert response.status_code == 504, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Handler timed out after 0.3s"}
    assert response.headers.get("x-request-id")
    assert elapsed < 3.0, f"a 0.3 s deadline took {elapsed:.2f}s to answer"


def test_timed_out_async_handler_is_cancelled_and_cleans_up(app: Server) -> None:
    key = new_key()
    response, _ = timed_get(app, "/slow", key=key)
    assert response.status_code == 504
    # Its `finally:` and `async with` exit ran: the task was cancelled, not abandoned.
    assert wait_until(lambda: "finally" in events(app, key), timeout=3.0), events(app, key)
    # Wait past the point where the sleep would have ended: it never resumed.
    time.sleep(2.5)
    assert events(app, key) == ["started", "aenter", "aexit", "cancelled", "finally"]


def test_nothing_a_timed_out_handler_would_return_later_is_sent(app: Server) -> None:
    # One connection, `Connection: close`: exactly one response arrives, the 504, and the
    # connection closes after it even though the handler's sleep would have ended later.
    key = new_key()
    request = (
        f"GET /slow?key={key} HTTP/1.1\r\nHost: {app.host}:{app.port}\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = raw_exchange(app.url, request, timeout=10)
    assert raw.count(b"HTTP/1.1 ") == 1, raw
    response = parse_response(raw)
    assert response.status == 504
    assert response.json() == {"detail": "Handler timed out after 0.3s"}
    assert b"late" not in raw


def test_keep_alive_connection_stays_usable_after_a_504(app: Server) -> None:
    key = new_key()
    with app.client(timeout=30.0) as http:
        assert http.get("/slow", params={"key": key}).status_code == 504
        time.sleep(2.2)  # past the end of the abandoned sleep
        response = http.get("/health")
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        assert http.get("/sync-quick").json() == {"quick": True}


def test_async_handler_that_never_yields_is_interrupted(app: Server) -> None:
    key = new_key()
    response, elapsed = timed_get(app, "/spin", key=key)
    assert response.status_code == 504, response.text
    assert response.json() == {"detail": "Handler timed out after 0.3s"}
    assert elapsed < 3.0, f"a busy loop with a 0.3 s deadline took {elapsed:.2f}s to answer"
    assert events(app, key) == ["started"]
    assert_healthy(app)


def test_the_loop_serves_others_after_a_busy_handler_is_interrupted(app: Server) -> None:
    for _ in range(3):
        assert timed_get(app, "/spin", key=new_key())[0].status_code == 504
        response, elapsed = timed_get(app, "/sleep", seconds=0.05)
        assert response.status_code == 200
        assert elapsed < 3.0


def test_server_wide_request_timeout(app: Server) -> None:
    response, elapsed = timed_get(app, "/sleep", seconds=4.0)
    assert response.status_code == 504, response.text
    detail = response.json()["detail"]
    assert detail.startswith("Handler timed out after 1"), detail
    assert elapsed < 3.5, f"a 1 s deadline took {elapsed:.2f}s to answer"


def test_handler_within_the_server_wide_timeout_answers(app: Server) -> None:
    response, _ = timed_get(app, "/sleep", seconds=0.2)
    assert response.status_code == 200
    assert response.json() == {"slept": 0.2}


def test_route_timeout_longer_than_the_server_wide_one_wins(app: Server) -> None:
    # request_timeout is 1 s; the route allows 5 s.
    response, _ = timed_get(app, "/generous", seconds=1.5)
    assert response.status_code == 200, response.text
    assert response.json() == {"slept": 1.5}


def test_request_timeout_zero_disables_the_deadline(server_factory: ServerFactory) -> None:
    config = make_config(server="request_timeout = 0")
    with server_factory.serve(TIMEOUT_APP, config) as server:
        response, _ = timed_get(server, "/sleep", seconds=1.5)
        assert response.status_code == 200, response.text
        assert response.json() == {"slept": 1.5}
        # Route timeouts still apply.
        assert timed_get(server, "/slow", key=new_key())[0].status_code == 504


def test_sync_handler_past_its_timeout_gets_504_but_keeps_its_thread(app: Server) -> None:
    # sync_threads = 1: the blocked thread keeps running after the 504, so the next plain `def`
    # request has to wait until the first one returns.
    key = new_key()
    started = time.monotonic()
    response, elapsed = timed_get(app, "/sync-block", key=key)
    assert response.status_code == 504, response.text
    assert response.json() == {"detail": "Handler timed out after 0.3s"}
    assert elapsed < 3.0

    quick, _ = timed_get(app, "/sync-quick")
    finished = time.monotonic() - started
    assert quick.status_code == 200, quick.text
    assert quick.json() == {"quick": True}
    # The first handler sleeps 1.5 s; the second could only run after it.
    assert finished >= 1.3, f"the second sync request finished after {finished:.2f}s"
    assert wait_until(lambda: events(app, key) == ["started", "returned"], timeout=5.0), events(
        app, key
    )


def test_async_handlers_are_not_held_up_by_a_blocked_sync_thread(app: Server) -> None:
    key = new_key()
    assert timed_get(app, "/sync-block", key=key)[0].status_code == 504
    # The sync thread stays busy for about another second; async routes answer meanwhile.
    response, elapsed = timed_get(app, "/health")
    assert response.status_code == 200
    assert elapsed < 1.0, f"an async route took {elapsed:.2f}s while the sync thread was busy"
    assert wait_until(lambda: "returned" in events(app, key), timeout=5.0)


def test_timeouts_are_logged_as_warnings_naming_the_handler(app: Server) -> None:
    response, _ = timed_get(app, "/slow", key=new_key())
    request_id = response.headers["x-request-id"]
    log = app.wait_for_stderr(request_id, "app.slow")
    lines = [line for line in log.splitlines() if request_id in line]
    assert lines, log
    assert any("app.slow" in line for line in lines), lines
    assert not any(" ERROR " in line for line in lines), lines


# --- head and body read timeouts --------------------------------------------------------------


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Read until the peer closes; return what arrived and when (seconds from now)."""
    started = time.monotonic()
    sock.settimeout(limit)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the connection was still open after {limit}s: {b''.join(chunks)!r}")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic() - started


def send_unless_answered(sock: socket.socket, data: bytes, pause: float) -> bool:
    """Wait `pause` seconds, then send `data`, unless the server has answered or closed first.

    Stops before writing into a connection the server gave up on, whose reset could discard
    the answer it sent.
    """
    readable, _, _ = select.select([sock], [], [], pause)
    if readable:
        return False
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def test_incomplete_request_head_is_dropped_after_header_timeout(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {app.host}\r\n".encode())
        received, elapsed = read_until_closed(sock, limit=10.0)
    # header_timeout = 1 s: the connection is closed (at most with a 408), not kept forever.
    assert received == b"" or parse_response(received).status == 408, received
    assert 0.8 <= elapsed < 6.0, f"closed after {elapsed:.2f}s"
    assert_healthy(app)


def test_connection_that_sends_nothing_is_closed_after_header_timeout(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        received, elapsed = read_until_closed(sock, limit=10.0)
    # header_timeout = 1 s also bounds the wait for a new connection's first byte.
    assert received == b""
    assert 0.8 <= elapsed < 6.0, f"closed after {elapsed:.2f}s"
    assert_healthy(app)


def test_request_whose_first_bytes_look_like_the_http2_preface_is_served(app: Server) -> None:
    # "P", then "POST ...": the first byte alone could start either protocol.
    pieces = [b"P", b"OST /echo-never-routed HTTP/1.1\r\n", b"Host: x\r\nConnection: close\r\n\r\n"]
    response = parse_response(raw_exchange(app.url, pieces, pause=0.1))
    assert response.status in (404, 405), response


def test_a_slowloris_trickling_header_lines_is_cut_off(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {app.host}\r\n".encode())
        started = time.monotonic()
        for index in range(40):
            if not send_unless_answered(sock, f"X-Trickle-{index}: a\r\n".encode(), 0.2):
                break
        received, _ = read_until_closed(sock, limit=5.0)
        assert received == b"" or parse_response(received).status == 408, received
    assert time.monotonic() - started < 8.0
    assert_healthy(app)


def test_head_sent_slowly_but_within_header_timeout_is_served(app: Server) -> None:
    pieces = [b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"]
    response = parse_response(raw_exchange(app.url, pieces, pause=0.1))
    assert response.status == 200
    assert response.json() == {"ok": True}


def test_idle_keep_alive_connection_is_closed_after_header_timeout(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {app.host}\r\n\r\n".encode())
        sock.settimeout(10)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        # Wait for the idle connection to be closed; anything after the 200 would be wrong.
        rest, elapsed = read_until_closed(sock, limit=10.0)
    response = parse_response(first + rest)
    assert response.json() == {"ok": True}
    assert elapsed < 6.0, f"the idle connection was closed after {elapsed:.2f}s"


def test_stalled_body_gets_408_and_the_connection_is_closed(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {app.host}\r\nContent-Length: 100\r\n\r\n".encode()
            + b"x" * 10
        )
        received, elapsed = read_until_closed(sock, limit=10.0)
    response = parse_response(received)
    assert response.status == 408, received
    assert isinstance(response.json().get("detail"), str), received
    assert received.count(b"HTTP/1.1 ") == 1, received
    assert 0.8 <= elapsed < 6.0, f"answered after {elapsed:.2f}s"
    assert_healthy(app)


def test_stalled_chunked_body_gets_408(app: Server) -> None:
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {app.host}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n".encode()
        )
        received, elapsed = read_until_closed(sock, limit=10.0)
    response = parse_response(received)
    assert response.status == 408, received
    assert isinstance(response.json().get("detail"), str), received
    assert elapsed < 6.0


def test_body_trickling_past_body_timeout_gets_408(app: Server) -> None:
    head = f"POST /upload HTTP/1.1\r\nHost: {app.host}\r\nContent-Length: 40\r\n\r\n".encode()
    with socket.create_connection((app.host, app.port), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for _ in range(39):  # one byte every 0.1 s: about 4 s for the whole body
            if not send_unless_answered(sock, b"x", 0.1):
                break
        received, _ = read_until_closed(sock, limit=10.0)
    assert parse_response(received).status == 408, received
    assert time.monotonic() - started < 6.0


def test_body_sent_in_pieces_within_body_timeout_is_read(app: Server) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\nConnection: close\r\n\r\n"
    response = parse_response(
        raw_exchange(app.url, [head, b"a" * 10, b"b" * 10, b"c" * 10], pause=0.1)
    )
    assert response.status == 200
    assert response.json() == {"size": 30}


# --- client disconnects -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def disconnect_app(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(DISCONNECT_APP, make_config(server="sync_threads = 2")) as server:
        yield server


def start_and_disconnect(server: Server, target: str, key: str, body: bytes = b"") -> None:
    """Send a request, wait until its handler has started, then close the connection."""
    method = "POST" if body else "GET"
    head = f"{method} {target} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        assert wait_until(lambda: "started" in events(server, key), timeout=5.0), (
            "the handler never started"
        )


def error_lines(server: Server) -> list[str]:
    return [line for line in server.stderr_text().splitlines() if " ERROR " in line]


def test_disconnect_cancels_the_async_handler(disconnect_app: Server) -> None:
    key = new_key()
    start_and_disconnect(disconnect_app, f"/hang?key={key}&seconds=30", key)
    assert wait_until(lambda: "finally" in events(disconnect_app, key), timeout=5.0), events(
        disconnect_app, key
    )
    assert events(disconnect_app, key) == ["started", "cancelled", "finally"]
    assert_healthy(disconnect_app)


def test_disconnect_during_a_post_cancels_the_handler(disconnect_app: Server) -> None:
    key = new_key()
    start_and_disconnect(disconnect_app, f"/upload-hang?key={key}&seconds=30", key, b"x" * 100)
    assert wait_until(lambda: "finally" in events(disconnect_app, key), timeout=5.0), events(
        disconnect_app, key
    )
    assert "completed" not in events(disconnect_app, key)


def test_disconnect_logs_no_error(disconnect_app: Server) -> None:
    before = error_lines(disconnect_app)
    keys = [new_key() for _ in range(3)]
    for key in keys:
        start_and_disconnect(disconnect_app, f"/hang?key={key}&seconds=30", key)
    for key in keys:
        assert wait_until(lambda key=key: "finally" in events(disconnect_app, key), timeout=5.0)
    time.sleep(0.5)  # give the log a moment
    assert error_lines(disconnect_app) == before, disconnect_app.stderr_text()


def test_many_disconnects_leave_the_server_healthy(disconnect_app: Server) -> None:
    keys = [new_key() for _ in range(20)]
    socks = []
    try:
        for key in keys:
            sock = socket.create_connection((disconnect_app.host, disconnect_app.port), timeout=10)
            sock.sendall(f"GET /hang?key={key}&seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(sock)
        assert wait_until(
            lambda: all("started" in events(disconnect_app, key) for key in keys), timeout=10.0
        )
    finally:
        for sock in socks:
            sock.close()
    assert wait_until(
        lambda: all("finally" in events(disconnect_app, key) for key in keys), timeout=10.0
    )
    assert_healthy(disconnect_app)


def test_disconnect_from_a_sync_handler_does_not_break_the_pool(disconnect_app: Server) -> None:
    # A plain `def` handler cannot be interrupted; it finishes, and its answer goes nowhere.
    key = new_key()
    start_and_disconnect(disconnect_app, f"/sync-hang?key={key}&seconds=0.5", key)
    assert wait_until(lambda: "completed" in events(disconnect_app, key), timeout=5.0)
    with disconnect_app.client() as http:
        assert http.get("/sync-hang", params={"key": new_key(), "seconds": 0}).status_code == 200
    assert_healthy(disconnect_app)


def test_without_cancel_on_disconnect_the_handler_runs_to_completion(
    server_factory: ServerFactory,
) -> None:
    config = make_config(server="cancel_on_disconnect = false")
    with server_factory.serve(DISCONNECT_APP, config) as server:
        key = new_key()
        start_and_disconnect(server, f"/hang?key={key}&seconds=1", key)
        assert wait_until(lambda: "finally" in events(server, key), timeout=8.0), events(
            server, key
        )
        assert events(server, key) == ["started", "completed", "finally"]
        assert error_lines(server) == [], server.stderr_text()


def test_a_client_that_waits_is_not_mistaken_for_a_disconnect(disconnect_app: Server) -> None:
    # The connection stays open with nothing more to send: the handler runs to completion.
    key = new_key()
    response = raw_request(disconnect_app.url, "GET", f"/hang?key={key}&seconds=1.0", timeout=15)
    assert response.status == 200
    assert response.json() == {"completed": True}
    assert events(disconnect_app, key) == ["started", "completed", "finally"]
