"""Server-sent events: a ``text/event-stream`` response over an iterable of events.

The wire format is the HTML standard's (`9.2 Server-sent events
<https://html.spec.whatwg.org/multipage/server-sent-events.html>`_): an event is a few
``field: value`` lines and a blank line. Data with line breaks becomes several ``data:`` lines
(a browser joins them with ``\\n``); CR, LF and CRLF all count as line breaks, so no stray CR
reaches the client. ``event`` and ``id`` cannot hold a line break, and ``id`` no NUL: those are
refused when the event is made, in the handler, where the traceback helps.

>>> ServerSentEvent("one\\ntwo", event="note", id="7").encode()
b'event: note\\ndata: one\\ndata: two\\nid: 7\\n\\n'
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, Final, cast

from .responses import HeadersInput, StreamingResponse, _render_json, _type_name

EVENT_STREAM: Final = "text/event-stream"
PING: Final = b": ping\n\n"
"""The keep-alive comment: ignored by clients, it keeps proxies from closing an idle stream."""


def _lines(text: str) -> list[str]:
    # Only CR, LF and CRLF end a line in an event stream; str.splitlines would also split on
    # form feeds, U+2028 and others, which clients keep as data.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _refused(name: str, value: object) -> Exception:
    """The error for a field ``value`` that cannot go on the wire (made only then)."""
    if name == "retry":
        if isinstance(value, bool) or not isinstance(value, int):
            return TypeError(f"ServerSentEvent retry must be an int, got {_type_name(value)}")
        return ValueError(f"ServerSentEvent retry must be >= 0 milliseconds, got {value}")
    if not isinstance(value, str):
        return TypeError(f"ServerSentEvent {name} must be a str, got {_type_name(value)}")
    if "\0" in value:
        return ValueError(f"ServerSentEvent {name} cannot contain NUL: {value!r}")
    return ValueError(f"ServerSentEvent {name} cannot contain a line break: {value!r}")


class ServerSentEvent:
    """One event of an :class:`EventSourceResponse`.

    ``data`` is the event's text (``str``; any other value is sent as JSON; ``None`` sends no
    data line, for an event with only an ``id``, ``retry`` or ``comment``). ``event`` names the
    event type (a browser's ``addEventListener(event, ...)``), ``id`` sets the client's last
    event id (sent back as ``Last-Event-ID`` when it reconnects), ``retry`` the client's
    reconnection delay in milliseconds, and ``comment`` adds ``:`` lines clients ignore.

    >>> ServerSentEvent({"n": 1}).encode()
    b'data: {"n":1}\\n\\n'
    >>> ServerSentEvent(comment="hi", retry=5000).encode()
    b': hi\\nretry: 5000\\n\\n'
    """

    __slots__ = ("comment", "data", "event", "id", "retry")

    data: Any
    event: str | None
    id: str | None
    retry: int | None
    comment: str | None

    def __init__(
        self,
        data: Any = None,
        event: str | None = None,
        id: str | None = None,
        retry: int | None = None,
        comment: str | None = None,
    ) -> None:
        # The checks are inline: an event is made per message, often thousands a second.
        if event is not None and (not isinstance(event, str) or "\n" in event or "\r" in event):
            raise _refused("event", event)
        if id is not None and (not isinstance(id, str) or "\n" in id or "\r" in id or "\0" in id):
            raise _refused("id", id)
        if retry is not None and (type(retry) is not int or retry < 0):
            raise _refused("retry", retry)
        if comment is not None and not isinstance(comment, str):
            raise _refused("comment", comment)
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry
        self.comment = comment

    def encode(self) -> bytes:
        """The event as it goes on the wire, blank line included."""
        data = self.data
        if (
            type(data) is str
            and self.comment is None
            and self.event is None
            and self.retry is None
            and "\n" not in data
            and "\r" not in data
        ):
            # The common event, one line of text and perhaps an id, without the general path's
            # list and splitting: the same bytes.
            if self.id is None:
                return f"data: {data}\n\n".encode()
            return f"data: {data}\nid: {self.id}\n\n".encode()
        out: list[str] = []
        if self.comment is not None:
            out.extend(f": {line}\n" for line in _lines(self.comment))
        if self.event is not None:
            out.append(f"event: {self.event}\n")
        if self.data is not None:
            text = self.data if isinstance(self.data, str) else _render_json(self.data).decode()
            out.extend(f"data: {line}\n" for line in _lines(text))
        if self.id is not None:
            out.append(f"id: {self.id}\n")
        if self.retry is not None:
            out.append(f"retry: {self.retry}\n")
        out.append("\n")
        return "".join(out).encode()

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in ("data", "event", "id", "retry", "comment")
            if getattr(self, name) is not None
        )
        return f"ServerSentEvent({fields})"


def encode_event(item: Any) -> bytes:
    """One item of an event stream as bytes: a :class:`ServerSentEvent`, or a ``str`` sent
    as the data of an unnamed event.

    >>> encode_event("a\\r\\nb")
    b'data: a\\ndata: b\\n\\n'
    """
    if isinstance(item, ServerSentEvent):
        return item.encode()
    if isinstance(item, str):
        return "".join(f"data: {line}\n" for line in _lines(item)).encode() + b"\n"
    raise TypeError(
        f"an event stream must yield ServerSentEvent or str items, got {_type_name(item)}"
    )


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response: each item of ``events`` is sent as one event.

    ``events`` is an async iterable (or a plain iterable) of :class:`ServerSentEvent` objects
    or strings. While it yields nothing, the host sends a ``: ping`` comment every ``ping``
    seconds (``None`` or 0: never), which keeps proxies and load balancers from closing the
    idle connection; a stream with pings is not subject to ``server.stream_idle_timeout``.
    ``Cache-Control: no-cache`` is set unless ``headers`` set it, and ``X-Accel-Buffering: no``
    asks nginx not to buffer the stream. A reconnecting browser sends the last ``id`` it saw,
    which the handler reads as ``request.last_event_id``.

    >>> async def ticks():
    ...     yield ServerSentEvent("tick", id="1")
    >>> response = EventSourceResponse(ticks(), ping=10)
    >>> response.media_type, response.headers["cache-control"]
    ('text/event-stream', 'no-cache')
    """

    def __init__(
        self,
        events: AsyncIterable[ServerSentEvent | str] | Iterable[ServerSentEvent | str],
        ping: float | None = 15,
        headers: HeadersInput = None,
        *,
        status: int = 200,
        background: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(
            cast("AsyncIterable[str] | Iterable[str]", events),
            status,
            headers,
            EVENT_STREAM,
            background=background,
        )
        if ping is not None and (
            isinstance(ping, bool) or not isinstance(ping, int | float) or ping < 0
        ):
            raise ValueError(f"ping must be a number of seconds >= 0 or None, got {ping!r}")
        self.ping = float(ping) if ping else None
        """Seconds between keep-alive comments while the producer is idle (None: none)."""
        self._keepalive = (self.ping, PING) if self.ping else None
        if self.headers.get("cache-control") is None:
            self.headers["cache-control"] = "no-cache"
        if self.headers.get("x-accel-buffering") is None:
            self.headers["x-accel-buffering"] = "no"

    def encode_chunk(self, chunk: Any) -> bytes:
        """Return one event as the bytes to send."""
        return encode_event(chunk)
