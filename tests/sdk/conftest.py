"""Fixtures for the SDK's host-service tests."""

from collections.abc import Iterator

import pytest

from pyhost import _abi, testing
from pyhost.host import EmbeddedHost
from tests.sdk.fake_host import FakeHost


@pytest.fixture(autouse=True)
def _reset_host() -> Iterator[None]:
    """Every test starts with `pyhost.host` undecided and leaves it that way."""
    testing.reset()
    yield
    testing.reset()


@pytest.fixture
def fake() -> Iterator[FakeHost]:
    """A fake host table; the test fails if any buffer it filled was not freed exactly once."""
    fake = FakeHost()
    yield fake
    fake.assert_all_freed()


@pytest.fixture
def binding(fake: FakeHost) -> _abi.Binding:
    return _abi.bind(fake.address)


@pytest.fixture
def embedded(binding: _abi.Binding) -> EmbeddedHost:
    return EmbeddedHost(binding)
