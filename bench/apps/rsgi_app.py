"""The raw RSGI app of the benchmark, served by ``granian --interface rsgi``.

No framework: the path is matched by hand and JSON goes through orjson. Same endpoints and
answers as ``pyhost_app`` and ``asgi_app``.
"""

import asyncio
import os
from typing import Any

import orjson

HELLO = orjson.dumps({"message": "hello"})
NOT_FOUND = orjson.dumps({"detail": "Not Found"})
USERS_PREFIX = "/users/"
JSON_HEADERS = [("content-type", "application/json")]
# The download scenario's file (made by the harness), sent with RSGI's `response_file`.
BENCH_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static", "big.bin")
FILE_HEADERS = [("content-type", "application/octet-stream")]


async def route(method: str, path: str, protocol: Any) -> tuple[int, bytes]:
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
        body = await protocol()
        try:
            return 200, orjson.dumps(orjson.loads(body))
        except orjson.JSONDecodeError:
            return 400, orjson.dumps({"detail": "Malformed JSON body"})
    return 404, NOT_FOUND


async def app(scope: Any, protocol: Any) -> None:
    """RSGI entry point (``scope.proto`` is ``"http"`` for every request here)."""
    if scope.proto != "http":
        return
    if scope.method == "GET" and scope.path == "/file":
        protocol.response_file(200, FILE_HEADERS, BENCH_FILE)
        return
    status, body = await route(scope.method, scope.path, protocol)
    protocol.response_bytes(status, JSON_HEADERS, body)
