"""Responses a handler can return, and the exception that turns into an error response.

A response is rendered to bytes when it is constructed, so a body that cannot be encoded fails
inside the handler (with its traceback) rather than later in the host.
"""

from __future__ import annotations

import http
import json
import math
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias

from .datastructures import MutableHeaders

if TYPE_CHECKING:
    # Only `set_cookie` needs these, and imports them when called: `email.utils` alone brings
    # `socket`, `random`, `datetime` and `urllib` into every interpreter that imports pyhost.
    import datetime

HeadersInput: TypeAlias = Mapping[str, str] | Sequence[tuple[str, str]] | None
"""Response headers as accepted by the constructors: a mapping or a sequence of pairs."""

_TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
_HTML_MEDIA_TYPE = "text/html; charset=utf-8"
_JSON_MEDIA_TYPE = "application/json"
_BINARY_MEDIA_TYPE = "application/octet-stream"


_MAX_DEPTH: Final = 256
_INT64_RANGE: Final = range(-(2**63), 2**64)


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _int_text(value: int) -> str:
    text = str(value)
    return f"{text[:40]}... ({len(text)} digits)" if len(text) > 40 else text


def _check_key(key: object) -> None:
    if key is None or isinstance(key, str | bool | int):
        return
    if isinstance(key, float):
        if not math.isfinite(key):
            raise ValueError(f"out of range float values are not JSON compliant: {key!r}")
        return
    raise TypeError(f"keys must be str, int, float, bool or None, not {_type_name(key)}")


