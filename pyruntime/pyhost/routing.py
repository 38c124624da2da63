"""Route declarations: :class:`Router` collects :class:`Route` objects from decorators, with
the middleware, exception handlers and lifespan hooks that go with them.

Nothing here dispatches requests. The host reads ``router.routes`` once at start-up, through
:meth:`Route.spec`, and does the matching and validation itself; this module's job is to record
what the handler author declared and to reject malformed declarations at import time.

Middleware and exception handlers cost nothing on routes they do not apply to: a route's
:meth:`Route.endpoint` is its handler itself unless some apply, and only then a coroutine
function that runs the chain around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from .params import Cookie, Form, Header, Query
from .responses import HTTPError, Response, error_response, to_response
from .schema import json_schema

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Methods a route may declare. ``HEAD`` is answered by the host for every ``GET`` route."""

PATH_CONVERTERS = ("str", "int", "float", "uuid", "path")
"""Converters allowed in ``{name:converter}`` path parameters; ``str`` is the default."""

HandlerT = TypeVar("HandlerT", bound=Callable[..., Any])
CallNext = Callable[[Any], Awaitable[Response]]
"""What a middleware is given: call it with the request to run the rest of the chain."""
Middleware = Callable[[Any, CallNext], Awaitable[Any]]
"""``async def middleware(request, call_next)``, returning the response to send."""
ExceptionHandler = Callable[[Any, Any], Any]
"""``async def handle(request, exc)`` (or a plain function), returning the response to send."""


