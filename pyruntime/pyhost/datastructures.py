"""Multi-value mappings for request headers and query parameters, response headers, and the
application state handlers read.

Request headers and query parameters are built from the ``(name, value)`` pairs the host hands
over, so repeated keys are never lost; the plain mapping interface picks one value per key and
``getlist`` gives all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeAlias, TypeVar

RawPairs: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
"""What the constructors accept: a mapping, or an iterable of ``(name, value)`` pairs."""


def _pairs(raw: RawPairs | None) -> list[tuple[str, str]]:
    if raw is None:
        return []
    items = raw.items() if isinstance(raw, Mapping) else raw
    pairs = []
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"expected (str, str) pairs, got ({name!r}, {value!r})")
        pairs.append((name, value))
    return pairs


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of HTTP headers.

    Names are stored lower-cased. ``headers["x"]`` and ``get`` return the first value of a
    header; ``getlist`` returns every value in the order received. ``keys``, ``values``,
    ``items`` and ``len`` count every header line, duplicates included, as Starlette does.

    >>> h = Headers([("Accept", "text/html"), ("accept", "application/json")])
    >>> h["ACCEPT"], h.getlist("accept")
    ('text/html', ['text/html', 'application/json'])
    """

    __slots__ = ("_list",)

    def __init__(self, raw: RawPairs | None = None) -> None:
        self._list = [(name.lower(), value) for name, value in _pairs(raw)]

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self._list:
            if key == wanted:
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        wanted = name.lower()
        return any(key == wanted for key, _ in self._list)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._list)

    def getlist(self, name: str) -> list[str]:
        """Return every value of header ``name`` in the order received (empty if absent)."""
        wanted = name.lower()
        return [value for key, value in self._list if key == wanted]

    def keys(self) -> list[str]:  # type: ignore[override]  # duplicates are kept on purpose
        """Return the lower-cased name of every header line, duplicates included."""
        return [key for key, _ in self._list]

    def values(self) -> list[str]:  # type: ignore[override]  # parallel to keys()
        """Return the value of every header line, duplicates included."""
        return [value for _, value in self._list]

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]  # parallel to keys()
        """Return every ``(lower-cased name, value)`` pair in the order received."""
        return list(self._list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        # Order between different headers is meaningless; order among one header's values is not.
        return _group(self._list) == _group(other._list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


V = TypeVar("V")


class MultiDict(Mapping[str, V]):
    """Read-only pairs with repeated keys kept: ``d["k"]`` and ``get`` give the *last* value of
    a repeated key, ``getlist`` all of them in order, ``multi_items`` every pair; keys are
    listed in first-seen order. The base of :class:`QueryParams` and ``FormData``.
    """

    __slots__ = ("_dict", "_list")

    def __init__(self, pairs: Iterable[tuple[str, V]] = ()) -> None:
        self._list = list(pairs)
        # Re-assigning a dict key keeps its first position and takes the new value: exactly
        # "first-seen order, last value".
        self._dict = dict(self._list)

    def __getitem__(self, key: str) -> V:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def getlist(self, key: str) -> list[V]:
        """Return every value of ``key`` in the order given (empty if absent)."""
        return [value for name, value in self._list if name == key]

    def multi_items(self) -> list[tuple[str, V]]:
        """Return every ``(key, value)`` pair in the order given, repeats included."""
        return list(self._list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"


class QueryParams(MultiDict[str]):
    """Read-only view of the query string's parameters.

    ``params["k"]`` and ``get`` return the *last* value of a repeated key; ``getlist`` returns all
    of them in order and ``multi_items`` every pair. Keys are listed in first-seen order.

    >>> q = QueryParams([("tag", "a"), ("page", "2"), ("tag", "b")])
    >>> q["tag"], q.getlist("tag"), list(q)
    ('b', ['a', 'b'], ['tag', 'page'])
    """

    __slots__ = ()

    def __init__(self, raw: RawPairs | None = None) -> None:
        super().__init__(_pairs(raw))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryParams):
            return NotImplemented
        return _group(self._list) == _group(other._list)


class MutableHeaders(list[tuple[str, str]]):
    """A response's headers: the list of ``(name, value)`` pairs it is sent with, also usable
    as a case-insensitive mapping.

    It is a list, so repeated headers (``set-cookie``) keep their order and everything that
    worked on the plain list still does; a string index reads and writes by name:

    >>> headers = MutableHeaders([("Content-Type", "text/plain")])
    >>> headers["content-type"]
    'text/plain'
    >>> headers["x-a"] = "1"
    >>> headers.add("set-cookie", "a=1")
    >>> headers.add("set-cookie", "b=2")
    >>> del headers["content-type"]
    >>> list(headers)
    [('x-a', '1'), ('set-cookie', 'a=1'), ('set-cookie', 'b=2')]
    >>> headers.getlist("Set-Cookie")
    ['a=1', 'b=2']
    """

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            wanted = key.lower()
            for name, value in list.__iter__(self):
                if name.lower() == wanted:
                    return value
            raise KeyError(key)
        return list.__getitem__(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, str):
            if not isinstance(value, str):
                raise TypeError(f"header values must be str, got {value!r}")
            self._remove(key)
            self.append((key.lower(), value))
            return
        list.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        if isinstance(key, str):
            if not self._remove(key):
                raise KeyError(key)
            return
        list.__delitem__(self, key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            wanted = key.lower()
            return any(name.lower() == wanted for name, _ in list.__iter__(self))
        return list.__contains__(self, key)

    def _remove(self, key: str) -> bool:
        wanted = key.lower()
        kept = [(name, value) for name, value in list.__iter__(self) if name.lower() != wanted]
        removed = len(kept) != len(self)
        self[:] = kept
        return removed

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of header ``key``, or ``default``."""
        try:
            value: str = self[key]
        except KeyError:
            return default
        return value

    def getlist(self, key: str) -> list[str]:
        """Every value of header ``key``, in order."""
        wanted = key.lower()
        return [value for name, value in list.__iter__(self) if name.lower() == wanted]

    def add(self, key: str, value: str) -> None:
        """Add a header line, keeping those of the same name (``set-cookie``)."""
        if not isinstance(value, str):
            raise TypeError(f"header values must be str, got {value!r}")
        self.append((key.lower(), value))


class State(Mapping[str, Any]):
    """What a plugin's lifespan yielded, as ``request.state``: read by attribute or by key.

    >>> state = State({"db": "connection"})
    >>> state.db, state["db"], "db" in state
    ('connection', 'connection', True)

    It is shared by every request of the plugin (and read-only: the objects in it are the
    lifespan's, to use as they allow concurrently).
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_values", dict(values or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            known = ", ".join(sorted(self._values)) or "nothing"
            raise AttributeError(
                f"no application state named {name!r} (the lifespan yielded {known})"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("application state is read-only; yield it from a lifespan")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"State({self._values!r})"
