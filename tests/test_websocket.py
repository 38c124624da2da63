"""WebSocket routes against the real binary: the handshake and its refusals, the conversation,
the protocol's limits, disconnects, backpressure and the connection caps.

The well-behaved side is the `websockets` client library; the misbehaving clients (invalid
UTF-8, a client that never reads, one that vanishes, one that never answers a ping) speak the
protocol by hand over a raw socket, since a real client library will not misbehave.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.harness import Server, ServerFactory, rss

APP = {
    "app.py": """
        import asyncio
        from pyhost import Cookie, Header, HTTPError, Query, Router, WebSocketDisconnect

        router = Router()
        EVENTS = []
        ROOMS = {}
        SENT = {"count": 0}

        @router.get("/events")
        async def events(request):
            return EVENTS

        @router.get("/sent")
        async def sent(request):
            return SENT

        @router.get("/hello")
        async def hello(request):
            return {"message": "hello"}

        @router.websocket(
            "/echo/{room}",
            query={"n": Query(int, default=1, ge=1)},
            headers={"x-token": Header(str, default="none")},
            cookies={"session": Cookie(str, default="")},
        )
        async def echo(socket):
            await socket.accept(headers={"x-accepted": "yes"})
            await socket.send_json({
                "room": socket.path_params["room"],
                "n": socket.query["n"],
                "raw": socket.query_params.get("n"),
                "token": socket.header_params["x-token"],
                "session": socket.cookies["session"],
                "ua": socket.headers.get("user-agent", ""),
                "client": socket.client[0],
                "request_id": socket.request_id,
            })
            async for message in socket:
                if message == "json":
                    await socket.send_json(await socket.receive_json())
                elif isinstance(message, str):
                    await socket.send_text(message)
                else:
                    await socket.send_bytes(message)

        @router.websocket("/room/{name}")
        async def room(socket):
            members = ROOMS.setdefault(socket.path_params["name"], set())
            await socket.accept()
            members.add(socket)
            try:
                async for message in socket:
                    for other in list(members):
                        if other is not socket:
                            await other.send_text(message)
            finally:
                members.discard(socket)

        @router.websocket("/watched")
        async def watched(socket):
            await socket.accept()
            try:
                await socket.receive()
                EVENTS.append("received")
                await socket.receive()
            except WebSocketDisconnect as exc:
                EVENTS.append(f"disconnect {exc.code}")
                raise
            finally:
                EVENTS.append("finally")

        @router.websocket("/raises")
        async def raises(socket):
            await socket.accept()
            await socket.receive()
            raise RuntimeError("handler failure")

        @router.websocket("/raises-early")
        async def raises_early(socket):
            raise RuntimeError("failed before accepting")

        @router.websocket("/refuse")
        async def refuse(socket):
            return None

        @router.websocket("/unauthorized")
        async def unauthorized(socket):
            raise HTTPError(401, "sign in first")

        @router.websocket("/closes")
        async def closes(socket):
            await socket.accept()
            await socket.close(4001, "done here")

        @router.websocket("/returns")
        async def returns(socket):
            await socket.accept()
            await socket.send_text("bye")

        @router.websocket("/protocols")
        async def protocols(socket):
            offered = socket.subprotocols
            if "v2" in offered:
                await socket.accept(subprotocol="v2")
            elif offered:
                await socket.accept(subprotocol="not-offered")
            else:
                await socket.accept()
            await socket.send_text(",".join(offered))
            await socket.receive()

        @router.websocket("/flood")
        async def flood(socket):
            await socket.accept()
            chunk = b"x" * 65536
            try:
                while True:
                    await socket.send_bytes(chunk)
                    SENT["count"] += 1
            except WebSocketDisconnect as exc:
                EVENTS.append(f"flood disconnect {exc.code}")

        @router.websocket("/idle")
        async def idle(socket):
            await socket.accept()
            try:
                await socket.receive()
            except WebSocketDisconnect as exc:
                EVENTS.append(f"idle disconnect {exc.code}")

        @router.websocket("/slow-accept")
        async def slow_accept(socket):
            try:
                await asyncio.sleep(30)
            finally:
                EVENTS.append("slow-accept cancelled")
    """,
}

CONFIG = """\
[server]
send_timeout = 3.0
request_timeout = 2.0