@dataclasses.dataclass(frozen=True)
class Hook:
    """A lifespan hook of a router: ``kind`` is ``"lifespan"`` (an async context manager
    factory), ``"startup"`` or ``"shutdown"`` (a function, async or plain)."""

    kind: Literal["lifespan", "startup", "shutdown"]
    function: Callable[..., Any]
    name: str


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
    headers: Mapping[str, Header] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    """Declared request headers, by lower-case name."""
    cookies: Mapping[str, Cookie] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    """Declared cookies, by name."""
    middleware: tuple[Middleware, ...] = ()
    """The middleware around this route, outermost first."""
    stream: bool = False
    """The handler reads the body as it arrives, with ``request.stream()``."""
    body_limit: int | str | None = None
    """This route's largest body (bytes, or a size string such as ``"64 MiB"``), overriding
    ``server.body_limit``."""
    form: Mapping[str, Form] | None = None
    """Declared form fields; not ``None`` (even empty): the host parses the body as a form
    before the handler runs."""
    exception_handlers: tuple[tuple[type[BaseException], ExceptionHandler], ...] = ()
    """Exception classes and their handlers, the most specific router's first."""
    websocket: bool = False
    """A WebSocket route (:meth:`Router.websocket`): the handler gets a
    :class:`~pyhost.WebSocket`, and middleware and exception handlers do not apply."""

    def endpoint(self) -> Callable[..., Any]:
        """What the host calls: the handler, or a coroutine function running the middleware
        and exception handlers around it when some apply."""
        if self.websocket:
            return _websocket_endpoint(self.handler)
        if not self.middleware and not self.exception_handlers:
            return self.handler
        call: Callable[[Any], Awaitable[Any]] = _as_coroutine(self.handler, self.is_async)
        if self.exception_handlers:
            call = _catching(call, self.exception_handlers)
        for middleware in reversed(self.middleware):
            call = _wrapped(middleware, call)
        return call

    def spec(self) -> dict[str, Any]:
        """Describe the route as plain JSON data, the form in which the host reads it."""
        spec = {
            "methods": list(self.methods),
            "path": self.path,
            "name": self.name,
            "is_async": self.is_async or bool(self.middleware or self.exception_handlers),
            "query": {name: param.spec() for name, param in self.query.items()},
            "headers": {name: param.spec() for name, param in self.headers.items()},
            "cookies": {name: param.spec() for name, param in self.cookies.items()},
            "body_schema": self.body_schema,
            "timeout": self.timeout,
            "stream": self.stream,
            "body_limit": self.body_limit,
            "form": None
            if self.form is None
            else {name: param.spec() for name, param in self.form.items()},
        }
        if self.websocket:
            spec["websocket"] = True
        return spec


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
        self._middleware: list[Middleware] = []
        self._exception_handlers: list[tuple[type[BaseException], ExceptionHandler]] = []
        self._hooks: list[Hook] = []

    @property
    def routes(self) -> list[Route]:
        """The declared routes, in declaration order (a copy), each with the middleware and
        exception handlers of this router around those of the routers it included."""
        if not self._middleware and not self._exception_handlers:
            return list(self._routes)
        outer = tuple(self._middleware)
        handlers = tuple(self._exception_handlers)
        return [
            dataclasses.replace(
                route,
                middleware=outer + route.middleware,
                exception_handlers=route.exception_handlers + handlers,
            )
            for route in self._routes
        ]

    @property
    def hooks(self) -> list[Hook]:
        """The lifespan, start-up and shutdown hooks, in declaration order, those of included
        routers where they were included."""
        return list(self._hooks)

    def middleware(self, function: Middleware) -> Middleware:
        """Run ``async def function(request, call_next)`` around every route of this router,
        those of routers it includes too, declared before or after it.

        ``await call_next(request)`` runs the rest of the chain and the handler and gives a
        :class:`~pyhost.Response` whatever the handler returned (an ``HTTPError`` it raised
        included), whose ``status`` and ``headers`` the middleware may change; it may also
        return a response of its own without calling ``call_next``. The first middleware
        declared is the outermost. The handler runs in the same task: context variables the
        middleware sets are visible to it, and its route's timeout covers the whole chain.

        >>> router = Router()
        >>> @router.middleware
        ... async def tag(request, call_next):
        ...     response = await call_next(request)
        ...     response.headers["x-served-by"] = "pyhost"
        ...     return response
        """
        if not inspect.iscoroutinefunction(function):
            raise TypeError(
                f"middleware {_handler_name(function)} must be an async def taking "
                "(request, call_next)"
            )
        self._middleware.append(function)
        return function

    def exception_handler(
        self, exception: type[BaseException]
    ) -> Callable[[ExceptionHandler], ExceptionHandler]:
        """Answer ``exception`` (and its subclasses) raised by a handler of this router with
        what ``handle(request, exc)`` returns (async or plain; any handler return value).

        Handlers of an included router are tried before this router's. An exception no
        handler takes stays the host's sanitised 500, logged with its traceback.
        """
        if not (isinstance(exception, type) and issubclass(exception, BaseException)):
            raise TypeError(f"exception_handler() expects an exception class, got {exception!r}")

        def decorator(function: ExceptionHandler) -> ExceptionHandler:
            if not callable(function):
                raise TypeError(f"an exception handler must be callable, got {function!r}")
            self._exception_handlers.append((exception, function))
            return function

        return decorator

    def lifespan(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """Run ``function`` around the server's life: an async generator function (or an
        ``asynccontextmanager``) whose code before ``yield`` runs on the host's event loop
        before the first connection is accepted, and after it at shutdown, once in-flight
        requests are done. What it yields (a mapping, or nothing) is ``request.state``.

        >>> router = Router()
        >>> @router.lifespan
        ... async def resources():
        ...     pool = {"connections": 4}
        ...     yield {"pool": pool}
        ...     pool.clear()
        """
        self._hooks.append(Hook("lifespan", _context_factory(function), _handler_name(function)))
        return function

    def on_startup(self, function: HandlerT) -> HandlerT:
        """Call ``function()`` (async or plain) at start-up, before serving."""
        self._hooks.append(Hook("startup", _no_argument(function), _handler_name(function)))
        return function

    def on_shutdown(self, function: HandlerT) -> HandlerT:
        """Call ``function()`` (async or plain) at shutdown; what it raises is logged."""
        self._hooks.append(Hook("shutdown", _no_argument(function), _handler_name(function)))
        return function

    def route(
        self,
        path: str,
        methods: Iterable[str],
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a route for ``methods`` at the path template ``path``.

        ``path`` is made of literal segments and ``{name}`` / ``{name:converter}`` parameters
        (converters: ``str``, ``int``, ``float``, ``uuid``, and ``path`` for the rest of the path,
        last segment only). ``query`` declares the query parameters by name. ``body`` declares a
        JSON request body: a type for :func:`~pyhost.schema.json_schema`, or a JSON Schema
        ``dict`` used as it is. ``timeout`` (seconds) overrides the host's
        ``server.request_timeout`` for this route. ``headers`` and ``cookies`` declare request
        headers (names matched without regard to case) and cookies as :class:`~pyhost.Header`
        and :class:`~pyhost.Cookie`, checked by the host like query parameters and read as
        ``request.header_params`` and ``request.cookies``.

        ``stream=True`` hands the request to the handler before its body is read: the handler
        reads it with ``async for chunk in request.stream()`` (or whole, with ``await
        request.body()``), and the connection is read no faster than it does. ``body_limit``
        (bytes, or a size string such as ``"64 MiB"``) overrides ``server.body_limit`` for this
        route. ``form`` declares form fields as :class:`~pyhost.Form`, checked by the host like
        query parameters and read as ``request.form_params``; with it (even ``form={}``) the
        host parses the body as a form before the handler runs, large files going to
        temporary files as they arrive, and ``await request.form()`` returns it at once.

        Raises ``ValueError`` (or ``TypeError`` for arguments of the wrong type) on a malformed
        declaration, before the handler is even defined.
        """
        checked_methods = _check_methods(methods)
        _check_path(path)
        checked_query = _check_query(query)
        body_schema = _body_schema(body)
        checked_timeout = _check_timeout(timeout)
        checked_headers = _check_named(headers, Header, "headers", lower=True)
        checked_cookies = _check_named(cookies, Cookie, "cookies", lower=False)
        checked_form = None if form is None else _check_named(form, Form, "form", lower=False)
        _check_body_options(stream, body_limit, body_schema, checked_form)

        def decorator(handler: HandlerT) -> HandlerT:
            if not callable(handler):
                raise TypeError(f"a route handler must be callable, got {handler!r}")
            name = _handler_name(handler)
            _check_signature(handler, name)
            if stream and not _is_async(handler):
                raise TypeError(
                    f"handler {name} of a stream=True route must be an async def: it reads "
                    "the body with `async for chunk in request.stream()`"
                )
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
                    headers=checked_headers,
                    cookies=checked_cookies,
                    stream=stream,
                    body_limit=body_limit,
                    form=checked_form,
                )
            )
            return handler

        return decorator

    def websocket(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a WebSocket route at ``path`` for ``async def handler(socket)``, which
        gets a :class:`~pyhost.WebSocket`.

        The upgrade request is a ``GET`` (the path cannot also have a ``GET`` route); its path,
        ``query``, ``headers`` and ``cookies`` declarations are checked by the host before the
        handler runs, as for any route, and a failure is an HTTP error, not a socket. Router
        middleware and exception handlers do not apply to WebSocket routes.
        """
        _check_path(path)
        checked_query = _check_query(query)
        checked_headers = _check_named(headers, Header, "headers", lower=True)
        checked_cookies = _check_named(cookies, Cookie, "cookies", lower=False)

        def decorator(handler: HandlerT) -> HandlerT:
            name = _handler_name(handler)
            if not callable(handler) or not _is_async(handler):
                raise TypeError(f"WebSocket handler {name} must be an async def taking (socket)")
            _check_signature(handler, name)
            self._routes.append(
                Route(
                    methods=("GET",),
                    path=path,
                    handler=handler,
                    name=name,
                    query=checked_query,
                    body_schema=None,
                    is_async=True,
                    headers=checked_headers,
                    cookies=checked_cookies,
                    websocket=True,
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
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``GET`` route (``HEAD`` is served from it too); see :meth:`route`."""
        return self.route(
            path,
            ["GET"],
            query=query,
            body=body,
            timeout=timeout,
            headers=headers,
            cookies=cookies,
            stream=stream,
            body_limit=body_limit,
            form=form,
        )

    def post(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``POST`` route; see :meth:`route`."""
        return self.route(
            path,
            ["POST"],
            query=query,
            body=body,
            timeout=timeout,
            headers=headers,
            cookies=cookies,
            stream=stream,
            body_limit=body_limit,
            form=form,
        )

    def put(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``PUT`` route; see :meth:`route`."""
        return self.route(
            path,
            ["PUT"],
            query=query,
            body=body,
            timeout=timeout,
            headers=headers,
            cookies=cookies,
            stream=stream,
            body_limit=body_limit,
            form=form,
        )

    def patch(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``PATCH`` route; see :meth:`route`."""
        return self.route(
            path,
            ["PATCH"],
            query=query,
            body=body,
            timeout=timeout,
            headers=headers,
            cookies=cookies,
            stream=stream,
            body_limit=body_limit,
            form=form,
        )

    def delete(
        self,
        path: str,
        *,
        query: Mapping[str, Query] | None = None,
        body: Any = None,
        timeout: float | None = None,
        headers: Mapping[str, Header] | None = None,
        cookies: Mapping[str, Cookie] | None = None,
        stream: bool = False,
        body_limit: int | str | None = None,
        form: Mapping[str, Form] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare a ``DELETE`` route; see :meth:`route`."""
        return self.route(
            path,
            ["DELETE"],
            query=query,
            body=body,
            timeout=timeout,
            headers=headers,
            cookies=cookies,
            stream=stream,
            body_limit=body_limit,
            form=form,
        )

    def include(self, other: Router, prefix: str = "") -> None:
        """Copy the routes of ``other`` into this router, with ``prefix`` put before each path,
        and its lifespan hooks after this router's.

        The copied routes keep ``other``'s middleware and exception handlers, and get this
        router's around them.

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
        self._hooks.extend(other.hooks)

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


def _check_body_options(
    stream: bool,
    body_limit: int | str | None,
    body_schema: dict[str, Any] | None,
    form: Mapping[str, Form] | None,
) -> None:
    if not isinstance(stream, bool):
        raise TypeError(f"stream must be a bool, got {stream!r}")
    if body_limit is not None:
        if isinstance(body_limit, bool) or not isinstance(body_limit, int | str):
            raise TypeError(
                f'body_limit must be a number of bytes or a size string such as "64 MiB", '
                f"got {body_limit!r}"
            )
        # A size string is parsed by the host, with the parser of its config file.
        if isinstance(body_limit, int) and body_limit <= 0:
            raise ValueError(f"body_limit must be above zero, got {body_limit}")
        if isinstance(body_limit, str) and not body_limit.strip():
            raise ValueError("body_limit must not be empty")
    if stream and form is not None:
        raise ValueError(
            "a stream=True route cannot declare a form: the host parses a declared form "
            "before the handler runs"
        )
    if body_schema is not None and (stream or form is not None):
        raise ValueError("a route with body= cannot also be stream=True or declare a form")


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


ParamT = TypeVar("ParamT", bound=Query)


def _check_named(
    declared: Mapping[str, ParamT] | None, kind: type[ParamT], what: str, *, lower: bool
) -> Mapping[str, ParamT]:
    if declared is None:
        return MappingProxyType({})
    if not isinstance(declared, Mapping):
        raise TypeError(
            f"{what} must be a mapping of names to {kind.__name__}, got {type(declared).__name__}"
        )
    checked: dict[str, ParamT] = {}
    for name, param in declared.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{what} names must be non-empty strings, got {name!r}")
        if not isinstance(param, kind):
            raise TypeError(f"{what}[{name!r}] must be a {kind.__name__}, got {param!r}")
        key = name.lower() if lower else name
        if key in checked:
            raise ValueError(f"{what} declares {name!r} twice")
        checked[key] = param
    return MappingProxyType(checked)


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


def _as_coroutine(handler: Callable[..., Any], is_async: bool) -> Callable[[Any], Awaitable[Any]]:
    if is_async:
        return handler

    # A plain handler runs on a thread, as without middleware; `to_thread` carries the
    # context (and the plugin's identity) over.
    async def call(request: Any) -> Any:
        return await asyncio.to_thread(handler, request)

    return call


def _catching(
    call: Callable[[Any], Awaitable[Any]],
    handlers: tuple[tuple[type[BaseException], ExceptionHandler], ...],
) -> Callable[[Any], Awaitable[Any]]:
    async def run(request: Any) -> Any:
        try:
            return await call(request)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            for exception, handle in handlers:
                if isinstance(exc, exception):
                    result = handle(request, exc)
                    if inspect.isawaitable(result):
                        result = await result
                    return result
            raise

    return run


def _wrapped(middleware: Middleware, inner: Callable[[Any], Awaitable[Any]]) -> Callable[..., Any]:
    async def call_next(request: Any) -> Response:
        try:
            return to_response(await inner(request))
        except HTTPError as error:
            return error_response(error)

    async def run(request: Any) -> Any:
        return await middleware(request, call_next)

    return run


def _websocket_endpoint(handler: Callable[..., Any]) -> Callable[[Any], Awaitable[None]]:
    from .websocket import WebSocket, WebSocketDisconnect

    async def run(native: Any) -> None:
        # The client left (or the connection failed): how a conversation ends, not an error.
        with contextlib.suppress(WebSocketDisconnect):
            await handler(WebSocket(native))

    return run


def _context_factory(function: Callable[..., Any]) -> Callable[[], Any]:
    if inspect.isasyncgenfunction(function):
        return _no_argument(contextlib.asynccontextmanager(function))
    if callable(function):
        return _no_argument(function)
    raise TypeError(f"lifespan() expects an async generator function, got {function!r}")


def _no_argument(function: Callable[..., Any]) -> Callable[[], Any]:
    if not callable(function):
        raise TypeError(f"a lifespan hook must be callable, got {function!r}")
    try:
        inspect.signature(function).bind()
    except TypeError:
        raise TypeError(f"lifespan hook {_handler_name(function)} must take no arguments") from None
    except ValueError:
        pass
    return function
