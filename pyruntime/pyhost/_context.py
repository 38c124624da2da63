"""The request the running code handles, for the request id in host log records.

The host sets :data:`current` to the request object for every handler task (and for the
thread of a plain ``def`` handler). It says nothing about *which plugin* is calling: the host
decides that itself, from the code it is running, so setting :data:`current` cannot make a
call act as another plugin. Outside a request it keeps its default, with no request id.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar
from typing import Protocol


class Caller(Protocol):
    """What :data:`current` holds: something with the current request id."""

    @property
    def request_id(self) -> str:
        """The id of the request being handled, ``""`` outside a request."""
        ...


@dataclasses.dataclass(frozen=True, slots=True)
class Placeholder:
    """A :class:`Caller` outside any request: at import time, or outside the host."""

    request_id: str = ""


OUTSIDE = Placeholder()
"""The default: no request."""

current: ContextVar[Caller] = ContextVar("pyhost.current", default=OUTSIDE)
"""The request being handled in the running context (task or thread)."""


def request_id() -> str:
    """Return the id of the request the running context handles, ``""`` outside one."""
    return current.get().request_id