[websocket]
max_message = "256 KiB"
max_connections = 16

[app]
module = "app"
"""


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(APP, CONFIG) as running:
        yield running


def ws_url(server: Server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def events(server: Server) -> list[str]:
    with server.client() as http:
        result: list[str] = http.get("/events").json()
        return result


def wait_for_event(server: Server, event: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = events(server)
        if event in seen or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


# --- raw protocol, for clients that misbehave -------------------------------------------------


class RawSocket:
    """A WebSocket client written by hand: handshake, masked frames, nothing else."""

    def __init__(self, server: Server, path: str, headers: str = "", timeout: float = 10.0):
        self.sock = socket.create_connection((server.host, server.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\n{headers}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.head = head.decode("latin-1")
        self.buffer = b""

    @property
    def status(self) -> int:
        return int(self.head.split(" ", 2)[1])

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        first = (0x80 if fin else 0) | opcode
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return first & 0x0F, self._read(length)

    def read_close(self) -> tuple[int, str]:
        """Skip data and pings until the close frame; its code and reason."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                (code,) = struct.unpack("!H", payload[:2])
                return code, payload[2:].decode()

    def close(self) -> None:
        self.sock.close()


# --- the handshake -----------------------------------------------------------------------------


def test_echo_text_bytes_and_json_with_the_request_attributes(server: Server) -> None:
    async def converse() -> tuple[dict[str, Any], list[Any], str | None]:
        async with connect(
            ws_url(server, "/echo/lobby?n=3"),
            additional_headers={"x-token": "abc", "cookie": "session=s1; other=2"},
            user_agent_header="ws-test",
        ) as ws:
            hello = json.loads(await ws.recv())
            answers: list[Any] = []
            await ws.send("hi there")
            answers.append(await ws.recv())
            await ws.send(b"\x00\x01\xff")
            answers.append(await ws.recv())
            await ws.send("json")
            await ws.send(json.dumps({"a": [1, 2], "é": None}))
            answers.append(json.loads(await ws.recv()))
            accepted = ws.response.headers.get("x-accepted")
            return hello, answers, accepted

    hello, answers, accepted = run(converse())
    assert hello["room"] == "lobby"
    assert hello["n"] == 3 and hello["raw"] == "3"
    assert hello["token"] == "abc"
    assert hello["session"] == "s1"
    assert hello["ua"] == "ws-test"
    assert hello["client"] == "127.0.0.1"
    assert hello["request_id"]
    assert answers == ["hi there", b"\x00\x01\xff", {"a": [1, 2], "é": None}]
    assert accepted == "yes"


def test_validation_fails_before_the_upgrade(server: Server) -> None:
    async def status_of(path: str) -> tuple[int, bytes]:
        try:
            async with connect(ws_url(server, path)):
                pass
        except InvalidStatus as refused:
            return refused.response.status_code, bytes(refused.response.body or b"")
        raise AssertionError(f"{path} was accepted")

    status, body = run(status_of("/echo/lobby?n=0"))
    assert status == 422
    assert json.loads(body)["detail"][0]["loc"] == ["query", "n"]
    status, body = run(status_of("/echo/lobby?n=x"))
    assert status == 422
    assert run(status_of("/nowhere"))[0] == 404


def test_a_request_that_is_no_upgrade_gets_426(server: Server) -> None:
    with server.client() as http:
        response = http.get("/echo/lobby")
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    # Another protocol version than 13: told which one the server speaks.
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"GET /echo/lobby HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 8\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 426")
    assert "sec-websocket-version: 13" in answer.lower()


