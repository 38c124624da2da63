"""Host-internal: the task body of plain ``def`` handlers, and the timeout exception.

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


def make_sync_invoker(loop, executor, current):
    """The task body for a plain ``def`` handler: it runs on the executor, off the loop.

    ``async def`` handlers need no Python wrapper: the host runs their coroutine directly as
    the task, through its stepper.
    """
    set_current = current.set
    run_in_executor = loop.run_in_executor
    copy_context = contextvars.copy_context
    cancelled_error = asyncio.CancelledError

    async def invoke_sync(handler, request, completer):
        # `current` names the request in host log records (which plugin is calling is the
        # host's to know: the handler is a PluginCall); the thread runs in a copy of this
        # task's context, so contextvars set by the handler stay with it.
        set_current(request)
        try:
            result = await run_in_executor(executor, copy_context().run, handler, request)
        except BaseException as exc:
            completer.fail(exc)
            if isinstance(exc, cancelled_error):
                raise
        else:
            completer.done(result)

    return invoke_sync
