"""A plugin that calls back into the Rust service embedding it."""

import asyncio
import logging

from pyhost import Request, Router, host

router = Router()
log = logging.getLogger(__name__)


@router.get("/hello/{name}")
async def hello(request: Request) -> dict[str, object]:
    """A sync host function, called with JSON and answering JSON."""
    reply = host.call("greet", {"name": request.path_params["name"]})
    log.info("greeted %s", request.path_params["name"])
    return {"plugin": "greeter", "style": host.settings["greeting_style"], **reply}


@router.get("/double/{n:int}")
async def double(request: Request) -> dict[str, object]:
    """An async host function, awaited on the event loop while it runs on tokio."""
    ms = int(request.query_params.get("ms", "10"))
    timeout = float(request.query_params.get("timeout", "5"))
    try:
        async with asyncio.timeout(timeout):
            reply = await host.call_async("slow_double", {"n": request.path_params["n"], "ms": ms})
    except TimeoutError:
        return {"timed_out": True}
    return reply


@router.post("/visits")
async def count_visit(request: Request) -> dict[str, int]:
    """The host's key-value store."""
    visits = int(host.kv.get("visits") or b"0") + 1
    host.kv.set("visits", str(visits))
    return {"visits": visits}
