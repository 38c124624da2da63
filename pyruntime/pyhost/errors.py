"""The exceptions host services raise, and the status codes of the host ABI they carry.

They live apart from :mod:`pyhost.host` so that :mod:`pyhost._abi`, which raises them, and
:mod:`pyhost.host`, which binds :mod:`pyhost._abi`, do not import each other.
:mod:`pyhost.host` re-exports every name here, and :mod:`pyhost` exports the two exceptions.

>>> from pyhost.errors import CapabilityError, Status, error_for_status
>>> error = error_for_status(Status.DENIED, 'capability "kv" is not granted')
>>> isinstance(error, CapabilityError), isinstance(error, PermissionError), error.status
(True, True, <Status.DENIED: 2>)
"""

from __future__ import annotations

import enum
from typing import Any

__all__ = ["CapabilityError", "HostError", "Status", "error_for_status"]


class Status(enum.IntEnum):
    """Status codes of the host ABI (``PYHOST_*`` in ``pyhost_host.h``)."""

    OK = 0
    NOT_FOUND = 1
    DENIED = 2
    ERROR = 3
    INVALID = 4
    NO_SUCH_FUNCTION = 5


class HostError(Exception):
    """A host service failed; ``status`` is the host's status code, the message the host's.

    ``str(error)`` is the host's message.
    """

    status: int
    message: str

    def __new__(cls, status: int, message: str) -> HostError:
        # Only the message goes to the base constructor, so that CapabilityError, which is
        # also an OSError, does not read (status, message) as (errno, strerror).
        return super().__new__(cls, message)

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self.status)!r}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.status, self.message)


class CapabilityError(HostError, PermissionError):
    """The config does not grant the calling plugin the capability a service needs.

    The message names the capability and the config key that grants it.
    """


def error_for_status(status: int, message: str) -> HostError:
    """Return the exception for a failed host call: :class:`CapabilityError` for
    ``PYHOST_DENIED``, :class:`HostError` for any other status."""
    if status == Status.DENIED:
        return CapabilityError(status, message)
    return HostError(status, message)
