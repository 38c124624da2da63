"""The shape of the request object the host passes to handlers, for type hints.

The host builds the object itself; this module only describes it, so a handler can be written
as ``async def handler(request: Request) -> ...`` and type-checked.
"""

from __future__ import annotations

from typing import Any, Protocol

from .datastructures import Headers, QueryParams


class Request(Protocol):
    """An incoming request as seen by a handler.

    Every attribute can also be read as ``request["name"]``, ``request.get("name")`` and tested
    with ``"name" in request``; both forms give the same value.
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
    def body(self) -> bytes:
        """The raw request body."""
        ...

    @property
    def json(self) -> Any:
        """The body parsed as JSON.

        Already parsed and validated when the route declares a body; otherwise parsed on first
        access, raising ``HTTPError(400)`` when the body is not valid JSON.
        """
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

    def __getitem__(self, key: str) -> Any:
        """Return the attribute named ``key``; ``KeyError`` if there is none."""
        ...

    def get(self, key: str, default: Any = None) -> Any:
        """Return the attribute named ``key``, or ``default`` if there is none."""
        ...

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` names an attribute of the request."""
        ...
