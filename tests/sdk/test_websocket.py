"""The SDK's side of WebSocket routes, without a host: the declaration, the endpoint around the
handler, and the socket's state rules (a fake native socket stands in for the host's)."""

import asyncio
from typing import Any

import pytest

from pyhost import Query, Router, WebSocket, WebSocketDisconnect


class FakeNative:
    """The host's socket, reduced to queues that are always ready."""

    def __init__(self, messages: list[str | bytes] | None = None) -> None:
        self.request = type("Req", (), {"path": "/ws", "path_params": {"room": "a"}})()
        self.subprotocols = ["v1"]
        self.close_status: tuple[int, str] | None = None
        self.messages = list(messages or [])
        self.sent: list[Any] = []
        self.accepted: tuple[str | None, list[tuple[str, str]]] | None = None

    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> bool:
        self.accepted = (subprotocol, headers)
        return True

    def try_receive(self) -> str | bytes | None:
        if self.messages:
            return self.messages.pop(0)
        raise WebSocketDisconnect(1000, "")

    def try_send(self, message: str | bytes) -> bool:
        self.sent.append(message)
        return True

    def try_close(self, code: int, reason: str) -> bool:
        self.sent.append(("close", code, reason))
        return True


def test_the_declaration_is_a_get_route_marked_websocket() -> None:
    router = Router()

    @router.websocket("/ws/{room}", query={"n": Query(int, default=1)})
    async def handler(socket: WebSocket) -> None:
        await socket.accept()

    (route,) = router.routes
    spec = route.spec()
    assert spec["methods"] == ["GET"]
    assert spec["websocket"] is True
    assert spec["is_async"] is True
    assert spec["query"]["n"]["type"] == "int"
    assert router.routes[0].handler is handler


def test_a_plain_def_or_a_bad_path_is_refused() -> None:
    router = Router()
    with pytest.raises(TypeError, match="must be an async def"):

        @router.websocket("/ws")
        def handler(socket: WebSocket) -> None:
            pass

    with pytest.raises(ValueError, match="invalid path template"):
        router.websocket("ws")


def test_the_endpoint_wraps_the_native_socket_and_ends_quietly_on_disconnect() -> None:
    router = Router()
    seen: list[Any] = []

    @router.websocket("/ws/{room}")
    async def handler(socket: WebSocket) -> None:
        await socket.accept(subprotocol="v1", headers={"x-a": "1"})
        seen.append(socket.path_params["room"])
        async for message in socket:
            await socket.send_text(str(message))
        await socket.receive()  # closed: WebSocketDisconnect, which the endpoint swallows

    native = FakeNative(["one", b"two"])
    assert asyncio.run(router.routes[0].endpoint()(native)) is None
    assert native.accepted == ("v1", [("x-a", "1")])
    assert seen == ["a"]
    assert native.sent == ["one", "b'two'"]


def test_receiving_or_sending_before_accept_or_after_close_is_an_error() -> None:
    async def scenario() -> None:
        socket = WebSocket(FakeNative(["x"]))
        with pytest.raises(RuntimeError, match="accept"):
            await socket.receive()
        with pytest.raises(RuntimeError, match="accept"):
            await socket.send_text("x")
        await socket.accept()
        with pytest.raises(RuntimeError, match="called already"):
            await socket.accept()
        with pytest.raises(TypeError):
            await socket.send_text(b"bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await socket.receive_bytes()
        await socket.send_json({"a": [1, 2.5], "é": None})
        with pytest.raises(ValueError):
            await socket.send_json(float("nan"))
        await socket.close(4000, "bye")
        await socket.close()
        with pytest.raises(RuntimeError, match="closed"):
            await socket.send_bytes(b"x")

    asyncio.run(scenario())


def test_the_disconnect_carries_its_code() -> None:
    error = WebSocketDisconnect(1006, "gone")
    assert (error.code, error.reason) == (1006, "gone")
    assert "1006" in str(error)
