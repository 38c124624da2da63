"""Host-internal: runs one handler call as its own asyncio task.

Every outcome, including BaseException subclasses such as SystemExit, is handed to the Rust
completer, so nothing a handler raises can escape into the event loop and stop it.
"""

import asyncio
import contextvars


class HandlerTimeout(BaseException):
    """Raised inside a handler that kept the event loop busy past its deadline.

    It derives from BaseException so that ``except Exception`` in handler code does not
    swallow it.
    """


def make_invokers(loop, executor, current):
    # `current` is pyhost._context.current: host services called by the handler act for the
    # request's plugin and log with its request id.
    set_current = current.set
    run_in_executor = loop.run_in_executor
    copy_context = contextvars.copy_context
    cancelled_error = asyncio.CancelledError

    async def invoke_async(handler, request, completer):
        set_current(request)
        try:
            # watch() wraps the coroutine in a deadline-aware stepper when the route has a
            # timeout, and returns it unchanged otherwise.
            result = await completer.watch(handler(request))
        except BaseException as exc:
            completer.fail(exc)
            if isinstance(exc, cancelled_error):
                raise
        else:
            completer.done(result)

    async def invoke_sync(handler, request, completer):
        # The thread runs in a copy of this task's context, so contextvars set by the
        # handler stay with this request.
        set_current(request)
        try:
            result = await run_in_executor(executor, copy_context().run, handler, request)
        except BaseException as exc:
            completer.fail(exc)
            if isinstance(exc, cancelled_error):
                raise
        else:
            completer.done(result)

    return invoke_async, invoke_sync
