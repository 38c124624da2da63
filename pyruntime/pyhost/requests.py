"""The shape of the request object the host passes to handlers, for type hints and checks.

The host builds the object itself; this module only describes it, so a handler can be written
as ``async def handler(request: Request) -> ...`` and type-checked, and
``isinstance(obj, Request)`` tells whether ``obj`` has the request's attributes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from .datastructures import Headers, QueryParams, State
from .forms import FormData

if TYPE_CHECKING:
    from typing import _ProtocolMeta
else:
    # The metaclass of every Protocol class (a private name of `typing`, so not imported).
    _ProtocolMeta = type(Protocol)


class _StaticProtocolMeta(_ProtocolMeta):
    # `@runtime_checkable` alone makes `isinstance` take about 100 microseconds (on Python
    # 3.11 to 3.13), and on 3.11 it reads every attribute of the object: for the host's request
    # that builds the headers and parses the body as JSON, raising HTTPError for a malformed
    # one. This check looks the members up without reading them, as `inspect.getattr_static`
    # does, in a few microseconds.
    def __instancecheck__(cls, instance: object) -> bool:
        if cls is not Request:
            # A protocol extending Request, or a class implementing it: typing's own check.
            return super().__instancecheck__(instance)
        namespaces = [base.__dict__ for base in type(instance).__mro__]
        own: dict[str, Any] | None = None
        for name, is_method in _MEMBERS:
            for namespace in namespaces:
                if name in namespace:
                    value = namespace[name]
                    break
            else:
                # Python looks special methods up on the type only, so they count only there.
                if name.startswith("__"):
                    return False
                if own is None:
                    try:
                        own = object.__getattribute__(instance, "__dict__")
                    except AttributeError:
                        return False
                    if not isinstance(own, dict):
                        return False
                if name not in own:
                    return False
                value = own[name]
            # As in typing's check, a method set to None opts out of the protocol.
            if is_method and value is None:
                return False
        return True


@runtime_checkable
class Request(Protocol, metaclass=_StaticProtocolMeta):
    """An incoming request as seen by a handler.

    Every attribute can also be read as ``request["name"]``, ``request.get("name")`` and tested
    with ``"name" in request``; both forms give the same value.

    ``Request`` is a :class:`typing.Protocol`, not a base class: the host's request object has
    these attributes without deriving from it. The name is kept, and ``isinstance`` made to
    work (the protocol is ``@runtime_checkable``): ``isinstance(obj, Request)`` checks
    structurally that ``obj`` or its class defines every attribute and method below, the
    special methods on its class (where Python looks for them), and that no method is set to
    ``None``. It only looks the names up and never reads them, so it neither builds the headers
    nor parses the body, and takes microseconds. ``issubclass`` is refused, as for every
    protocol with attributes.

    The host's object also has ``keys()`` (the names readable as ``request["name"]``) and
    ``plugin`` (the host's index of the plugin the route belongs to); the protocol leaves them
    out, so a test double need not have them.

    >>> isinstance({"method": "GET", "path": "/"}, Request)
    False
    """

    @property
    def method(self) -> str:
        """The upper-case HTTP method, such as ``"GET"``."""
        ...

    @property
    def path(self) -> str:
        """The request path without the query string, such as ``"/users/42"``."""
        ...

    @property
    def url(self) -> str:
        """The full URL, query string included."""
        ...

    @property
    def query_string(self) -> str:
        """The raw query string, without the leading ``?`` (empty if there is none)."""
        ...

    @property
    def path_params(self) -> dict[str, Any]:
        """The path parameters by name, converted to their declared types."""
        ...

    @property
    def query_params(self) -> QueryParams:
        """Every query parameter as given, repeated keys kept, values as strings."""
        ...

    @property
    def query(self) -> dict[str, Any]:
        """The declared query parameters, validated and typed, with defaults filled in."""
        ...

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive."""
        ...

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header a reconnecting ``EventSource`` sends (the ``id`` of the
        last server-sent event it received), or ``None``."""
        ...

    @property
    def body(self) -> Any:
        """The raw request body, ``bytes``.

        On a ``stream=True`` route the body has not been read yet: ``await request.body()``
        reads the rest of the stream whole, under the route's body limit.
        """
        ...

    @property
    def json(self) -> Any:
        """The body parsed as JSON.

        Already parsed and validated when the route declares a body; otherwise parsed on first
        access, raising ``HTTPError(400)`` when the body is not valid JSON. On a
        ``stream=True`` route, ``await request.json()``.
        """
        ...

    def stream(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive: ``async for chunk in request.stream()``.

        On a ``stream=True`` route the connection is read no faster than the handler iterates,
        and a body over the route's limit (or too slow, or broken) raises ``HTTPError`` (413,
        408, 400) from the loop; it can be iterated once. On other routes it yields the whole
        body as one chunk.
        """
        ...

    def form(self) -> Awaitable[FormData]:
        """``await request.form()``: the body parsed as a form (urlencoded or multipart), in
        Rust, off the event loop; ``HTTPError`` (400, 413, 415) for a body that is not a valid
        form within the limits. Parsed before the handler ran on a route declaring ``form=``."""
        ...

    @property
    def form_params(self) -> dict[str, Any]:
        """The declared form fields (``form=`` on the route), validated and typed."""
        ...

    @property
    def client(self) -> tuple[str, int] | None:
        """The peer's ``(host, port)``, when known."""
        ...

    @property
    def request_id(self) -> str:
        """The id of this request, also sent back as ``x-request-id``."""
        ...

    @property
    def route(self) -> str:
        """The path template of the route that matched, such as ``"/users/{user_id:int}"``."""
        ...

    @property
    def header_params(self) -> dict[str, Any]:
        """The declared headers (``headers=`` on the route), typed, by lower-case name."""
        ...

    @property
    def cookies(self) -> dict[str, Any]:
        """The declared cookies (``cookies=`` on the route), typed."""
        ...

    @property
    def state(self) -> State:
        """What the plugin's lifespan yielded (``request.state.db``), shared by its requests;
        empty without a lifespan."""
        ...

    def __getitem__(self, key: str) -> Any:
        """Return the attribute named ``key``; ``KeyError`` if there is none."""
        ...

    def get(self, key: str, default: Any = None) -> Any:
        """Return the attribute named ``key``, or ``default`` if there is none."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` names an attribute of the request."""
        ...


def _members(protocol: type) -> tuple[tuple[str, bool], ...]:
    # What the class body defines, each with whether it is a method; typing adds members of its
    # own (`__init__`, `__subclasshook__`, ...) that are no part of the protocol.
    members = []
    for name, value in vars(protocol).items():
        if isinstance(value, property):
            members.append((name, False))
        elif inspect.isfunction(value) and value.__qualname__ == f"{protocol.__qualname__}.{name}":
            members.append((name, True))
    return tuple(members)


_MEMBERS: Final = _members(Request)
"""The members ``isinstance(obj, Request)`` looks for, each with whether it is a method."""
