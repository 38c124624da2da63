"""Run host services in-process, for tests of plugin code outside the pyhost binary.

>>> from pyhost import CapabilityError, host, testing
>>> _ = testing.configure(settings={"greeting": "hi"}, secrets={"TOKEN": "t0k"}, capabilities=[])
>>> host.settings["greeting"], host.secret("TOKEN")
('hi', 't0k')
>>> try:
...     host.kv.get("visits")
... except CapabilityError as error:
...     print(str(error).split(";")[0])
capability "kv" is not granted to plugin "app"
>>> testing.reset()

A fixture that gives every test a fresh host::

    @pytest.fixture(autouse=True)
    def host_services():
        yield testing.configure(settings={...}, functions={...})
        testing.reset()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from .host import InProcessHost, _selected

__all__ = ["InProcessHost", "configure", "reset"]


def configure(
    settings: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    functions: Mapping[str, Callable[[Any], Any]] | None = None,
    async_functions: Mapping[str, Callable[[Any], Awaitable[Any]]] | None = None,
    capabilities: Iterable[str] | None = None,
) -> InProcessHost:
    """Make :data:`pyhost.host` an in-process host with these settings, and return it.

    ``settings`` is the plugin's settings table; ``secrets`` maps the secrets the plugin may
    read to their values (``None``: any name, read from the environment, as the host does);
    ``functions`` and ``async_functions`` are the host functions, taking and returning JSON
    data; ``capabilities`` uses the config's names (``"kv"``, ``"call:NAME"``, ``"call:*"``),
    ``None`` granting everything. The key-value store starts empty; the returned
    host's :attr:`~pyhost.host.InProcessHost.store` holds its contents.
    """
    impl = InProcessHost(
        settings=settings,
        secrets=secrets,
        functions=functions,
        async_functions=async_functions,
        capabilities=capabilities,
    )
    _selected._install(impl)
    return impl


def reset() -> None:
    """Undo :func:`configure`: :data:`pyhost.host` chooses its implementation again on next use
    (a fresh in-process host with everything granted, outside the pyhost binary)."""
    _selected._install(None)
