"""Running one plugin's lifespan hooks: the host calls :meth:`Lifespan.startup` on its event
loop before serving, and :meth:`Lifespan.shutdown` after the last request has drained.

Hooks run in declaration order at start-up and in the reverse order at shutdown, as nested
``async with`` blocks would: a lifespan's code after ``yield`` runs after everything declared
later has shut down. A start-up that fails shuts down what had already started, then raises.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .datastructures import State
from .routing import Hook


async def _call(function: Callable[[], Any]) -> Any:
    result = function()
    if inspect.isawaitable(result):
        result = await result
    return result


class Lifespan:
    """The hooks of one plugin's router, and what they started."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self._hooks = list(hooks)
        self._undo: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.current: str | None = None
        """The hook running now, named in the host's messages (a start-up that times out)."""

    async def startup(self) -> State:
        """Runs the start-up half of every hook; returns the state the lifespans yielded."""
        values: dict[str, Any] = {}
        try:
            for hook in self._hooks:
                self.current = hook.name
                if hook.kind == "startup":
                    await _call(hook.function)
                elif hook.kind == "shutdown":
                    self._undo.append((hook.name, _bound_call(hook.function)))
                else:
                    manager = hook.function()
                    yielded = await manager.__aenter__()
                    self._undo.append((hook.name, _exit_of(manager)))
                    if yielded is None:
                        continue
                    if not isinstance(yielded, Mapping):
                        raise TypeError(
                            f"lifespan {hook.name} yielded a {type(yielded).__name__}; "
                            "yield a mapping of names to values (or nothing)"
                        )
                    values.update(yielded)
        except BaseException:
            failed = self.current
            await self.shutdown()
            self.current = failed
            raise
        self.current = None
        return State(values)

    async def shutdown(self) -> list[str]:
        """Runs the shutdown half of every hook that started, the last started first.

        Nothing raised stops the others: each failure comes back as ``hook: traceback``,
        for the host to log.
        """
        failures: list[str] = []
        while self._undo:
            name, undo = self._undo.pop()
            self.current = name
            try:
                await undo()
            except BaseException as exc:  # every failure is reported, none is fatal
                detail = "".join(traceback.format_exception(exc)).rstrip()
                failures.append(f"{name}: {detail}")
        self.current = None
        return failures


def _bound_call(function: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return await _call(function)

    return call


def _exit_of(manager: Any) -> Callable[[], Awaitable[Any]]:
    async def leave() -> Any:
        return await manager.__aexit__(None, None, None)

    return leave