def _check_json(value: object, depth: int = 0) -> None:
    """Refuse what the host's encoder refuses, in its order, with its exceptions."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"nesting deeper than {_MAX_DEPTH} levels (is there a reference cycle?)")
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if value not in _INT64_RANGE:
            raise ValueError(
                f"the integer {_int_text(value)} does not fit in 64 bits (send it as a string)"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"out of range float values are not JSON compliant: {value!r}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_key(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
    else:
        raise TypeError(f"object of type {_type_name(value)} is not JSON serializable")


def _dumps_outside_host(content: Any) -> bytes:
    """The host's encoding, for code running outside the host (its tests, say).

    Once the checks pass, ``json.dumps`` writes the same bytes the host's encoder does: floats
    as ``repr`` spells them, non-ASCII text as UTF-8.
    """
    _check_json(content)
    return json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode()


_render_json: Callable[[Any], bytes]
try:
    # Inside the host: the very encoder it uses for values handlers return, so a returned
    # dict and a JSONResponse of it give the same bytes and refuse the same values.
    from _pyhost_json import dumps as _render_json  # type: ignore[import-not-found, no-redef]
except ImportError:
    _render_json = _dumps_outside_host


def _check_status(status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int):
        raise TypeError(f"status must be an int, got {status!r}")
    if not 100 <= status <= 599:
        raise ValueError(f"status must be between 100 and 599, got {status}")
    return status


def _header_list(headers: HeadersInput) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for item in items:
        if len(item) != 2 or not all(isinstance(part, str) for part in item):
            raise TypeError(f"headers must be (str, str) pairs, got {item!r}")
        pairs.append((item[0], item[1]))
    return pairs


class Response:
    """An HTTP response: status, headers and a body already rendered to bytes.

    The body is rendered by type: ``str`` is encoded as UTF-8 (``text/plain; charset=utf-8``),
    ``bytes``-like values are sent as they are (``application/octet-stream``) and anything else
    is encoded as JSON (``application/json``). A ``media_type`` given explicitly wins over the
    default; the host sends it as ``content-type`` unless ``headers`` already carry one.

    >>> Response({"ok": True}, status=201).body
    b'{"ok":true}'
    """

    status: int
    background: Callable[[], Any] | None
    """Called with no arguments once the response has been handed to the server for sending
    (``async def`` on the event loop, a plain function on a thread); the client does not wait
    for it, and what it raises is logged with the request id."""
    headers: MutableHeaders
    """The header lines, a list of pairs that is also a case-insensitive mapping
    (``response.headers["x-a"] = "b"``)."""
    body: bytes
    media_type: str | None

    def __init__(
        self,
        body: Any = b"",
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
        *,
        background: Callable[[], Any] | None = None,
    ) -> None:
        self.status = _check_status(status)
        self.headers = MutableHeaders(_header_list(headers))
        self.body, default_media_type = self.render(body)
        self.media_type = default_media_type if media_type is None else media_type
        if background is not None and not callable(background):
            raise TypeError(f"background must be a callable, got {background!r}")
        self.background = background

    def render(self, content: Any) -> tuple[bytes, str]:
        """Return ``content`` as bytes together with its default media type."""
        if isinstance(content, str):
            return content.encode(), _TEXT_MEDIA_TYPE
        if isinstance(content, bytes | bytearray | memoryview):
            return bytes(content), _BINARY_MEDIA_TYPE
        return _render_json(content), _JSON_MEDIA_TYPE

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        expires: datetime.datetime | int | str | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header (one per cookie; several may be set).

        ``expires`` is a timezone-aware ``datetime``, seconds from now, or an HTTP date;
        ``samesite`` is ``"strict"``, ``"lax"``, ``"none"`` or ``None`` to leave it out. The
        header is built by the standard library's ``http.cookies``, which quotes what needs it
        and refuses names that are not tokens.

        >>> response = Response("ok")
        >>> response.set_cookie("session", "abc", max_age=3600, httponly=True)
        >>> response.headers.getlist("set-cookie")
        ['session=abc; HttpOnly; Max-Age=3600; Path=/; SameSite=lax']
        """
        import http.cookies

        cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        try:
            cookie[key] = value
        except http.cookies.CookieError as exc:
            raise ValueError(f"invalid cookie name {key!r}: {exc}") from None
        morsel = cookie[key]
        if max_age is not None:
            morsel["max-age"] = str(int(max_age))
        if expires is not None:
            morsel["expires"] = _http_date(expires)
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite is not None:
            if samesite.lower() not in ("strict", "lax", "none"):
                raise ValueError(f"samesite must be 'strict', 'lax' or 'none', got {samesite!r}")
            morsel["samesite"] = samesite
        self.headers.add("set-cookie", morsel.OutputString())

    def delete_cookie(
        self,
        key: str,
        *,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Tell the client to drop cookie ``key`` (expired, ``Max-Age=0``); ``path`` and
        ``domain`` must be those it was set with."""
        self.set_cookie(
            key,
            "",
            max_age=0,
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, media_type={self.media_type!r}, "
            f"body={self.body[:40]!r}{'...' if len(self.body) > 40 else ''})"
        )


class JSONResponse(Response):
    """A response whose ``content`` is always encoded as JSON, strings included."""

    def __init__(
        self,
        content: Any,
        status: int = 200,
        headers: HeadersInput = None,
        *,
        background: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(content, status, headers, background=background)

    def render(self, content: Any) -> tuple[bytes, str]:
        """Return ``content`` encoded as compact JSON with ``application/json``."""
        return _render_json(content), _JSON_MEDIA_TYPE


class PlainTextResponse(Response):
    """A ``text/plain; charset=utf-8`` response from ``str`` (encoded as UTF-8) or bytes."""

    _media_type: ClassVar[str] = _TEXT_MEDIA_TYPE

    def __init__(
        self,
        content: str | bytes,
        status: int = 200,
        headers: HeadersInput = None,
        *,
        background: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(content, status, headers, background=background)

    def render(self, content: Any) -> tuple[bytes, str]:
        """Return ``content`` as bytes with this class's text media type."""
        if isinstance(content, str):
            return content.encode(), self._media_type
        if isinstance(content, bytes | bytearray | memoryview):
            return bytes(content), self._media_type
        raise TypeError(
            f"{type(self).__name__} content must be str or bytes, got {type(content).__name__}"
        )


class HTMLResponse(PlainTextResponse):
    """A ``text/html; charset=utf-8`` response from ``str`` (encoded as UTF-8) or bytes."""

    _media_type = _HTML_MEDIA_TYPE


class StreamingResponse(Response):
    """A response whose body is sent chunk by chunk as ``content`` produces it.

    ``content`` is an async iterable (an ``async def`` generator, say) or a plain iterable of
    ``bytes`` or ``str`` chunks (``str`` is encoded as UTF-8). Each chunk goes to the client as
    soon as it is produced (a chunk of ``Transfer-Encoding: chunked`` on HTTP/1.1, DATA frames
    on HTTP/2), and the producer is advanced no faster than the client reads. A client that
    goes away cancels the producer (its ``finally`` blocks run); an exception ends the response
    so the client can see it is incomplete. A list or tuple is sent from the event loop; any
    other plain iterable (a ``def`` generator may block) is advanced on a worker thread.
    ``media_type`` is sent as ``content-type`` (none by default); ``background`` runs once the
    last chunk has been handed to the server.

    >>> async def numbers():
    ...     for n in range(3):
    ...         yield str(n)
    >>> StreamingResponse(numbers(), media_type="text/plain").status
    200
    """

    content: AsyncIterable[Any] | Iterable[Any]
    """What the body is read from, chunk by chunk (each item through :meth:`encode_chunk`)."""
    _keepalive: tuple[float, bytes] | None = None
    # Host-internal: (seconds, bytes) the host sends whenever the producer has been silent
    # that long (EventSourceResponse's pings); None: nothing.

    def __init__(
        self,
        content: AsyncIterable[bytes | str] | Iterable[bytes | str],
        status: int = 200,
        headers: HeadersInput = None,
        media_type: str | None = None,
        *,
        background: Callable[[], Any] | None = None,
    ) -> None:
        if isinstance(content, str | bytes | bytearray | memoryview) or not (
            hasattr(content, "__aiter__") or hasattr(content, "__iter__")
        ):
            raise TypeError(
                f"{type(self).__name__} content must be an iterable or async iterable of "
                f"chunks, got {_type_name(content)} (use Response for a body already complete)"
            )
        super().__init__(b"", status, headers, media_type, background=background)
        self.content = content
        self.media_type = media_type

    def encode_chunk(self, chunk: Any) -> bytes:
        """Return one item of ``content`` as the bytes to send (``str`` as UTF-8)."""
        if isinstance(chunk, bytes):
            return chunk
        if isinstance(chunk, str):
            return chunk.encode()
        if isinstance(chunk, bytearray | memoryview):
            return bytes(chunk)
        raise TypeError(
            f"{type(self).__name__} content must yield bytes or str, got {_type_name(chunk)}"
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, media_type={self.media_type!r}, "
            f"content={self.content!r})"
        )


class HTTPError(Exception):
    """Raise to answer with ``status`` and the JSON body ``{"detail": detail}``.

    ``detail`` may be any JSON value and defaults to the status's reason phrase; ``headers``
    (a mapping or a sequence of pairs) are added to the response.

    >>> str(HTTPError(404))
    '404 Not Found'
    """

    status: int
    detail: Any
    headers: list[tuple[str, str]]

    def __init__(self, status: int, detail: Any = None, headers: HeadersInput = None) -> None:
        self.status = _check_status(status)
        self.detail = _reason_phrase(status) if detail is None else detail
        self.headers = _header_list(headers)
        super().__init__(status, self.detail)

    def __str__(self) -> str:
        phrase = _reason_phrase(self.status)
        if self.detail == phrase:
            return f"{self.status} {phrase}"
        return f"{self.status} {phrase}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, detail={self.detail!r})"


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def to_response(result: Any) -> Response:
    """The :class:`Response` the host sends for a handler's return value, by the same rules.

    A middleware's ``call_next`` gives this, so it sees one shape whatever the handler returned:
    ``None`` is an empty 204, ``(body, status)`` and ``(body, status, headers)`` set both, and
    any other value is rendered as a ``Response`` body (text, bytes or JSON).

    >>> to_response({"id": 1}).body, to_response(None).status
    (b'{"id":1}', 204)
    >>> to_response(("gone", 410)).status
    410
    """
    if isinstance(result, Response):
        return result
    if result is None:
        return _empty(204)
    if isinstance(result, tuple) and len(result) in (2, 3):
        body, status = result[0], result[1]
        headers = result[2] if len(result) == 3 else None
        if body is None:
            response = _empty(status)
            response.headers.extend(_header_list(headers))
            return response
        return Response(body, status, headers)
    return Response(result)


def error_response(error: HTTPError) -> Response:
    """The response for an :class:`HTTPError`, as the host builds it: ``{"detail": ...}``."""
    return JSONResponse({"detail": error.detail}, error.status, error.headers)


def _empty(status: int) -> Response:
    response = Response(b"", status)
    response.media_type = None
    return response


def _http_date(expires: datetime.datetime | int | str) -> str:
    if isinstance(expires, str):
        return expires
    import datetime
    import email.utils
    import time

    if isinstance(expires, datetime.datetime):
        if expires.tzinfo is None:
            raise ValueError("expires must be a timezone-aware datetime")
        return email.utils.format_datetime(expires.astimezone(datetime.UTC), usegmt=True)
    return email.utils.formatdate(time.time() + int(expires), usegmt=True)


_background_tasks: set[Any] = set()


def _start_background(task: Callable[[], Any], request_id: str) -> None:
    """Host-internal: run a response's background task on the running loop, holding a
    reference until it ends (asyncio keeps only weak ones)."""
    import asyncio
    import inspect
    import logging

    async def run() -> None:
        try:
            if inspect.iscoroutinefunction(task):
                await task()
            else:
                result = await asyncio.to_thread(task)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            logging.getLogger("pyhost").exception(
                "request %s: background task %s failed",
                request_id,
                getattr(task, "__qualname__", task),
            )

    running = asyncio.get_running_loop().create_task(run())
    _background_tasks.add(running)
    running.add_done_callback(_background_tasks.discard)
