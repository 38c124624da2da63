"""asyncio in handlers, included under ``/concurrency``.

``async def`` handlers run as tasks on the host's event loop, so everything asyncio offers works
in them: awaiting, ``asyncio.gather``, ``asyncio.timeout``, ``asyncio.current_task()``, and
context variables, which every request gets a fresh copy of. Plain ``def`` handlers run on a pool
of worker threads (``server.sync_threads``), so a blocking call there does not stall the loop.
"""

import asyncio
import contextvars
import threading
import time
from typing import Any

from pyhost import HTTPError, Query, Request, Router

router = Router()

# Set once per request below; concurrent requests never see each other's value.
current_label: contextvars.ContextVar[str] = contextvars.ContextVar("current_label")


@router.get("/sleep", query={"seconds": Query(float, default=0.2, ge=0, le=5)})
async def sleep(request: Request) -> dict[str, float]:
    """Awaiting does not block other requests: many of these can be in flight at once."""
    await asyncio.sleep(request.query["seconds"])
    return {"slept": request.query["seconds"]}


async def _square_later(n: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return n * n


@router.get(
    "/gather",
    query={"n": Query(int, default=5, ge=1, le=50), "delay": Query(float, default=0.1, ge=0, le=1)},
)
async def gather(request: Request) -> dict[str, Any]:
    """Run n sleeps concurrently: the whole takes about one delay, not n of them."""
    n, delay = request.query["n"], request.query["delay"]
    started = time.perf_counter()
    results = await asyncio.gather(*(_square_later(i, delay) for i in range(n)))
    return {"results": results, "elapsed": round(time.perf_counter() - started, 3)}


@router.get(
    "/timeout",
    query={
        "work": Query(float, default=1.0, ge=0, le=10),
        "limit": Query(float, default=0.1, gt=0),
    },
)
async def with_timeout(request: Request) -> dict[str, Any]:
    """Bound slow work with ``asyncio.timeout``; answer 504 when it runs out."""
    work, limit = request.query["work"], request.query["limit"]
    try:
        async with asyncio.timeout(limit):
            await asyncio.sleep(work)
    except TimeoutError:
        raise HTTPError(504, f"gave up after {limit}s") from None
    return {"work": work, "limit": limit, "finished": True}


@router.get("/task", query={"delay": Query(float, default=0.0, ge=0, le=5)})
async def task(request: Request) -> dict[str, Any]:
    """Each request runs in its own asyncio task."""
    current = asyncio.current_task()
    await asyncio.sleep(request.query["delay"])
    return {
        "has_task": current is not None,
        "task_id": id(current),
        "same_task_after_await": asyncio.current_task() is current,
    }


async def _label_seen_deep_down() -> str:
    # No request passed around: the context variable carries it, even into child tasks.
    await asyncio.sleep(0)
    return current_label.get()


@router.get(
    "/context",
    query={
        "label": Query(str, min_length=1, max_length=50),
        "delay": Query(float, default=0.1, ge=0, le=5),
    },
)
async def context(request: Request) -> dict[str, Any]:
    """Set a context variable for this request only, then read it back after other requests ran."""
    before = current_label.get(None)  # always None: each request starts from a fresh context
    current_label.set(request.query["label"])
    await asyncio.sleep(request.query["delay"])
    in_child_task = await asyncio.create_task(_label_seen_deep_down())
    return {
        "before": before,
        "label": request.query["label"],
        "after_await": current_label.get(),
        "in_child_task": in_child_task,
    }


@router.get("/blocking", query={"seconds": Query(float, default=1.0, ge=0, le=10)})
def blocking(request: Request) -> dict[str, Any]:
    """A plain ``def``: blocking here (time.sleep, a sync driver, CPU work) is fine."""
    time.sleep(request.query["seconds"])
    try:
        asyncio.get_running_loop()
        in_event_loop = True
    except RuntimeError:
        in_event_loop = False
    return {
        "slept": request.query["seconds"],
        "thread": threading.current_thread().name,
        "in_event_loop": in_event_loop,
    }
