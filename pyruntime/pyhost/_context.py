"""Which plugin is calling the host, and for which request.

The host sets :data:`current` for every handler task (to the request object) and, while it
imports a plugin's package, to a :class:`Placeholder` with an empty request id. Host services
read it to tell the host who is asking; outside the host it keeps its default, plugin ``0``
with no request.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from typing import Protocol


class Caller(Protocol):
    """What :data:`current` holds: the calling plugin's index and the current request id."""

    @property
    def plugin(self) -> int:
        """The plugin's index in the host's plugin list (``_pyhost_host.plugins()``)."""
        ...

    @property
    def request_id(self) -> str:
        """The id of the request being handled, ``""`` outside a request."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Placeholder:
    """A :class:`Caller` outside any request: at import time, or outside the host."""

    plugin: int = 0
    request_id: str = ""


OUTSIDE = Placeholder()
"""The default caller: plugin ``0``, no request."""

current: ContextVar[Caller] = ContextVar("pyhost.current", default=OUTSIDE)
"""The caller of host services in the running context (task or thread)."""


def caller() -> tuple[int, str]:
    """Return ``(plugin, request_id)`` of the running context, ``(0, "")`` outside the host."""
    info = current.get()
    return info.plugin, info.request_id


def current_plugin() -> int:
    """Return the index of the calling plugin, ``0`` outside the host."""
    return current.get().plugin
