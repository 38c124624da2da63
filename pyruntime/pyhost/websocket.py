"""WebSocket handlers: the :class:`WebSocket` a handler declared with ``router.websocket`` gets,
and :class:`WebSocketDisconnect`.

The protocol is the host's (framing, ping/pong, fragments, the close handshake, the size and
UTF-8 checks all run in Rust); this class only moves messages. Each call tries the host's
queue first and waits only when it must: a receive while no message has come, a send while
the client is not taking what was sent (so a client that does not read holds up its handler's
sends rather than growing the server's memory).

>>> from pyhost import Router
>>> router = Router()
>>> @router.websocket("/echo")
... async def echo(socket):
...     await socket.accept()
...     async for message in socket:
...         await socket.send_text(message if isinstance(message, str) else message.hex())
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from .datastructures import Headers, QueryParams, State
from .responses import _render_json

__all__ = ["WebSocket", "WebSocketDisconnect"]


class WebSocketDisconnect(Exception):
    """The connection is closed: the client closed it (``code`` is the code it sent, 1005 when
    it sent none), vanished (1006), broke the protocol (1002, 1007 for invalid UTF-8, 1009 for a
    message over ``[websocket] max_message``), or the server closed it (the code of
    :meth:`WebSocket.close`, 1001 at shutdown).

    Raised by the pending or next receive or send. A handler that lets it propagate has
    simply finished: it is not logged as an error.
    """

    def __init__(self, code: int = 1000, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        suffix = f": {self.reason}" if self.reason else ""
        return f"WebSocket closed with code {self.code}{suffix}"


class _Native(Protocol):
    """The host's socket (``NativeWebSocket``): the loop side of the connection's queues."""

    @property
    def request(self) -> Any: ...
    @property
    def subprotocols(self) -> list[str]: ...
    @property
    def close_status(self) -> tuple[int, str] | None: ...
    def accept(self, subprotocol: str | None, headers: list[tuple[str, str]]) -> bool: ...
    def try_receive(self) -> str | bytes | None: ...
    def receive_ready(self) -> asyncio.Future[None]: ...
    def try_send(self, message: str | bytes) -> bool: ...
    def try_close(self, code: int, reason: str) -> bool: ...
    def send_ready(self) -> asyncio.Future[None]: ...


_NEW, _ACCEPTED, _CLOSED = 0, 1, 2


async def _wait(waiter: asyncio.Future[None]) -> None:
    """Await a queue's wake-up, which several tasks of one socket may share (the host keeps
    one per queue).

    A task cancelled while it waits cancels the shared future too; the others then see a
    ``CancelledError`` that is not theirs, and look again instead of ending.
    """
    try:
        await waiter
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise


class WebSocket:
    """One WebSocket connection, as its handler sees it.

    The upgrade request's attributes are read as on a request: ``path_params``, ``query``
    (declared, typed), ``query_params``, ``headers``, ``header_params`` and ``cookies``
    (declared, typed), ``client``, ``url``, ``path``, ``request_id``, ``state``; they were
    validated before the handler was called.

    Call :meth:`accept` first; a handler that returns without accepting refuses the
    connection with 403. After accepting, returning closes it with 1000 and raising with 1011.
    """

    __slots__ = ("_native", "_receiving", "_request", "_sending", "_state")

    def __init__(self, native: _Native) -> None:
        self._native = native
        self._request = native.request
        self._state = _NEW
        self._receiving: asyncio.Future[None] | None = None
        self._sending: asyncio.Future[None] | None = None

    # --- the upgrade request ---------------------------------------------------------------

    @property
    def path(self) -> str:
        """The percent-decoded path."""
        return str(self._request.path)

    @property
    def url(self) -> str:
        """The URL as the client addressed it (``http://``, as in the upgrade request)."""
        return str(self._request.url)

    @property
    def path_params(self) -> dict[str, Any]:
        """Typed path parameters."""
        params: dict[str, Any] = self._request.path_params
        return params

    @property
    def query(self) -> dict[str, Any]:
        """Declared query parameters, validated and typed."""
        query: dict[str, Any] = self._request.query
        return query

    @property
    def query_params(self) -> QueryParams:
        """Every query pair (repeats kept)."""
        params: QueryParams = self._request.query_params
        return params

    @property
    def headers(self) -> Headers:
        """The upgrade request's headers (case-insensitive)."""
        headers: Headers = self._request.headers
        return headers

    @property
    def header_params(self) -> dict[str, Any]:
        """Declared headers, validated and typed, by lower-case name."""
        params: dict[str, Any] = self._request.header_params
        return params

    @property
    def cookies(self) -> dict[str, Any]:
        """Declared cookies, validated and typed."""
        cookies: dict[str, Any] = self._request.cookies
        return cookies

    @property
    def client(self) -> tuple[str, int] | None:
        """``(host, port)`` of the peer."""
        client: tuple[str, int] | None = self._request.client
        return client

    @property
    def request_id(self) -> str:
        """This connection's request id, as in the logs."""
        return str(self._request.request_id)

    @property
    def state(self) -> State:
        """The plugin's application state (what its lifespan yielded)."""
        state: State = self._request.state
        return state

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered (``Sec-WebSocket-Protocol``), in its order."""
        return self._native.subprotocols

    # --- the conversation ------------------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    ) -> None:
        """Accept the connection: the client gets ``101 Switching Protocols`` with
        ``subprotocol`` (one of :attr:`subprotocols`; ``ValueError`` otherwise) and ``headers``.

        Raises ``WebSocketDisconnect`` (1006) when the client has gone away meanwhile.
        """
        if self._state != _NEW:
            raise RuntimeError("accept() was called already")
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        accepted = self._native.accept(subprotocol, pairs)
        self._state = _ACCEPTED
        if not accepted:
            raise WebSocketDisconnect(1006, "the client went away before the handshake ended")

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for a text message, ``bytes`` for a binary one."""
        self._check_accepted()
        native = self._native
        while True:
            message = native.try_receive()
            if message is not None:
                return message
            waiter = self._receiving
            if waiter is None or waiter.done():
                waiter = self._receiving = native.receive_ready()
            await _wait(waiter)

    async def receive_text(self) -> str:
        """The next message, which must be a text message (``TypeError`` otherwise)."""
        message = await self.receive()
        if not isinstance(message, str):
            raise TypeError("expected a text message, got a binary one")
        return message

    async def receive_bytes(self) -> bytes:
        """The next message, which must be a binary message (``TypeError`` otherwise)."""
        message = await self.receive()
        if not isinstance(message, bytes):
            raise TypeError("expected a binary message, got a text one")
        return message

    async def receive_json(self) -> Any:
        """The next message (text or binary) parsed as JSON (``ValueError`` if it is not)."""
        return json.loads(await self.receive())

    async def send_text(self, data: str) -> None:
        """Send a text message; waits while the client is not taking what was sent."""
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, got {type(data).__name__}")
        await self._send(data)

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send a binary message; waits while the client is not taking what was sent."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_bytes() takes bytes, got {type(data).__name__}")
        await self._send(bytes(data))

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as JSON in a text message, encoded as the host encodes returned values
        (compact, non-ASCII kept; NaN, the infinities and integers beyond 64 bits refused with
        ``ValueError``)."""
        await self._send(_render_json(data).decode())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason`` (at most 123 bytes). Before
        :meth:`accept`, refuses the connection (403) instead. Closing twice does nothing."""
        if self._state == _NEW:
            self._state = _CLOSED
            return
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        native = self._native
        try:
            while not native.try_close(code, reason):
                await self._wait_send()
        except WebSocketDisconnect:
            pass

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        """Each message until the connection closes (the iteration then just ends)."""
        while True:
            try:
                message = await self.receive()
            except WebSocketDisconnect:
                return
            yield message

    async def _send(self, message: str | bytes) -> None:
        if self._state != _ACCEPTED:
            self._check_accepted()
            raise RuntimeError("this WebSocket is closed: nothing can be sent after close()")
        native = self._native
        while not native.try_send(message):
            await self._wait_send()

    async def _wait_send(self) -> None:
        waiter = self._sending
        if waiter is None or waiter.done():
            waiter = self._sending = self._native.send_ready()
        await _wait(waiter)

    def _check_accepted(self) -> None:
        if self._state == _NEW:
            raise RuntimeError("accept() the WebSocket before receiving or sending")

    def __repr__(self) -> str:
        return f"<WebSocket {self.path}>"
