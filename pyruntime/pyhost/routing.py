"""Route declarations: :class:`Router` collects :class:`Route` objects from decorators.

Nothing here dispatches requests. The host reads ``router.routes`` once at start-up, through
:meth:`Route.spec`, and does the matching and validation itself; this module's job is to record
what the handler author declared and to reject malformed declarations at import time.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from .params import Query
from .schema import json_schema

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Methods a route may declare. ``HEAD`` is answered by the host for every ``GET`` route."""

PATH_CONVERTERS = ("str", "int", "float", "uuid", "path")
"""Converters allowed in ``{name:converter}`` path parameters; ``str`` is the default."""

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Route:
    """One declared route: which requests it takes and the handler that answers them.

    ``name`` is the handler's ``module.qualname``, used by the host in logs and error messages.
    ``is_async`` tells the host to await the handler on its event loop rather than call it on a
    worker thread.
    """

    methods: tuple[str, ...]
    path: str
    handler: Callable[..., Any]
    name: str
    query: Mapping[str, Query]
    body_schema: dict[str, Any] | None
    is_async: bool
    timeout: float | None = None

    def spec(self) -> dict[str, Any]:
        """Describe the route as plain JSON data, the form in which the host reads it."""
        return {
            "methods": list(self.methods),
            "path": self.path,
            "name": self.name,
            "is_async": self.is_async,
            "query": {name: param.spec() for name, param in self.query.items()},
            "body_schema": self.body_schema,
            "timeout": self.timeout,
        }


