"""benchapp: the pyhost handlers of the benchmark.

Each endpoint does the same work as its twin in ``bench/apps/asgi_app.py`` and
``bench/apps/rsgi_app.py``; here the routing, path-parameter parsing and JSON encoding are the
host's, as in any pyhost app. ``/mw/hello`` is ``/hello`` on a router of its own, included
under ``/mw``, whose one middleware adds ``x-mw: 1``: its twin is in
``bench/apps/starlette_app.py``, and so is the twin of ``/ws``, a WebSocket echo. The routes of
``router`` itself run no middleware.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pyhost import (
    EventSourceResponse,
    FileResponse,
    Request,
    Response,
    Router,
    ServerSentEvent,
    WebSocket,
)

router = Router()
mw_router = Router()


@router.get("/hello")
async def hello(request: Request) -> dict[str, str]:
    """A constant JSON object: the cost of the request path itself."""
    return {"message": "hello"}


@router.get("/users/{id:int}")
async def user(request: Request) -> dict[str, Any]:
    """An int path parameter, parsed by the host, echoed in a small JSON object."""
    user_id: int = request.path_params["id"]
    return {"id": user_id, "name": f"user{user_id}"}


@router.post("/echo")
async def echo(request: Request) -> Any:
    """Parse the JSON body and send it back."""
    return request.json


@router.get("/sleep0")
async def sleep0(request: Request) -> dict[str, str]:
    """Yield to the event loop once before answering."""
    await asyncio.sleep(0)
    return {"message": "hello"}


@router.get("/sleep50")
async def sleep50(request: Request) -> dict[str, str]:
    """Wait 50 ms: many requests in flight at once, little CPU each."""
    await asyncio.sleep(0.05)
    return {"message": "hello"}


# The download scenario's file (made by the harness); `/static/big.bin` is the same file
# through the `[static]` mount of ../pyhost.toml, answered without Python.
BENCH_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "static", "big.bin")


@router.get("/file")
async def file(request: Request) -> FileResponse:
    """A file named by the handler, read and sent by the host."""
    return FileResponse(BENCH_FILE)


SSE_TEXT = "the quick brown fox jumps over the lazy dog"


@router.get("/sse")
async def sse(request: Request) -> EventSourceResponse:
    """An endless event stream, one event per turn of the event loop (as a producer waiting
    on something for each event would), as fast as the client takes them.

    Its twin in ``bench/apps/starlette_app.py`` writes the same bytes with an f-string.
    """

    async def events() -> AsyncIterator[ServerSentEvent]:
        n = 0
        while True:
            n += 1
            await asyncio.sleep(0)
            yield ServerSentEvent(f"{n} {SSE_TEXT}", id=str(n))

    return EventSourceResponse(events())


@mw_router.middleware
async def add_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """The classic header middleware: ``x-mw: 1`` on the handler's response."""
    response = await call_next(request)
    response.headers["x-mw"] = "1"
    return response


@mw_router.get("/hello")
async def mw_hello(request: Request) -> dict[str, str]:
    """``/hello`` behind ``add_header``."""
    return {"message": "hello"}


@router.websocket("/ws")
async def ws_echo(socket: WebSocket) -> None:
    """Send every text message back (the ``ws`` scenario)."""
    await socket.accept()
    async for message in socket:
        await socket.send_text(str(message))


# After the routes: include() copies the routes the router has at that point.
router.include(mw_router, prefix="/mw")
