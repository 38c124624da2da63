"""Declarations of query parameters, request headers and cookies.

A :class:`Query` only describes a parameter; the host parses, validates and converts the
incoming values from :meth:`Query.spec` before the handler runs, and hands the result over as
``request.query``. :class:`Header` and :class:`Cookie` take the same types, defaults and
constraints, for ``request.header_params`` and ``request.cookies``.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    import uuid


class _Required(enum.Enum):
    REQUIRED = "REQUIRED"

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required.REQUIRED
"""Default of :class:`Query` meaning "no default: the parameter must be given"."""

QueryType: TypeAlias = "type[str] | type[int] | type[float] | type[bool] | type[uuid.UUID]"
"""The types a query parameter can have."""

_TYPE_NAMES: Final[dict[type, str]] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
}


def _uuid_class() -> type | None:
    # `uuid` (and the `platform` module it pulls in) is only loaded by apps that use it: a
    # declaration naming `uuid.UUID`, or a value that is one, means it is already imported.
    module = sys.modules.get("uuid")
    return None if module is None else module.UUID


def _type_name(tp: Any) -> str | None:
    for known, name in _TYPE_NAMES.items():
        if tp is known:
            return name
    return "uuid" if tp is not None and tp is _uuid_class() else None


@dataclass(frozen=True)
class Query:
    r"""A declared query parameter.

    ``type`` is one of ``str``, ``int``, ``float``, ``bool`` and ``uuid.UUID``. Without a
    ``default`` the parameter is required; ``default=None`` makes it optional with ``None`` when
    absent. With ``multiple=True`` every value of the repeated key is collected into a list and
    the default, if any, must be a list (kept as a tuple); the constraints then apply to each
    value.

    Constraints: ``ge``/``le``/``gt``/``lt`` bound ``int`` and ``float`` values;
    ``min_length``/``max_length`` (in characters) and ``pattern`` apply to ``str``; ``choices``
    lists the only accepted values. ``description`` documents the parameter for readers of the
    code and is not sent to the host.

    ``pattern`` is written in the syntax of Rust's ``regex`` crate, the engine the host matches
    values with, not Python's ``re``: no look-around (``(?=``, ``(?!``, ``(?<=``, ``(?<!``) and
    no backreferences (``\1``, ``(?P=name)``); ``\p{L}`` classes, ``[[:alpha:]]`` and
    ``(?<name>...)`` are fine. A value is valid when the pattern matches anywhere in it, as
    with pydantic 2 (whose default engine is the same crate) and FastAPI: ``pattern="a"``
    accepts ``"ba"``, ``pattern="^a"`` does not. Anchor both ends (``"^[a-z]+$"``) to match the
    whole value; ``$`` is the very end of the value, so, unlike with Python's ``re``, ``"^a$"``
    refuses ``"a\n"``.

    The arguments are checked here, so a nonsensical declaration fails at import time:
    ``TypeError`` for a value of the wrong type, ``ValueError`` for a constraint that does not
    apply to ``type`` or cannot be satisfied. A pattern is checked completely only by the host,
    with the engine that runs it, when it builds its route table (``pyhost check`` reports a
    bad one naming the route and the parameter). Here, outside the host too, a ``ValueError``
    catches only what Rust's engine is sure to refuse: an unbalanced parenthesis or bracket, a
    trailing backslash, look-around and backreferences. Python's ``re`` is not consulted: it
    refuses patterns Rust accepts (``\p{L}``) and accepts patterns Rust refuses.

    >>> Query(int, default=10, ge=1, le=100).spec()["default"]
    10
    """

    type: QueryType = str
    default: Any = REQUIRED
    _: KW_ONLY
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: Sequence[Any] | None = None
    multiple: bool = False
    description: str | None = None

    def __post_init__(self) -> None:
        if _type_name(self.type) is None:
            raise TypeError(
                f"Query type must be str, int, float, bool or uuid.UUID, got {self.type!r}"
            )
        if not isinstance(self.multiple, bool):
            raise TypeError(f"Query multiple must be a bool, got {self.multiple!r}")
        if self.description is not None and not isinstance(self.description, str):
            raise TypeError(f"Query description must be a str or None, got {self.description!r}")
        self._check_bounds()
        self._check_lengths()
        self._check_pattern()
        # Normalised values are stored through object.__setattr__ because the dataclass is frozen.
        if self.choices is not None:
            object.__setattr__(self, "choices", self._check_choices(self.choices))
        object.__setattr__(self, "default", self._check_default(self.default))

    @property
    def required(self) -> bool:
        """Whether a request must carry this parameter."""
        return self.default is REQUIRED

    def spec(self) -> dict[str, Any]:
        """Describe the parameter as plain JSON data for the host.

        Every constraint key is present, ``None`` when unset; UUIDs are given as strings.
        """
        if self.required or self.default is None:
            default = None
        elif self.multiple:
            default = [self._json_value(item) for item in self.default]
        else:
            default = self._json_value(self.default)
        choices = None
        if self.choices is not None:
            choices = [self._json_value(item) for item in self.choices]
        return {
            "type": self._type_name,
            "required": self.required,
            "default": default,
            "ge": self.ge,
            "le": self.le,
            "gt": self.gt,
            "lt": self.lt,
            "min_length": self.min_length,
            "max_length": self.max_length,
            "pattern": self.pattern,
            "choices": choices,
            "multiple": self.multiple,
        }

    @property
    def _type_name(self) -> str:
        name = _type_name(self.type)
        assert name is not None  # checked in __post_init__
        return name

    def _json_value(self, value: Any) -> Any:
        uuid_class = _uuid_class()
        return str(value) if uuid_class is not None and isinstance(value, uuid_class) else value

    def _check_bounds(self) -> None:
        bounds = {"ge": self.ge, "le": self.le, "gt": self.gt, "lt": self.lt}
        for name, bound in bounds.items():
            if bound is None:
                continue
            if self.type not in (int, float):
                raise ValueError(
                    f"Query {name}= only applies to int and float, not {self._type_name}"
                )
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise TypeError(f"Query {name} must be a number, got {bound!r}")
            if not math.isfinite(bound):
                raise ValueError(f"Query {name} must be finite, got {bound!r}")
        for low_name in ("ge", "gt"):
            for high_name in ("le", "lt"):
                low, high = bounds[low_name], bounds[high_name]
                if low is None or high is None:
                    continue
                inclusive = low_name == "ge" and high_name == "le"
                if low > high or (low == high and not inclusive):
                    raise ValueError(
                        f"Query bounds {low_name}={low!r} and {high_name}={high!r} admit no value"
                    )

    def _check_lengths(self) -> None:
        for name, length in (("min_length", self.min_length), ("max_length", self.max_length)):
            if length is None:
                continue
            if self.type is not str:
                raise ValueError(f"Query {name}= only applies to str, not {self._type_name}")
            if isinstance(length, bool) or not isinstance(length, int):
                raise TypeError(f"Query {name} must be an int, got {length!r}")
            if length < 0:
                raise ValueError(f"Query {name} must not be negative, got {length}")
        if (
            self.min_length is not None
            and self.max_length is not None
            and self.min_length > self.max_length
        ):
            raise ValueError(
                f"Query min_length={self.min_length} is greater than max_length={self.max_length}"
            )

    def _check_pattern(self) -> None:
        if self.pattern is None:
            return
        if self.type is not str:
            raise ValueError(f"Query pattern= only applies to str, not {self._type_name}")
        if not isinstance(self.pattern, str):
            raise TypeError(f"Query pattern must be a str, got {self.pattern!r}")
        problem = _rust_regex_problem(self.pattern)
        if problem is not None:
            raise ValueError(
                f"Query pattern {self.pattern!r} is not a valid regex for Rust's regex crate, "
                f"which the host matches values with: {problem}"
            )

    def _check_choices(self, choices: Sequence[Any]) -> tuple[Any, ...]:
        if not isinstance(choices, list | tuple):
            raise TypeError(f"Query choices must be a list of values, got {choices!r}")
        if not choices:
            raise ValueError("Query choices must not be empty")
        return tuple(self._check_value(item, "choice") for item in choices)

    def _check_default(self, default: Any) -> Any:
        if default is REQUIRED:
            return default
        if self.multiple:
            if not isinstance(default, list):
                raise TypeError(
                    f"Query default must be a list (or omitted) when multiple=True, got {default!r}"
                )
            return tuple(self._check_choice(self._check_value(item, "default")) for item in default)
        if default is None:
            return None
        return self._check_choice(self._check_value(default, "default"))

    def _check_value(self, value: Any, what: str) -> Any:
        # bool is a subclass of int, so it is excluded explicitly from the numeric types.
        if self.type is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"Query {what} must be finite, got {value!r}")
            return float(value)
        if isinstance(value, self.type) and (self.type is bool or not isinstance(value, bool)):
            return value
        raise TypeError(f"Query {what} {value!r} is not of type {self._type_name}")

    def _check_choice(self, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"Query default {value!r} is not one of the choices {self.choices!r}")
        return value


_LOOKAROUND: Final = ("(?=", "(?!", "(?<=", "(?<!")
_FLAG_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")


def _rust_regex_problem(pattern: str) -> str | None:
    """What Rust's ``regex`` crate is sure to refuse in ``pattern``, or ``None``.

    A structural scan, not a parser: ``None`` means "not refused here", never "valid". Every
    problem it names is one the crate refuses too (``tests/data/query_patterns.json``), so a
    pattern the host would accept never fails here. It follows the crate's syntax where it
    differs from ``re``: a ``[`` inside a class opens a nested class (except as the end of a
    range), ``&&``, ``--`` and ``~~`` are set operators there, and a group name (which may hold
    brackets) runs to ``>``. Verbose mode (an ``x`` flag) lets whitespace and ``#``
    comments hide any character, so a pattern that turns it on is left to the host from there.
    """
    groups: list[int] = []
    classes: list[int] = []
    index = 0
    length = len(pattern)

    def after_class_start(at: int) -> int:
        # A ']' right after '[' or '[^' is a literal, not the end of the class.
        if at < length and pattern[at] == "^":
            at += 1
        if at < length and pattern[at] == "]":
            at += 1
        return at

    def after_class_item(at: int) -> int:
        # An item followed by '-' and anything but ']' or '-' is a range, whose end is one
        # literal character: a '[' there opens no class.
        if at + 1 < length and pattern[at] == "-" and pattern[at + 1] not in "]-":
            at += 1
            at += 2 if pattern[at] == "\\" else 1
        return at

    while index < length:
        char = pattern[index]
        if char == "\\":
            if index + 1 == length:
                return "the pattern ends in a lone backslash"
            escaped = pattern[index + 1]
            if not classes and escaped in "0123456789":
                return f"backreferences ('\\{escaped}' at position {index}) are not supported"
            index += 2
            if classes:
                index = after_class_item(index)
            continue
        if char == "[":
            classes.append(index)
            index = after_class_start(index + 1)
            continue
        if classes:
            if char == "]":
                classes.pop()
                index += 1
            elif pattern.startswith(("&&", "--", "~~"), index):
                # Set operators, never items: a '[' after them opens a nested class.
                index += 2
            else:
                index = after_class_item(index + 1)
            continue
        if char == "(":
            found = next((p for p in _LOOKAROUND if pattern.startswith(p, index)), None)
            if found is not None:
                return f"look-around ('{found}' at position {index}) is not supported"
            if pattern.startswith("(?P=", index):
                return f"backreferences ('(?P=' at position {index}) are not supported"
            groups.append(index)
            if pattern.startswith(("(?<", "(?P<"), index):
                end = pattern.find(">", index)
                if end < 0:
                    return None
                index = end + 1
                continue
            if pattern.startswith("(?", index):
                end = index + 2
                while end < length and pattern[end] in _FLAG_CHARS:
                    end += 1
                if "x" in pattern[index + 2 : end]:
                    return None
            index += 1
            continue
        if char == ")":
            if not groups:
                return f"unopened group: the ')' at position {index} closes nothing"
            groups.pop()
        index += 1
    if classes:
        return f"unclosed character class: the '[' at position {classes[-1]} is never closed"
    if groups:
        return f"unclosed group: the '(' at position {groups[-1]} is never closed"
    return None


@dataclass(frozen=True)
class Header(Query):
    """A declared request header, checked like a query parameter; the name is matched without
    regard to case, and the handler reads the value as ``request.header_params[name]`` (the
    name in lower case).

    >>> Header(str, min_length=16).spec()["min_length"]
    16
    """


@dataclass(frozen=True)
class Cookie(Query):
    """A declared cookie (from the ``Cookie`` request header), checked like a query parameter;
    the handler reads it as ``request.cookies[name]``.

    >>> Cookie(str).spec()["required"]
    True
    """


@dataclass(frozen=True)
class Form(Query):
    """A declared form field (``application/x-www-form-urlencoded`` or
    ``multipart/form-data``), checked like a query parameter before the handler runs; the
    handler reads the typed value as ``request.form_params[name]``, and every field and file
    as ``await request.form()``.

    >>> Form(str, max_length=80).spec()["max_length"]
    80
    """
