"""The application model: a lifespan that opens a database and shares it as
``request.state``, a middleware that authenticates every route of this router, declared headers
and cookies checked by the host, and cookies set and cleared on responses.

    POST   /account/login     {"name": ...}: a session cookie (no auth needed)
    GET    /account/me        who the session belongs to (auth: the cookie)
    POST   /account/logout    clears the cookie
    GET    /account/keys      auth by an ``x-api-key`` header of 16+ characters instead
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyhost import Cookie, Header, JSONResponse, Request, Response, Router
from pyhost.routing import CallNext

router = Router()
OPEN = ("/account/login",)


@router.lifespan
async def database() -> AsyncIterator[dict[str, Any]]:
    """Opened once, before the first request; closed at shutdown, after the last one."""
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE sessions (token TEXT PRIMARY KEY, name TEXT NOT NULL)")
    yield {"db": db}
    db.close()


@router.middleware
async def authenticate(request: Request, call_next: CallNext) -> Response:
    """Every route of this router but login needs a session cookie or an API key."""
    if request.path in OPEN or "x-api-key" in request.headers:
        return await call_next(request)
    token = _cookie(request, "session")
    row = request.state.db.execute("SELECT name FROM sessions WHERE token = ?", (token,)).fetchone()
    if row is None:
        return JSONResponse({"detail": "sign in at POST /account/login"}, status=401)
    response = await call_next(request)
    response.headers["x-user"] = row[0]
    return response


@dataclass
class Login:
    name: str


@router.post("/login", body=Login)
async def login(request: Request) -> Response:
    token = secrets.token_urlsafe(16)
    request.state.db.execute("INSERT INTO sessions VALUES (?, ?)", (token, request.json["name"]))
    response = JSONResponse({"signed_in": request.json["name"]})
    response.set_cookie("session", token, httponly=True, samesite="strict", max_age=3600)
    return response


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    # Not declared as a Cookie here: declared parameters are checked before any Python runs,
    # middleware included, so a missing cookie would be a 422 instead of the middleware's 401.
    (name,) = request.state.db.execute(
        "SELECT name FROM sessions WHERE token = ?", (_cookie(request, "session"),)
    ).fetchone()
    return {"name": name}


@router.post("/logout", cookies={"session": Cookie(str, min_length=8)})
async def logout(request: Request) -> Response:
    request.state.db.execute("DELETE FROM sessions WHERE token = ?", (request.cookies["session"],))
    response = JSONResponse({"signed_out": True})
    response.delete_cookie("session")
    return response


@router.get("/keys", headers={"x-api-key": Header(str, min_length=16)})
async def keys(request: Request) -> dict[str, Any]:
    return {"key_prefix": request.header_params["x-api-key"][:4]}


def _cookie(request: Request, name: str) -> str | None:
    for part in request.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None
