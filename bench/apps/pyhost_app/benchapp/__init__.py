"""benchapp: the pyhost handlers of the benchmark.

Each endpoint does the same work as its twin in ``bench/apps/asgi_app.py`` and
``bench/apps/rsgi_app.py``; here the routing, path-parameter parsing and JSON encoding are the
host's, as in any pyhost app.
"""

import asyncio
from typing import Any

from pyhost import Request, Router

router = Router()


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