def test_a_handler_that_does_not_accept_refuses(server: Server) -> None:
    async def status_of(path: str) -> int:
        try:
            async with connect(ws_url(server, path)):
                pass
        except InvalidStatus as refused:
            return int(refused.response.status_code)
        raise AssertionError(f"{path} was accepted")

    assert run(status_of("/refuse")) == 403
    assert run(status_of("/unauthorized")) == 401
    assert run(status_of("/raises-early")) == 500
    log = server.wait_for_stderr("failed before accepting")
    assert "raised an exception" in log


def test_no_decision_in_time_is_504_and_cancels_the_handler(server: Server) -> None:
    raw = RawSocket(server, "/slow-accept")
    try:
        assert raw.status == 504
    finally:
        raw.close()
    assert "slow-accept cancelled" in wait_for_event(server, "slow-accept cancelled")


def test_subprotocol_negotiation(server: Server) -> None:
    async def negotiate(offered: list[str]) -> tuple[str | None, str]:
        async with connect(ws_url(server, "/protocols"), subprotocols=offered) as ws:  # type: ignore[arg-type]
            return ws.subprotocol, str(await ws.recv())

    assert run(negotiate(["v1", "v2"])) == ("v2", "v1,v2")

    async def refused() -> int:
        try:
            async with connect(ws_url(server, "/protocols"), subprotocols=["v1"]):  # type: ignore[list-item]
                pass
        except InvalidStatus as refusal:
            return int(refusal.response.status_code)
        raise AssertionError("accepted with a subprotocol the client did not offer")

    # Choosing one the client did not offer is the handler's error: a 500 before the upgrade.
    assert run(refused()) == 500
    assert "was not offered by the client" in server.wait_for_stderr("was not offered")


# --- the conversation --------------------------------------------------------------------------


def test_broadcast_between_sockets_through_a_shared_set(server: Server) -> None:
    async def chat() -> list[str]:
        url = ws_url(server, "/room/general")
        async with connect(url) as a, connect(url) as b, connect(url) as c:
            # Every member has joined once it has answered something: ping them all.
            for ws in (a, b, c):
                await ws.ping()
            await asyncio.sleep(0.2)
            await a.send("from a")
            got = [str(await b.recv()), str(await c.recv())]
            await c.send("from c")
            got += [str(await a.recv()), str(await b.recv())]
            return got

    assert run(chat()) == ["from a", "from a", "from c", "from c"]


def test_large_and_fragmented_messages(server: Server) -> None:
    big = os.urandom(200 * 1024)
    text = "é" * (100 * 1024)

    async def converse() -> tuple[bytes, str, str]:
        async with connect(ws_url(server, "/echo/big"), max_size=None) as ws:
            await ws.recv()
            await ws.send(big)
            echoed = await ws.recv()
            await ws.send(text)
            echoed_text = await ws.recv()
            # Fragments: the library sends one frame per piece, the server reassembles them.
            await ws.send(["frag", "mented ", "text"])
            fragmented = await ws.recv()
            return bytes(echoed), str(echoed_text), str(fragmented)  # type: ignore[arg-type]

    echoed, echoed_text, fragmented = run(converse())
    assert echoed == big
    assert echoed_text == text
    assert fragmented == "fragmented text"


