import dataclasses
import json
import uuid
from pathlib import Path

import pytest

from pyhost import REQUIRED, Query

SPEC_KEYS = [
    "type",
    "required",
    "default",
    "ge",
    "le",
    "gt",
    "lt",
    "min_length",
    "max_length",
    "pattern",
    "choices",
    "multiple",
]

ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def test_defaults_to_a_required_str():
    query = Query()
    assert query.type is str
    assert query.default is REQUIRED
    assert query.required is True
    assert repr(REQUIRED) == "REQUIRED"
    assert query.spec() == {
        "type": "str",
        "required": True,
        "default": None,
        "ge": None,
        "le": None,
        "gt": None,
        "lt": None,
        "min_length": None,
        "max_length": None,
        "pattern": None,
        "choices": None,
        "multiple": False,
    }


def test_spec_carries_every_constraint():
    spec = Query(int, default=10, ge=1, le=100, description="page size").spec()
    assert list(spec) == SPEC_KEYS
    assert spec["type"] == "int"
    assert spec["required"] is False
    assert spec["default"] == 10
    assert (spec["ge"], spec["le"], spec["gt"], spec["lt"]) == (1, 100, None, None)

    spec = Query(float, gt=0, lt=1.5).spec()
    assert (spec["type"], spec["required"], spec["gt"], spec["lt"]) == ("float", True, 0, 1.5)

    spec = Query(str, default="ab", min_length=1, max_length=5, pattern=r"^[a-z]+$").spec()
    assert (spec["min_length"], spec["max_length"], spec["pattern"]) == (1, 5, r"^[a-z]+$")


@pytest.mark.parametrize(
    ("query", "spec_type", "default"),
    [
        (Query(str, default="x"), "str", "x"),
        (Query(int, default=0), "int", 0),
        (Query(float, default=2), "float", 2.0),
        (Query(bool, default=False), "bool", False),
        (Query(uuid.UUID, default=ID), "uuid", str(ID)),
    ],
)
def test_spec_types_and_json_defaults(query, spec_type, default):
    spec = query.spec()
    assert spec["type"] == spec_type
    assert spec["default"] == default
    assert type(spec["default"]) is type(default)
    assert json.loads(json.dumps(spec)) == spec


def test_bool_default_stays_bool():
    spec = Query(bool, default=True).spec()
    assert spec["default"] is True


def test_float_default_given_as_int_is_normalised():
    query = Query(float, default=3)
    assert query.default == 3.0
    assert isinstance(query.default, float)


def test_default_none_makes_the_parameter_optional():
    spec = Query(int, default=None).spec()
    assert spec["required"] is False
    assert spec["default"] is None


def test_choices_are_listed_in_the_spec():
    spec = Query(str, default="asc", choices=["asc", "desc"]).spec()
    assert spec["choices"] == ["asc", "desc"]
    other = uuid.UUID(int=7)
    spec = Query(uuid.UUID, choices=(ID, other)).spec()
    assert spec["choices"] == [str(ID), str(other)]


def test_multiple():
    spec = Query(int, default=[1, 2], multiple=True).spec()
    assert spec["multiple"] is True
    assert spec["default"] == [1, 2]
    assert Query(uuid.UUID, default=[ID], multiple=True).spec()["default"] == [str(ID)]
    assert Query(str, multiple=True).spec()["required"] is True
    assert Query(str, default=[], multiple=True).spec()["default"] == []


def test_query_is_immutable():
    query = Query(int, default=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        query.default = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": str, "ge": 1}, "ge= only applies to int and float, not str"),
        ({"type": bool, "lt": 1}, "lt= only applies to int and float, not bool"),
        ({"type": uuid.UUID, "gt": 0}, "gt= only applies to int and float, not uuid"),
        ({"type": int, "min_length": 1}, "min_length= only applies to str, not int"),
        ({"type": float, "max_length": 3}, "max_length= only applies to str, not float"),
        ({"type": int, "pattern": "^1"}, "pattern= only applies to str, not int"),
        ({"type": int, "ge": 5, "le": 1}, "ge=5 and le=1 admit no value"),
        ({"type": int, "gt": 1, "lt": 1}, "gt=1 and lt=1 admit no value"),
        ({"type": int, "ge": 1, "lt": 1}, "ge=1 and lt=1 admit no value"),
        ({"type": float, "ge": float("inf")}, "ge must be finite"),
        ({"type": float, "default": float("nan")}, "default must be finite"),
        ({"type": str, "min_length": -1}, "min_length must not be negative"),
        ({"type": str, "min_length": 5, "max_length": 2}, "min_length=5 is greater than"),
        ({"type": str, "pattern": "("}, "is not a valid regex"),
        ({"type": str, "choices": []}, "choices must not be empty"),
        ({"type": str, "default": "c", "choices": ["a", "b"]}, "'c' is not one of the choices"),
        (
            {"type": int, "default": [1, 3], "choices": [1, 2], "multiple": True},
            "3 is not one of the choices",
        ),
    ],
)
def test_nonsense_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Query(**kwargs)


