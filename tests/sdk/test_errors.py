"""`pyhost.errors`: the exceptions of host services, shared by `pyhost.host` and `pyhost._abi`."""

from __future__ import annotations

import ast
import importlib
import pickle
from pathlib import Path

import pytest

import pyhost
from pyhost import _abi, errors

# `pyhost.host` the attribute is the host object; the module has to be looked up by name.
host_module = importlib.import_module("pyhost.host")
PACKAGE = Path(pyhost.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative ones as `.name`, at any depth of the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


@pytest.mark.parametrize("name", ["Status", "HostError", "CapabilityError", "error_for_status"])
def test_pyhost_host_re_exports_the_error_types(name: str):
    assert getattr(host_module, name) is getattr(errors, name)
    assert name in host_module.__all__


def test_the_public_names_are_the_same_objects():
    assert pyhost.HostError is errors.HostError
    assert pyhost.CapabilityError is errors.CapabilityError
    assert _abi.HostError is errors.HostError


def test_abi_does_not_import_host():
    imported = _imported_modules(PACKAGE / "_abi.py")
    assert ".errors" in imported
    assert not {".host", "pyhost.host", "."} & imported


def test_errors_imports_no_other_pyhost_module():
    assert not {name for name in _imported_modules(PACKAGE / "errors.py") if name.startswith(".")}


def test_error_for_status_picks_the_class():
    denied = errors.error_for_status(errors.Status.DENIED, "no")
    assert type(denied) is errors.CapabilityError
    assert isinstance(denied, PermissionError)
    assert (denied.status, denied.message, str(denied)) == (errors.Status.DENIED, "no", "no")
    failed = errors.error_for_status(errors.Status.ERROR, "boom")
    assert type(failed) is errors.HostError
    assert failed.status is errors.Status.ERROR
    unknown = errors.error_for_status(42, "odd")
    assert type(unknown) is errors.HostError
    assert unknown.status == 42


def test_errors_pickle_and_repr():
    error = errors.CapabilityError(errors.Status.DENIED, 'capability "kv" is not granted')
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.CapabilityError
    assert (copy.status, copy.message) == (error.status, error.message)
    assert repr(error) == "CapabilityError(2, 'capability \"kv\" is not granted')"
