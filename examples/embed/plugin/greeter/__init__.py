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


@router.get("/lookup/{key}")
async def lookup(request: Request) -> dict[str, object]:
    """A slow sync host function, awaited: it runs on a host thread, the loop serves on."""
    ms = int(request.query_params.get("ms", "50"))
    return await host.call_async("slow_lookup", {"key": request.path_params["key"], "ms": ms})


@router.get("/lookup-blocking/{key}")
async def lookup_blocking(request: Request) -> dict[str, object]:
    """The same call made synchronously: the event loop waits for it (for comparison)."""
    ms = int(request.query_params.get("ms", "50"))
    return host.call("slow_lookup", {"key": request.path_params["key"], "ms": ms})


@router.post("/visits-async")
async def count_visit_async(request: Request) -> dict[str, int]:
    """The key-value store through its awaitable forms, off the event loop."""
    visits = int(await host.kv.get_async("visits-async") or b"0") + 1
    await host.kv.set_async("visits-async", str(visits))
    return {"visits": visits}
