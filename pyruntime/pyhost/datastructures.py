"""Read-only multi-value mappings for request headers and query parameters.

Both are built from the list of ``(name, value)`` pairs the host hands over, so repeated keys
are never lost; the plain mapping interface picks one value per key and ``getlist`` gives all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeAlias

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


class QueryParams(Mapping[str, str]):
    """Read-only view of the query string's parameters.

    ``params["k"]`` and ``get`` return the *last* value of a repeated key; ``getlist`` returns all
    of them in order and ``multi_items`` every pair. Keys are listed in first-seen order.

    >>> q = QueryParams([("tag", "a"), ("page", "2"), ("tag", "b")])
    >>> q["tag"], q.getlist("tag"), list(q)
    ('b', ['a', 'b'], ['tag', 'page'])
    """

    __slots__ = ("_dict", "_list")

    def __init__(self, raw: RawPairs | None = None) -> None:
        self._list = _pairs(raw)
        # Re-assigning a dict key keeps its first position and takes the new value: exactly
        # "first-seen order, last value".
        self._dict = dict(self._list)

    def __getitem__(self, key: str) -> str:
        return self._dict[key]

    def __contains__(self, key: object) -> bool:
        return key in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def getlist(self, key: str) -> list[str]:
        """Return every value of ``key`` in the order given (empty if absent)."""
        return [value for name, value in self._list if name == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """Return every ``(key, value)`` pair in the order given, repeats included."""
        return list(self._list)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QueryParams):
            return NotImplemented
        return _group(self._list) == _group(other._list)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"
