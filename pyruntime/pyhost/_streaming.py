"""Host-internal: the task that feeds a :class:`~pyhost.responses.StreamingResponse` to the host.

The host starts :func:`pump` as a task of the route's plugin once the response's head is on
its way, with a *sink*: the loop end of a bounded channel whose other end is the response body
hyper sends. ``sink.offer(data)`` queues a chunk unless the channel is full; ``sink.ready()``
is a future done when there is room again or the client has gone (``sink.closed``), so the
producer is advanced no faster than the client reads. The pump ends by telling the sink how
the stream ended: ``finish()`` (complete), ``abort(exc)`` (the producer raised: the host logs
it and the client sees an incomplete response) or ``close()`` (cancelled: the client went away
or the stream timed out). A client that goes away cancels this task, and the producer's
``finally`` blocks run as the cancellation unwinds it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterable, Callable, Iterator
from typing import Any, Protocol

from .responses import StreamingResponse, _start_background

_DONE: Any = object()


class Sink(Protocol):
    """The host's end of a response stream, as the pump uses it."""

    @property
    def closed(self) -> bool: ...

    @property
    def request_id(self) -> str: ...

    def offer(self, data: bytes) -> bool: ...

    def ready(self) -> asyncio.Future[None]: ...

    def finish(self) -> None: ...

    def abort(self, error: BaseException) -> None: ...

    def close(self) -> None: ...


async def _wait_and_offer(sink: Sink, data: bytes) -> bool:
    """Offer ``data`` until the sink takes it; False once the client has gone."""
    while True:
        if sink.closed:
            return False
        await sink.ready()
        if sink.offer(data):
            return True


async def pump(response: StreamingResponse, sink: Sink) -> None:
    """Send every chunk of ``response.content`` through ``sink``, then say how it ended."""
    encode = response.encode_chunk
    content = response.content
    try:
        if isinstance(content, AsyncIterable):
            complete = await _from_async(content, encode, sink)
        elif isinstance(content, list | tuple):
            complete = await _from_sequence(content, encode, sink)
        else:
            complete = await _from_thread(iter(content), encode, sink)
    except (asyncio.CancelledError, GeneratorExit):
        # Cancelled (the client went away, the stream timed out), or closed unfinished (the
        # loop is shutting down): the response is cut short, nothing to log.
        sink.close()
        raise
    except BaseException as exc:
        sink.abort(exc)
        return
    if not complete:
        sink.close()
        return
    sink.finish()
    if response.background is not None:
        _start_background(response.background, sink.request_id)


async def _from_async(
    content: AsyncIterable[Any], encode: Callable[[Any], bytes], sink: Sink
) -> bool:
    iterator = aiter(content)
    try:
        async for item in iterator:
            data = encode(item)
            if data and not sink.offer(data) and not await _wait_and_offer(sink, data):
                return False
        return True
    finally:
        # An async generator left at a `yield` (the client went away, or the stream was
        # cancelled while waiting for room) runs its `finally` blocks only when closed.
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _from_sequence(
    content: list[Any] | tuple[Any, ...], encode: Callable[[Any], bytes], sink: Sink
) -> bool:
    for item in content:
        data = encode(item)
        if data and not sink.offer(data) and not await _wait_and_offer(sink, data):
            return False
    return True


async def _from_thread(iterator: Iterator[Any], encode: Callable[[Any], bytes], sink: Sink) -> bool:
    """A plain iterator may block (a file, a ``def`` generator that sleeps): each ``next`` runs
    on a worker thread, one at a time, so the loop never waits on it."""
    lock = threading.Lock()

    def step() -> Any:
        with lock:
            return next(iterator, _DONE)

    exhausted = False
    try:
        while True:
            item = await asyncio.to_thread(step)
            if item is _DONE:
                exhausted = True
                return True
            data = encode(item)
            if data and not sink.offer(data) and not await _wait_and_offer(sink, data):
                return False
    finally:
        close = getattr(iterator, "close", None)
        if not exhausted and close is not None:
            _close_on_thread(close, lock)


def _close_on_thread(close: Callable[[], Any], lock: threading.Lock) -> None:
    """Close a generator (running its ``finally``) on a worker thread, once the ``next`` that
    may still be running there has returned: the lock orders the two."""

    def run() -> None:
        with lock:
            close()

    def log_failure(future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            logging.getLogger("pyhost").error(
                "closing a streamed response's iterator failed", exc_info=future.exception()
            )

    asyncio.get_running_loop().run_in_executor(None, run).add_done_callback(log_failure)
