"""The raw ASGI app of the benchmark, served by Granian (``--interface asgi``) and uvicorn.

No framework: the path is matched by hand and JSON goes through orjson, so the figures measure
the server, not a framework on top of it. Same endpoints and answers as ``pyhost_app``.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO = orjson.dumps({"message": "hello"})
NOT_FOUND = orjson.dumps({"detail": "Not Found"})
USERS_PREFIX = "/users/"


async def read_body(receive: Receive) -> bytes:
    """Collect the request body from its ``http.request`` messages."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_json(send: Send, status: int, body: bytes) -> None:
    """Send a complete JSON response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge start-up and shutdown; there is nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def route(method: str, path: str, receive: Receive) -> tuple[int, bytes]:
    """Answer one request: the status and JSON body for ``method`` and ``path``."""
    if method == "GET":
        if path == "/hello":
            return 200, HELLO
        if path.startswith(USERS_PREFIX):
            raw_id = path[len(USERS_PREFIX) :]
            if raw_id.isdigit():
                user_id = int(raw_id)
                return 200, orjson.dumps({"id": user_id, "name": f"user{user_id}"})
        elif path == "/sleep0":
            await asyncio.sleep(0)
            return 200, HELLO
        elif path == "/sleep50":
            await asyncio.sleep(0.05)
            return 200, HELLO
    elif method == "POST" and path == "/echo":
        body = await read_body(receive)
        try:
            return 200, orjson.dumps(orjson.loads(body))
        except orjson.JSONDecodeError:
            return 400, orjson.dumps({"detail": "Malformed JSON body"})
    return 404, NOT_FOUND


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    status, body = await route(scope["method"], scope["path"], receive)
    await send_json(send, status, body)
