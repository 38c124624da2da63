"""Host-internal: the work a plugin's code starts keeps the plugin's identity.

``bind`` and ``inherit`` are the host's (Rust) functions: ``bind(fn)`` returns a callable that
runs ``fn`` as the plugin whose code called ``bind``; ``inherit(coro)`` returns a coroutine
stepped as the plugin whose code created it. Neither takes an identity as an argument, so
nothing here lets code act as another plugin.
"""

import concurrent.futures
import threading


def install(bind, inherit):
    """Hook thread start and pool submission; return the task factory for the host's loop."""
    thread_start = threading.Thread.start

    def start(self):
        # `run` is looked up on the instance by Thread._bootstrap_inner.
        self.run = bind(self.run)
        thread_start(self)

    start.__doc__ = thread_start.__doc__
    threading.Thread.start = start

    pool = concurrent.futures.ThreadPoolExecutor
    pool_submit = pool.submit

    def submit(self, fn, /, *args, **kwargs):
        # Every item is bound, even outside plugin code: a pool's worker thread keeps the
        # identity of whoever started it, and an item must never run with that one instead
        # of its own submitter's.
        return pool_submit(self, bind(fn), *args, **kwargs)

    submit.__doc__ = pool_submit.__doc__
    pool.submit = submit

    task_type = None

    def task_factory(loop, coro, **kwargs):
        nonlocal task_type
        if task_type is None:
            import asyncio

            task_type = asyncio.Task
        return task_type(inherit(coro), loop=loop, **kwargs)

    return task_factory
