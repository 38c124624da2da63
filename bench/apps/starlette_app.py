"""The Starlette app of the benchmark, served by Granian (``--interface asgi``).

A framework app, written as Starlette's users write one, for the middleware scenario: ``/hello``
as in every app, and ``/hello`` again under a ``Mount("/mw")`` that runs one middleware adding
``x-mw: 1`` to the response, as ``pyhost_app`` includes a router with one ``@router.middleware``
under ``/mw``; ``/sse``, the event stream of the SSE scenario (``harness/sse.py``), served by
Granian and by uvicorn; and ``/ws``, a WebSocket echo, the twin of ``pyhost_app``'s, for the
``ws`` scenario. The other paths of the raw apps are not here (the harness skips those
scenarios).

Two apps, the same routes, the middleware written both ways Starlette offers:

- ``app``: a pure ASGI middleware, a class that wraps ``send`` and adds the header to the
  ``http.response.start`` message (what Starlette's documentation recommends for speed);
- ``app_basehttp``: a ``BaseHTTPMiddleware`` subclass whose ``dispatch`` awaits
  ``call_next(request)`` and sets the header on the response (what most users write).
"""

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

HELLO = {"message": "hello"}


async def hello(request: Request) -> JSONResponse:
    """A constant JSON object."""
    return JSONResponse(HELLO)


SSE_TEXT = "the quick brown fox jumps over the lazy dog"


async def sse(request: Request) -> StreamingResponse:
    """The SSE scenario: an endless ``text/event-stream``, byte for byte what pyhost's
    ``EventSourceResponse`` of ``ServerSentEvent(f"{n} ...", id=str(n))`` sends."""

    async def events() -> AsyncIterator[str]:
        n = 0
        while True:
            n += 1
            # One turn of the loop per event, as in pyhost's: without it the generator never
            # yields (uvicorn's send does not wait while the socket takes the bytes), and one
            # stream, or one whose client has left, keeps the loop to itself.
            await asyncio.sleep(0)
            yield f"data: {n} {SSE_TEXT}\nid: {n}\n\n"

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


async def ws_echo(websocket: WebSocket) -> None:
    """Send every text message back."""
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(message)


class AddHeader:
    """Pure ASGI middleware: ``x-mw: 1`` on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("x-mw", "1")
            await send(message)

        await self.app(scope, receive, send_with_header)


class AddHeaderBase(BaseHTTPMiddleware):
    """The same middleware as a ``BaseHTTPMiddleware``."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-mw"] = "1"
        return response


def build(middleware: Callable[[ASGIApp], ASGIApp]) -> Starlette:
    """The app: ``/hello`` bare, ``/mw/hello`` through ``middleware``."""
    return Starlette(
        routes=[
            Route("/hello", hello),
            Route("/sse", sse),
            WebSocketRoute("/ws", ws_echo),
            Mount("/mw", routes=[Route("/hello", hello)], middleware=[Middleware(middleware)]),
        ]
    )


app = build(AddHeader)
app_basehttp = build(AddHeaderBase)