class Router:
    """A collection of routes, filled by decorating handlers.

    >>> router = Router()
    >>> @router.get("/users/{user_id:int}")
    ... async def get_user(request):
    ...     return {"id": request.path_params["user_id"]}
    >>> [route.path for route in router.routes]
    ['/users/{user_id:int}']

    Handlers take one argument, the request, and may be ``async def`` or plain ``def``. The
    decorators return the handler unchanged. Declaring the same method and path twice is not
    rejected here: the host reports it at start-up, naming both handlers.
    """

    def __init__(self) -> None:
        self._routes: list[Route] = []

    @property
    def routes(self) -> list[Route]:
        """The declared routes, in declaration order (a copy)."""
        return list(self._routes)

    def route(
        self,
        path: str,
        methods: Iterable[str],
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a route for ``methods`` at the path template ``path``.

        ``path`` is made of literal segments and ``{name}`` / ``{name:converter}`` parameters
        (converters: ``str``, ``int``, ``float``, ``uuid``, and ``path`` for the rest of the path,
        last segment only). ``query`` declares the query parameters by name. ``body`` declares a
        JSON request body: a type for :func:`~pyhost.schema.json_schema`, or a JSON Schema
        ``dict`` used as it is. ``timeout`` (seconds) overrides the host's
        ``server.request_timeout`` for this route.

        Raises ``ValueError`` (or ``TypeError`` for arguments of the wrong type) on a malformed
        declaration, before the handler is even defined.
        """
        checked_methods = _check_methods(methods)
        _check_path(path)
        checked_query = _check_query(query)
        body_schema = _body_schema(body)
        checked_timeout = _check_timeout(timeout)

        def decorator(handler: HandlerT) -> HandlerT:
            if not callable(handler):
                raise TypeError(f"a route handler must be callable, got {handler!r}")
            name = _handler_name(handler)
            _check_signature(handler, name)
            self._routes.append(
                Route(
                    methods=checked_methods,
                    path=path,
                    handler=handler,
                    name=name,
                    query=checked_query,
                    body_schema=body_schema,
                    is_async=_is_async(handler),
                    timeout=checked_timeout,
                )
            )
            return handler

        return decorator

    def get(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``GET`` route (``HEAD`` is served from it too); see :meth:`route`."""
        return self.route(path, ["GET"], query=query, body=body, timeout=timeout)

    def post(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``POST`` route; see :meth:`route`."""
        return self.route(path, ["POST"], query=query, body=body, timeout=timeout)

    def put(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``PUT`` route; see :meth:`route`."""
        return self.route(path, ["PUT"], query=query, body=body, timeout=timeout)

    def patch(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``PATCH`` route; see :meth:`route`."""
        return self.route(path, ["PATCH"], query=query, body=body, timeout=timeout)

    def delete(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``DELETE`` route; see :meth:`route`."""
        return self.route(path, ["DELETE"], query=query, body=body, timeout=timeout)

    def include(self, other: Router, prefix: str = "") -> None:
        """Copy the routes of ``other`` into this router, with ``prefix`` put before each path.

        ``prefix`` must start with ``/`` and not end with one (``""`` means no prefix); paths
        are joined as they are, so ``"/"`` under ``"/api"`` becomes ``"/api/"``. Routes added to
        ``other`` afterwards are not copied.
        """
        if not isinstance(other, Router):
            raise TypeError(f"include() expects a Router, got {type(other).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"include() prefix must be a str, got {prefix!r}")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(
                f"include() prefix {prefix!r} must start with '/' and not end with '/'"
            )
        # Snapshot first: including a router into itself must not loop over its own additions.
        for route in other.routes:
            path = prefix + route.path
            _check_path(path)
            self._routes.append(dataclasses.replace(route, path=path))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self._routes)} routes>"


def _check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    if isinstance(methods, str):
        raise TypeError(f'methods must be a list of method names such as ["GET"], got {methods!r}')
    checked: list[str] = []
    for method in methods:
        if not isinstance(method, str):
            raise TypeError(f"HTTP method must be a str, got {method!r}")
        upper = method.upper()
        if upper == "HEAD":
            raise ValueError("HEAD cannot be declared: the host serves it for every GET route")
        if upper not in HTTP_METHODS:
            raise ValueError(
                f"unsupported HTTP method {method!r}; allowed: {', '.join(HTTP_METHODS)}"
            )
        if upper not in checked:
            checked.append(upper)
    if not checked:
        raise ValueError("a route needs at least one HTTP method")
    return tuple(checked)


def _check_path(template: str) -> None:
    if not isinstance(template, str):
        raise TypeError(f"path template must be a str, got {template!r}")

    def invalid(problem: str) -> ValueError:
        return ValueError(f"invalid path template {template!r}: {problem}")

    if not template.startswith("/"):
        raise invalid("it must start with '/'")
    segments = template[1:].split("/")
    names: set[str] = set()
    for index, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            continue
        if not (
            segment.startswith("{")
            and segment.endswith("}")
            and segment.count("{") == 1
            and segment.count("}") == 1
        ):
            raise invalid(f"a parameter must fill a whole segment, got {segment!r}")
        name, has_converter, converter = segment[1:-1].partition(":")
        if not name:
            raise invalid(f"empty parameter name in {segment!r}")
        if not name.isidentifier():
            raise invalid(f"parameter name {name!r} is not a valid identifier")
        if has_converter and converter not in PATH_CONVERTERS:
            raise invalid(
                f"unknown converter {converter!r} in {segment!r}; "
                f"expected one of {', '.join(PATH_CONVERTERS)}"
            )
        if name in names:
            raise invalid(f"duplicate parameter name {name!r}")
        if converter == "path" and index != len(segments) - 1:
            raise invalid(f"the path converter in {segment!r} must be in the last segment")
        names.add(name)


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _check_query(query: Mapping[str, Query] | None) -> Mapping[str, Query]:
    if query is None:
        return MappingProxyType({})
    if not isinstance(query, Mapping):
        raise TypeError(f"query must be a mapping of names to Query, got {type(query).__name__}")
    for name, param in query.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"query parameter names must be non-empty strings, got {name!r}")
        if not isinstance(param, Query):
            raise TypeError(f"query[{name!r}] must be a Query, got {param!r}")
    return MappingProxyType(dict(query))


def _body_schema(body: Any) -> dict[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, dict):
        # The round trip proves the schema is JSON data and detaches it from the caller's dict.
        try:
            schema: dict[str, Any] = json.loads(json.dumps(body))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"body schema dict is not plain JSON data: {exc}") from None
        return schema
    return json_schema(body)


def _unwrap_partial(handler: Any) -> Any:
    while isinstance(handler, functools.partial):
        handler = handler.func
    return handler


def _handler_name(handler: Callable[..., Any]) -> str:
    target = _unwrap_partial(handler)
    if not hasattr(target, "__qualname__"):
        # A callable instance: name it after its class.
        target = type(target)
    return f"{target.__module__}.{target.__qualname__}"


def _check_signature(handler: Callable[..., Any], name: str) -> None:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        # Some builtins and extension callables expose no signature; the call itself will tell.
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"handler {name} must accept one positional argument, the request; "
            f"its signature is {signature}"
        ) from None


def _is_async(handler: Callable[..., Any]) -> bool:
    target = _unwrap_partial(handler)
    # A callable instance is async when its class's __call__ is a coroutine function. Every
    # callable's type has __call__, and for functions and classes it is never a coroutine one.
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)
