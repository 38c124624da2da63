"""Fixtures for the doctests of the SDK (``pytest --doctest-modules pyruntime/pyhost``).

Outside the pyhost binary :data:`pyhost.host` is one in-process host for the whole test run,
so a doctest that stores a key or narrows the capabilities would change what the next one
sees; every doctest therefore starts and ends with the host undecided.
"""

from collections.abc import Iterator

import pytest

from pyhost import testing


@pytest.fixture(autouse=True)
def _fresh_host() -> Iterator[None]:
    """Give every doctest a fresh in-process host."""
    testing.reset()
    yield
    testing.reset()
