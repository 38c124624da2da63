from __future__ import annotations

import enum
import typing
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Optional, Required, TypedDict, Union

import pytest

from pyhost import json_schema


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Address:
    street: str
    zip_code: str | None = None


@dataclass
class User:
    id: uuid.UUID
    name: str
    address: Address
    tags: list[str] = field(default_factory=list)
    color: Color = Color.RED
    computed: int = field(default=0, init=False)


class Point(TypedDict):
    x: float
    y: float


class Options(TypedDict, total=False):
    verbose: bool
    name: Required[str]


class Mixed(TypedDict):
    a: int
    b: NotRequired[list[Point]]


@dataclass
class Node:
    value: int
    children: list[Node]


@dataclass
class WithBytes:
    data: bytes


@dataclass
class Broken:
    value: DoesNotExist  # type: ignore[name-defined]  # noqa: F821


@pytest.mark.parametrize(
    ("tp", "schema"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (type(None), {"type": "null"}),
        (Any, {}),
        (uuid.UUID, {"type": "string", "format": "uuid"}),
        (list, {"type": "array"}),
        (dict, {"type": "object"}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (typing.List[str], {"type": "array", "items": {"type": "string"}}),  # noqa: UP006
        (tuple[bool, ...], {"type": "array", "items": {"type": "boolean"}}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict[str, Any], {"type": "object", "additionalProperties": {}}),
        (
            list[list[int]],
            {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        ),
    ],
)
def test_basic_types(tp, schema):
    assert json_schema(tp) == schema


@pytest.mark.parametrize(
    "tp",
    [Optional[int], Union[int, None], int | None],  # noqa: UP007, UP045
)
def test_optional(tp):
    assert json_schema(tp) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_union():
    assert json_schema(int | str | list[bool]) == {
        "anyOf": [
            {"type": "integer"},
            {"type": "string"},
            {"type": "array", "items": {"type": "boolean"}},
        ]
    }


def test_literal():
    assert json_schema(Literal["a", "b", 3, True, None]) == {"enum": ["a", "b", 3, True, None]}
    assert json_schema(Literal[Color.GREEN]) == {"enum": ["green"]}


def test_enum():
    assert json_schema(Color) == {"enum": ["red", "green"]}
    assert json_schema(Level) == {"enum": [1, 2]}


def test_dataclass_nested_with_defaults():
    assert json_schema(User) == {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string"},
                    "zip_code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "required": ["street"],
                "additionalProperties": False,
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "color": {"enum": ["red", "green"]},
        },
        "required": ["id", "name", "address"],
        "additionalProperties": False,
    }


def test_dataclass_without_required_fields_omits_required():
    @dataclass
    class Paging:
        page: int = 1

    assert json_schema(Paging) == {
        "type": "object",
        "properties": {"page": {"type": "integer"}},
        "additionalProperties": False,
    }


def test_typeddict_total():
    assert json_schema(Point) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
        "required": ["x", "y"],
    }


def test_typeddict_total_false_and_required():
    assert json_schema(Options) == {
        "type": "object",
        "properties": {"verbose": {"type": "boolean"}, "name": {"type": "string"}},
        "required": ["name"],
    }


def test_typeddict_not_required_and_nested():
    schema = json_schema(Mixed)
    assert schema["required"] == ["a"]
    assert schema["properties"]["b"] == {"type": "array", "items": json_schema(Point)}
    assert "additionalProperties" not in schema


def test_list_of_dataclasses():
    schema = json_schema(list[Address])
    assert schema["type"] == "array"
    assert schema["items"]["required"] == ["street"]


def test_same_dataclass_twice_is_not_recursion():
    @dataclass
    class Line:
        start: Address
        end: Address

    schema = json_schema(Line)
    assert schema["properties"]["start"] == schema["properties"]["end"] == json_schema(Address)


@pytest.mark.parametrize(
    ("tp", "message"),
    [
        (bytes, "unsupported type bytes"),
        (set[int], r"unsupported type set\[int\]"),
        (tuple[int, str], r"unsupported type tuple\[int, str\]"),
        (dict[int, str], r"unsupported type dict\[int, str\]"),
        (list[bytes], "unsupported type bytes"),
        (WithBytes, r"unsupported type bytes \(field .*WithBytes\.data\)"),
        (Node, r"recursive type .*Node is not supported"),
        (Broken, "cannot resolve the annotations of .*Broken"),
        (Literal[1.5j], "cannot be represented in JSON"),
        ("int", "unsupported type 'int'"),
    ],
)
def test_unsupported_types_raise_type_error_naming_them(tp, message):
    with pytest.raises(TypeError, match=message):
        json_schema(tp)


def test_typeddict_functional_syntax_without_string_annotations():
    Pet = TypedDict("Pet", {"name": str, "age": NotRequired[int]})  # noqa: UP013
    assert json_schema(Pet) == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
    }
