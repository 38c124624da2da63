"""Forms and uploaded files, as ``await request.form()`` returns them.

The host parses forms in Rust, off the event loop (``application/x-www-form-urlencoded``, and
``multipart/form-data`` with the ``multer`` crate); this module only holds the result: a
:class:`FormData` multi-dict whose values are ``str`` for text fields and :class:`UploadFile`
for files. A file larger than ``server.form_spool_threshold`` (1 MiB by default) on a route
declaring ``form=`` is in a temporary file (:attr:`UploadFile.path`), which the host removes
once the request is over; read it in the handler, or copy it elsewhere, before returning.

It also holds the small loops through which a handler awaits what tokio produces: a streamed
body's chunks and a form being parsed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import IO, Any, Protocol

from .datastructures import Headers, MultiDict


class UploadFile:
    """A file part of a multipart form.

    ``filename`` is the name the client gave, ``content_type`` the part's ``Content-Type``
    (``None`` if it gave none), ``size`` its length in bytes and ``headers`` the part's headers.
    The bytes are in memory, or, for a large file of a route declaring ``form=``, in the
    temporary file at ``path`` (``None`` for one in memory). :meth:`read` reads either way,
    a temporary file on a worker thread, never blocking the event loop.
    """

    __slots__ = (
        "_data",
        "_file",
        "_position",
        "content_type",
        "filename",
        "headers",
        "path",
        "size",
    )

    def __init__(
        self,
        filename: str,
        content_type: str | None,
        size: int,
        headers: Iterable[tuple[str, str]] = (),
        data: bytes | None = None,
        path: str | None = None,
    ) -> None:
        self.filename = filename
        self.content_type = content_type
        self.size = size
        self.headers = Headers(list(headers))
        self.path = path
        self._data = b"" if data is None and path is None else data
        self._file: IO[bytes] | None = None
        self._position = 0

    @property
    def in_memory(self) -> bool:
        """Whether the bytes are in memory rather than in a temporary file."""
        return self.path is None

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes from the current position (all that is left with -1)."""
        if self._data is not None:
            end = len(self._data) if size < 0 else self._position + size
            chunk = self._data[self._position : end]
            self._position += len(chunk)
            return chunk
        return await asyncio.to_thread(self._read_file, size)

    async def seek(self, offset: int) -> None:
        """Move the read position to ``offset`` bytes from the start."""
        self._position = offset
        if self._file is not None:
            await asyncio.to_thread(self._file.seek, offset)

    async def close(self) -> None:
        """Close the temporary file, if one was opened (the host removes it after the
        request either way)."""
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)

    def _read_file(self, size: int) -> bytes:
        if self._file is None:
            assert self.path is not None
            self._file = open(self.path, "rb")  # noqa: SIM115  # closed by close()
            self._file.seek(self._position)
        chunk = self._file.read(size)
        self._position += len(chunk)
        return chunk

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(filename={self.filename!r}, "
            f"content_type={self.content_type!r}, size={self.size})"
        )


FormValue = str | UploadFile
"""A form's value: text, or a file."""


class FormData(MultiDict[FormValue]):
    """A parsed form: fields in the order they came, repeated names kept.

    ``form["k"]`` and ``get`` return the *last* value of a repeated name (as
    :class:`~pyhost.QueryParams` does), ``getlist`` every one; text fields are ``str``, files
    :class:`UploadFile`.

    >>> form = FormData([("tag", "a"), ("tag", "b"), ("name", "x")])
    >>> form["tag"], form.getlist("tag"), list(form)
    ('b', ['a', 'b'], ['tag', 'name'])
    """

    __slots__ = ()

    def files(self) -> list[tuple[str, UploadFile]]:
        """The file parts, with their field names, in order."""
        return [(name, value) for name, value in self._list if isinstance(value, UploadFile)]

    async def close(self) -> None:
        """Close every file's temporary file that was opened."""
        for _, upload in self.files():
            await upload.close()


# --- the host's side: waiting on tokio from the loop -------------------------------------


class _Pending(Protocol):
    def try_take(self) -> FormData | None: ...

    def ready(self) -> Awaitable[None]: ...


class _Chunks(Protocol):
    def try_next(self) -> bytes | None: ...

    def ready(self) -> Awaitable[None]: ...


async def _wait_form(pending: _Pending) -> FormData:
    """The form tokio is parsing, once it is parsed."""
    while True:
        form = pending.try_take()
        if form is not None:
            return form
        await pending.ready()


async def _iterate(chunks: _Chunks) -> AsyncIterator[bytes]:
    """A streamed body's chunks, as they arrive; raises ``HTTPError`` if the body fails."""
    while True:
        try:
            chunk = chunks.try_next()
        except StopAsyncIteration:
            return
        if chunk is None:
            await chunks.ready()
        else:
            yield chunk


async def _ready(value: Any) -> Any:
    """``value``, as an awaitable (a form parsed before dispatch)."""
    return value


async def _form_of_stream(
    body: Callable[[], Awaitable[bytes]], parse: Callable[[bytes], _Pending]
) -> FormData:
    """The form of a ``stream=True`` route: the stream read whole, then parsed on tokio."""
    return await _wait_form(parse(await body()))


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    """The body of a route that is not ``stream=True``, as a stream of (at most) one chunk."""
    if body:
        yield body


class _Once:
    """Runs ``make`` once, however many callers await ``get`` (``request.form()`` twice)."""

    __slots__ = ("_make", "_task")

    def __init__(self, make: Callable[[], Awaitable[Any]]) -> None:
        self._make: Callable[[], Awaitable[Any]] | None = make
        self._task: asyncio.Future[Any] | None = None

    async def get(self) -> Any:
        if self._task is None:
            make, self._make = self._make, None
            assert make is not None
            self._task = asyncio.ensure_future(make())
        return await asyncio.shield(self._task)


class _StreamedBody:
    """``request.body`` of a ``stream=True`` route: ``await request.body()`` reads the rest
    of the stream whole (under the route's body limit); ``await request.json()`` parses it."""

    __slots__ = ("_chunks", "_once")

    def __init__(self, chunks: Callable[[], AsyncIterator[bytes]]) -> None:
        self._chunks = chunks
        self._once = _Once(self._read)

    async def _read(self) -> bytes:
        return b"".join([chunk async for chunk in self._chunks()])

    def __call__(self) -> Awaitable[bytes]:
        return self._once.get()

    async def json(self) -> Any:
        import json

        from .responses import HTTPError

        data = await self()
        try:
            return json.loads(data)
        except ValueError as exc:
            raise HTTPError(400, f"Malformed JSON body: {exc}") from None

    def __repr__(self) -> str:
        return "<streamed request body: await request.body()>"