def test_equal_bounds_are_fine_when_inclusive():
    assert Query(int, ge=3, le=3).spec()["ge"] == 3


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((list,), {}, "type must be str, int, float, bool or uuid.UUID"),
        (("int",), {}, "type must be str"),
        ((int, "10"), {}, "default '10' is not of type int"),
        ((int, True), {}, "default True is not of type int"),
        ((int, 1.5), {}, "default 1.5 is not of type int"),
        ((float, True), {}, "default True is not of type float"),
        ((bool, 1), {}, "default 1 is not of type bool"),
        ((str, 1), {}, "default 1 is not of type str"),
        ((uuid.UUID, str(ID)), {}, "is not of type uuid"),
        ((int,), {"choices": [1, "2"]}, "choice '2' is not of type int"),
        ((int,), {"choices": "12"}, "choices must be a list"),
        ((int, 1), {"multiple": True}, "default must be a list"),
        ((int, None), {"multiple": True}, "default must be a list"),
        ((int, ["1"]), {"multiple": True}, "default '1' is not of type int"),
        ((int,), {"ge": "1"}, "ge must be a number"),
        ((int,), {"le": True}, "le must be a number"),
        ((str,), {"max_length": 2.0}, "max_length must be an int"),
        ((str,), {"pattern": 1}, "pattern must be a str"),
        ((str,), {"multiple": "yes"}, "multiple must be a bool"),
        ((str,), {"description": 3}, "description must be a str"),
    ],
)
def test_wrongly_typed_arguments_raise_type_error(args, kwargs, message):
    with pytest.raises(TypeError, match=message):
        Query(*args, **kwargs)


def test_keyword_only_constraints():
    with pytest.raises(TypeError):
        Query(int, 1, 0)  # type: ignore[misc]


PATTERNS = json.loads(
    (Path(__file__).resolve().parent.parent / "data" / "query_patterns.json").read_text("utf-8")
)["patterns"]


@pytest.mark.parametrize("entry", PATTERNS, ids=[entry["pattern"] for entry in PATTERNS])
def test_patterns_are_refused_early_only_when_rust_refuses_them(entry):
    # host/src/validation.rs checks `rust_accepts` of the same corpus against the real engine.
    assert entry["sdk_accepts"] or not entry["rust_accepts"], "the corpus contradicts itself"
    if entry["sdk_accepts"]:
        assert Query(str, pattern=entry["pattern"]).spec()["pattern"] == entry["pattern"]
    else:
        with pytest.raises(ValueError, match="is not a valid regex for Rust's regex crate"):
            Query(str, pattern=entry["pattern"])


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(?=a)b", r"look-around \('\(\?=' at position 0\) is not supported"),
        ("a(?<!b)", r"look-around \('\(\?<!' at position 1\)"),
        (r"(a)\1", r"backreferences \('\\1' at position 3\) are not supported"),
        ("(?P<n>a)(?P=n)", r"backreferences \('\(\?P=' at position 8\)"),
        ("ab(", "unclosed group: the '\\(' at position 2 is never closed"),
        ("a)", "unopened group: the '\\)' at position 1 closes nothing"),
        ("x[a[b]", "unclosed character class: the '\\[' at position 1 is never closed"),
        ("a\\", "ends in a lone backslash"),
    ],
)
def test_an_early_refusal_says_what_rust_would_refuse(pattern, message):
    with pytest.raises(ValueError, match=message):
        Query(str, pattern=pattern)
