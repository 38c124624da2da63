"""Fixtures for the black-box tests of the `pyhost` binary (see `tests/harness.py`).

The binary is `$PYHOST_BIN` or `<repo>/target/debug/pyhost`; build it first. Servers get
`VIRTUAL_ENV` set to the interpreter prefix running the tests, whose environment has the
`pyhost` SDK installed.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import EXAMPLE_CONFIG, CliResult, Server, ServerFactory, binary_path


@pytest.fixture(scope="session")
def pyhost_bin() -> Path:
    """The binary under test; the run fails (not skips) when it is missing."""
    path = binary_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"pyhost binary not found or not executable at {path}: build it with "
            "`cargo build` or point PYHOST_BIN at it",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def server_factory(pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerFactory:
    """Starts servers on handler packages written from strings (usable from any scope)."""
    return ServerFactory(pyhost_bin, tmp_path_factory)


@pytest.fixture(scope="session")
def example_server(server_factory: ServerFactory) -> Iterator[Server]:
    """The bundled example app (`examples/hello`), shared by the whole session."""
    with server_factory.serve_config(EXAMPLE_CONFIG) as server:
        yield server


@pytest.fixture(scope="session")
def client(example_server: Server) -> Iterator[httpx.Client]:
    """An HTTP client for the example server."""
    with example_server.client() as http:
        yield http


@pytest.fixture
def pyhost(server_factory: ServerFactory) -> Callable[..., CliResult]:
    """Run `pyhost ARGS...` to completion: `pyhost("check", "--config", path)`."""
    return server_factory.run
