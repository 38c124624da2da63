"""Errors, included under ``/errors``.

Raise ``HTTPError(status, detail=None, headers=None)`` to answer with that status and the JSON
body ``{"detail": detail}`` (the reason phrase when no detail is given). Any other exception
escaping a handler is answered with a generic 500 carrying the request id; the traceback goes to
the server log (and into the body too when ``debug = true``).
"""

from typing import Any

from pyhost import HTTPError, Query, Request, Router

router = Router()


@router.get("/not-found")
async def not_found(request: Request) -> None:
    raise HTTPError(404)  # {"detail": "Not Found"}


@router.get("/status/{code:int}")
async def any_status(request: Request) -> None:
    raise HTTPError(request.path_params["code"])


@router.get("/teapot")
async def teapot(request: Request) -> None:
    """A custom detail and extra response headers."""
    raise HTTPError(418, "I'm a teapot, not a coffee machine", headers={"X-Brew": "tea"})


@router.post("/conflict")
async def conflict(request: Request) -> None:
    """The detail can be any JSON value."""
    raise HTTPError(409, {"field": "name", "problem": "already taken"})


@router.get("/divide", query={"a": Query(int), "b": Query(int)})
async def divide(request: Request) -> dict[str, Any]:
    """Handle the exceptions you expect and turn them into a meaningful response."""
    a, b = request.query["a"], request.query["b"]
    try:
        return {"a": a, "b": b, "quotient": a // b}
    except ZeroDivisionError:
        raise HTTPError(400, "b must not be zero") from None


@router.get("/crash")
async def crash(request: Request) -> None:
    """An unhandled exception: 500 with ``{"detail": "Internal Server Error", "request_id": ...}``.

    The log line carries the same request id, the route, this handler and the traceback.
    """
    raise ValueError("boom")