def test_a_message_over_max_message_closes_with_1009(server: Server) -> None:
    async def oversize() -> int | None:
        async with connect(ws_url(server, "/echo/big"), max_size=None) as ws:
            await ws.recv()
            await ws.send(b"x" * (256 * 1024 + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(oversize()) == 1009

    async def oversize_in_fragments() -> int | None:
        async with connect(ws_url(server, "/echo/big"), max_size=None) as ws:
            await ws.recv()
            piece = b"y" * (64 * 1024)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.send([piece] * 5)
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(oversize_in_fragments()) == 1009


def test_invalid_utf8_in_a_text_message_closes_with_1007(server: Server) -> None:
    raw = RawSocket(server, "/echo/utf8")
    try:
        assert raw.status == 101
        raw.read_frame()  # the greeting
        raw.send_frame(0x1, b"ok")
        assert raw.read_frame() == (0x1, b"ok")
        raw.send_frame(0x1, b"bad \xff\xfe text")
        code, _reason = raw.read_close()
        assert code == 1007
        # The same split over fragments, the bad byte in the second one.
        again = RawSocket(server, "/echo/utf8")
        again.read_frame()
        again.send_frame(0x1, "é".encode()[:1], fin=False)
        again.send_frame(0x0, b"\xff", fin=True)
        assert again.read_close()[0] == 1007
        again.close()
    finally:
        raw.close()


def test_close_codes_travel_both_ways(server: Server) -> None:
    async def server_closes() -> tuple[int, str]:
        async with connect(ws_url(server, "/closes")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    assert run(server_closes()) == (4001, "done here")

    async def handler_returns() -> tuple[str, int]:
        async with connect(ws_url(server, "/returns")) as ws:
            first = str(await ws.recv())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            return first, closed.value.rcvd.code

    # What the handler sent before returning arrives, then the close.
    assert run(handler_returns()) == ("bye", 1000)

    async def client_closes() -> None:
        async with connect(ws_url(server, "/watched")) as ws:
            await ws.send("one")
            await asyncio.sleep(0.1)
            await ws.close(code=4100, reason="client done")

    run(client_closes())
    seen = wait_for_event(server, "disconnect 4100")
    assert "disconnect 4100" in seen


def test_a_handler_that_raises_closes_with_1011_and_is_logged(server: Server) -> None:
    async def converse() -> int | None:
        async with connect(ws_url(server, "/raises")) as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None

    assert run(converse()) == 1011
    log = server.wait_for_stderr("handler failure")
    line = next(line for line in log.splitlines() if "app.raises" in line)
    assert "request " in line and "raised an exception" in line


def test_an_abrupt_disconnect_reaches_the_handler(server: Server) -> None:
    before = events(server).count("finally")
    raw = RawSocket(server, "/watched")
    assert raw.status == 101
    raw.send_frame(0x1, b"first")
    assert "received" in wait_for_event(server, "received")
    # No close frame: the TCP connection just goes away, mid-conversation.
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
    deadline = time.monotonic() + 10
    while events(server).count("finally") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = events(server)
    assert seen.count("finally") == before + 1
    assert "disconnect 1006" in seen


def test_a_client_that_never_reads_costs_bounded_memory(server: Server) -> None:
    """The handler sends 64 KiB messages as fast as it may to a client that reads nothing:
    its sends wait once the queues and buffers are full, the server's memory stays flat, and
    after `send_timeout` without progress the connection is dropped."""
    raw = RawSocket(server, "/flood")
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert raw.status == 101
    try:
        time.sleep(1.0)
        with server.client() as http:
            first = http.get("/sent").json()["count"]
        rss_first = rss(server)
        time.sleep(1.0)
        with server.client() as http:
            second = http.get("/sent").json()["count"]
        rss_second = rss(server)
        assert first > 0
        # Unbounded, it would have sent tens of thousands of 64 KiB messages by now.
        assert second < 200, second
        assert second - first < 20, (first, second)
        assert rss_second - rss_first < 8 * 1024 * 1024, (rss_first, rss_second)
        # `send_timeout` (3 s here) with nothing taken: dropped, and the handler is told.
        seen = wait_for_event(server, "flood disconnect 1006")
        assert "flood disconnect 1006" in seen
    finally:
        raw.close()


# --- limits and configuration -------------------------------------------------------------------

LIMITS_APP = {
    "app.py": """
        import asyncio
        from pyhost import Router, WebSocketDisconnect

        router = Router()
        EVENTS = []

        @router.get("/hello")
        async def hello(request):
            return {"message": "hello"}

        @router.get("/events")
        async def events(request):
            return EVENTS

        @router.websocket("/hold")
        async def hold(socket):
            await socket.accept()
            try:
                async for message in socket:
                    await socket.send_text(message)
            finally:
                EVENTS.append("hold ended")

        @router.websocket("/idle")
        async def idle(socket):
            await socket.accept()
            try:
                await socket.receive()
            except WebSocketDisconnect as exc:
                EVENTS.append(f"idle disconnect {exc.code}")

        @router.websocket("/busy")
        async def busy(socket):
            await socket.accept()
            await asyncio.sleep(2)  # reads nothing for four ping intervals
            count = 0
            async for message in socket:
                count += 1
                if message == "last":
                    break
            await socket.send_text(str(count))
    """,
}

LIMITS_CONFIG = """\
[server]
max_in_flight = 2
max_in_flight_per_client = 0

[websocket]
max_connections = 3
max_connections_per_client = 0
ping_interval = 0.5
allowed_origins = ["https://app.example"]

[app]
module = "app"
"""


@pytest.fixture(scope="module")
def limited(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(LIMITS_APP, LIMITS_CONFIG) as running:
        yield running


def test_open_sockets_are_capped_and_do_not_lock_out_http(limited: Server) -> None:
    async def scenario() -> tuple[int, list[int]]:
        url = ws_url(limited, "/hold")
        sockets: list[ClientConnection] = []
        try:
            for _ in range(3):
                ws = await connect(url)
                await ws.send("here")
                assert await ws.recv() == "here"
                sockets.append(ws)
            # Three open sockets, more than max_in_flight = 2: HTTP is still served.
            statuses = []
            async with limited.async_client() as http:
                for _ in range(4):
                    statuses.append((await http.get("/hello")).status_code)
            try:
                extra = await connect(url)
                await extra.close()
                refused = 101
            except InvalidStatus as refusal:
                refused = int(refusal.response.status_code)
            return refused, statuses
        finally:
            for ws in sockets:
                await ws.close()

    refused, statuses = run(scenario())
    assert refused == 503
    assert statuses == [200, 200, 200, 200]

    # Closed sockets give their places back.
    async def again() -> str:
        async with connect(ws_url(limited, "/hold")) as ws:
            await ws.send("back")
            return str(await ws.recv())

    deadline = time.monotonic() + 10
    while True:
        try:
            assert run(again()) == "back"
            break
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_origins_off_the_list_are_refused(limited: Server) -> None:
    async def status_of(origin: str | None) -> int:
        try:
            async with connect(ws_url(limited, "/hold"), origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send("x")
                await ws.recv()
                return 101
        except InvalidStatus as refusal:
            return int(refusal.response.status_code)

    assert run(status_of("https://app.example")) == 101
    assert run(status_of("https://evil.example")) == 403
    assert run(status_of(None)) == 101


def test_a_client_that_answers_no_ping_is_dropped(limited: Server) -> None:
    raw = RawSocket(limited, "/idle")
    try:
        assert raw.status == 101
        # It neither reads nor answers the pings sent every 0.5 s: dropped after the next.
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline:
            with limited.client() as http:
                seen = http.get("/events").json()
            if "idle disconnect 1006" in seen:
                break
            time.sleep(0.1)
        assert "idle disconnect 1006" in seen
    finally:
        raw.close()


def test_a_client_whose_handler_is_busy_is_not_taken_for_gone(limited: Server) -> None:
    """While its handler does not read, the host reads nothing from the client, pongs
    included: that is no reason to drop it when the pings come round."""

    async def scenario() -> str:
        async with connect(ws_url(limited, "/busy")) as ws:
            for _ in range(10):
                await ws.send("more than the handler's queue holds")
            await ws.send("last")
            return str(await ws.recv())

    assert run(scenario()) == "11"


def test_shutdown_closes_sockets_with_1001(server_factory: ServerFactory) -> None:
    with server_factory.serve(LIMITS_APP, '[app]\nmodule = "app"\n') as running:

        async def hold_until_shutdown() -> int | None:
            async with connect(ws_url(running, "/hold")) as ws:
                await ws.send("x")
                await ws.recv()
                running.proc.send_signal(15)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                return closed.value.rcvd.code if closed.value.rcvd else None

        assert run(hold_until_shutdown()) == 1001
        assert running.proc.wait(10) == 0
