"""JSON Schema derived from Python type hints.

The host validates request bodies against the schema of a route (``body=`` on the route
decorator), so handlers get data that already has the declared shape. :func:`json_schema` covers
the types that map cleanly onto JSON; anything else raises ``TypeError`` instead of producing a
schema that would accept data the handler does not expect.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from typing import Any, Literal, Union

_PLAIN_TYPES: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    list: {"type": "array"},
    tuple: {"type": "array"},
    dict: {"type": "object"},
}


def json_schema(tp: Any) -> dict[str, Any]:
    """Return the JSON Schema describing values of type ``tp``.

    Supported: ``int``, ``float``, ``str``, ``bool``, ``None``, ``Any``, ``uuid.UUID`` (a string
    with ``format: uuid``), ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, unions
    (``Optional[T]``, ``Union[...]``, ``X | Y``), ``Literal[...]``, ``Enum`` subclasses (their
    values), dataclasses and ``TypedDict`` classes, nested in any combination.

    Dataclass fields with a default are optional and unknown properties are rejected
    (``additionalProperties: false``); a ``TypedDict`` requires its ``__required_keys__`` and
    leaves other properties open, as the type itself does.

    Raises ``TypeError`` naming the type (and where it was met) for anything else, including
    recursive types.

    >>> json_schema(list[int])
    {'type': 'array', 'items': {'type': 'integer'}}
    """
    return _schema(tp, where="", seen=())


def _schema(tp: Any, *, where: str, seen: tuple[type, ...]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    origin = typing.get_origin(tp)
    if origin is not None:
        return _generic_schema(tp, origin, where=where, seen=seen)
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return {"enum": [_json_literal(member, where=where) for member in tp]}
        if tp in _PLAIN_TYPES:
            return dict(_PLAIN_TYPES[tp])
        # `uuid` is not imported for this check: a type that is `uuid.UUID` means it already is.
        uuid_module = sys.modules.get("uuid")
        if uuid_module is not None and tp is uuid_module.UUID:
            return {"type": "string", "format": "uuid"}
        if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
            if tp in seen:
                raise TypeError(f"json_schema: recursive type {_name(tp)} is not supported{where}")
            if dataclasses.is_dataclass(tp):
                return _dataclass_schema(tp, seen=(*seen, tp))
            return _typeddict_schema(tp, seen=(*seen, tp))
    raise TypeError(f"json_schema: unsupported type {_name(tp)}{where}")


def _generic_schema(tp: Any, origin: Any, *, where: str, seen: tuple[type, ...]) -> dict[str, Any]:
    args = typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [_schema(arg, where=where, seen=seen) for arg in args]}
    if origin is Literal:
        return {"enum": [_json_literal(arg, where=where) for arg in args]}
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _schema(args[0], where=where, seen=seen)}
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return {"type": "array", "items": _schema(args[0], where=where, seen=seen)}
    if origin is dict and len(args) == 2 and args[0] is str:
        return {
            "type": "object",
            "additionalProperties": _schema(args[1], where=where, seen=seen),
        }
    raise TypeError(f"json_schema: unsupported type {_name(tp)}{where}")


def _dataclass_schema(cls: type, *, seen: tuple[type, ...]) -> dict[str, Any]:
    hints = _type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        # Fields outside __init__ cannot come from the request, so they are not part of the input.
        if not field.init:
            continue
        where = f" (field {_name(cls)}.{field.name})"
        properties[field.name] = _schema(hints[field.name], where=where, seen=seen)
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    return _object_schema(properties, required) | {"additionalProperties": False}


def _typeddict_schema(cls: type, *, seen: tuple[type, ...]) -> dict[str, Any]:
    hints = _type_hints(cls)
    properties = {
        key: _schema(hint, where=f" (key {_name(cls)}[{key!r}])", seen=seen)
        for key, hint in hints.items()
    }
    required_keys = set(getattr(cls, "__required_keys__", ()))
    # Python 3.11 computes __required_keys__ before string annotations (PEP 563) are evaluated,
    # so it misses Required[]/NotRequired[] written that way; the evaluated hints settle it.
    for key, hint in _type_hints(cls, include_extras=True).items():
        qualifier = typing.get_origin(hint)
        if qualifier is typing.Required:
            required_keys.add(key)
        elif qualifier is typing.NotRequired:
            required_keys.discard(key)
    return _object_schema(properties, [key for key in hints if key in required_keys])


def _object_schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _type_hints(cls: type, *, include_extras: bool = False) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=include_extras)
    except Exception as exc:
        raise TypeError(
            f"json_schema: cannot resolve the annotations of {_name(cls)}: {exc}"
        ) from exc


def _json_literal(value: Any, *, where: str) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"json_schema: value {value!r} cannot be represented in JSON{where}")


def _name(tp: Any) -> str:
    if not isinstance(tp, type):
        return repr(tp)
    if tp.__module__ == "builtins":
        return tp.__qualname__
    return f"{tp.__module__}.{tp.__qualname__}"
