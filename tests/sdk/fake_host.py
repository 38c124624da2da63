"""A fake host for the cffi binding: a `pyhost_host_v2` table of `ffi.callback` functions.

It behaves like a small host with two plugins, `app` (0) and `billing` (1). No function of the
table names the calling plugin: as in the host, the fake decides who is calling, from
`caller`, the plugin whose code it is running (`None`: no plugin, as for an event-loop
callback). Every function records `(function, caller)` in `calls` and, when `caller` is
`None`, answers DENIED with the host's message (`NO_PLUGIN_MESSAGE`), except `log`:

- `log` records `(caller, level, message, request_id, fields)`, `caller` possibly `None`.
- `settings` returns `settings[caller]` as JSON.
- `secret` returns `secrets[caller][name]`, or is DENIED with the host's message.
- `kv_get` / `kv_set` / `kv_delete` use a dict per plugin; `billing` lacks `kv` (DENIED);
  the key `"boom"` fails with ERROR.
- `call` echoes its data; data that is not JSON is INVALID; `missing` is NO_SUCH_FUNCTION,
  `fail` ERROR, `denied` DENIED, `silent` fails with ERROR but no message, `empty` succeeds
  with an empty buffer; `nested` calls `nested_hook()` first, from inside the callback
  (re-entrancy).

Every buffer it fills is an `ffi.new("uint8_t[]", n)` kept alive in `live`, keyed by address,
until `free_buffer` releases it; freeing an unknown address is recorded in `bad_frees`.

`fake_module` builds a stand-in for the host's `_pyhost_host` module over a `FakeHost`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import types
from collections.abc import Callable
from typing import Any

from pyhost import _abi

ffi = _abi.ffi
PLUGINS = ("app", "billing")

NO_PLUGIN_MESSAGE = (
    "host services answer only the code the host runs for a plugin (its handlers, the tasks "
    "and threads they start, and its package's import); this call came from outside them, e.g. "
    "from an event-loop callback or a task factory of its own"
)
"""The host's message for a call from code it runs for no plugin."""


def _table(plugin: str) -> str:
    return plugin if plugin == "app" else f"plugins.{plugin}"


def denied_message(capability: str, plugin: str) -> str:
    """The host's message for a capability it does not grant."""
    return (
        f'capability "{capability}" is not granted to plugin "{plugin}"; '
        f'add "{capability}" to {_table(plugin)}.capabilities in the config file'
    )


def secret_denied_message(name: str, plugin: str) -> str:
    """The host's message for a secret the config does not list for the plugin."""
    return (
        f'secret "{name}" is not granted to plugin "{plugin}"; '
        f'add "{name}" to {_table(plugin)}.secrets in the config file'
    )


def _address(pointer: Any) -> int:
    return int(ffi.cast("uintptr_t", pointer))


def _read(pointer: Any, size: int) -> bytes:
    return ffi.buffer(pointer, size)[:] if size else b""


class FakeHost:
    """The fake table (`self.table`, a `pyhost_host_v2 *`) and what it saw."""

    def __init__(self, *, abi_version: int = _abi.ABI_VERSION, struct_size: int | None = None):
        self.caller: int | None = 0  # the plugin whose code the fake host is running
        self.settings: dict[int, Any] = {0: {"greeting": "hi", "nested": {"n": [1, 2]}}, 1: {}}
        self.secrets: dict[int, dict[str, str]] = {0: {"TOKEN": "s3cret"}, 1: {}}
        self.kv: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
        self.logs: list[tuple[int | None, int, str, str, Any]] = []
        self.calls: list[tuple[str, int | None]] = []  # (function, caller) for every call made
        self.live: dict[int, Any] = {}  # filled, not yet freed buffers by address
        self.filled = 0
        self.freed = 0
        self.empty_frees = 0
        self.bad_frees: list[int] = []
        self.callback_errors: list[BaseException] = []
        self.nested_hook: Callable[[], Any] | None = None
        self._lock = threading.Lock()

        fields = dict(ffi.typeof("pyhost_host_v2").fields)

        def callback(name: str, function: Callable[..., Any]) -> Any:
            kind = fields[name].type
            if name == "free_buffer":
                return ffi.callback(kind, function, onerror=self._on_error)
            return ffi.callback(kind, function, error=_abi.ERROR, onerror=self._on_error)

        # The callbacks must outlive the table; keep them on the instance.
        self._callbacks = {
            "log": callback("log", self._log),
            "settings": callback("settings", self._settings),
            "secret": callback("secret", self._secret),
            "kv_get": callback("kv_get", self._kv_get),
            "kv_set": callback("kv_set", self._kv_set),
            "kv_delete": callback("kv_delete", self._kv_delete),
            "call": callback("call", self._call),
            "free_buffer": callback("free_buffer", self._free_buffer),
        }
        self.table = ffi.new(
            "pyhost_host_v2 *",
            {
                "abi_version": abi_version,
                "struct_size": ffi.sizeof("pyhost_host_v2") if struct_size is None else struct_size,
                **self._callbacks,
            },
        )

    @property
    def address(self) -> int:
        return _address(self.table)

    def assert_all_freed(self) -> None:
        """Every filled buffer was released exactly once, and no callback failed."""
        assert self.callback_errors == []
        assert self.bad_frees == []
        assert self.live == {}
        assert self.freed == self.filled

    # --- helpers

    def _on_error(self, exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        self.callback_errors.append(exc)

    def _fill(self, out: Any, payload: bytes) -> None:
        block = ffi.new("uint8_t[]", max(len(payload), 1))
        ffi.memmove(block, payload, len(payload))
        out.data = block
        out.len = len(payload)
        out.cap = len(block)
        with self._lock:
            self.live[_address(block)] = block
            self.filled += 1

    def _fail(self, out: Any, status: int, message: str) -> int:
        self._fill(out, message.encode())
        return status

    def _enter(self, function: str) -> int | None:
        """Record the call; return the calling plugin (None: no plugin is running)."""
        plugin = self.caller
        self.calls.append((function, plugin))
        return plugin

    # --- the table's functions

    def _log(self, level, message, message_len, rid, rid_len, fields, fields_len, out):
        plugin = self._enter("log")  # always accepted, also from no plugin
        decoded = json.loads(_read(fields, fields_len)) if fields_len else None
        self.logs.append(
            (
                plugin,
                level,
                _read(message, message_len).decode(),
                _read(rid, rid_len).decode(),
                decoded,
            )
        )
        return _abi.OK

    def _settings(self, out):
        plugin = self._enter("settings")
        if plugin is None:
            return self._fail(out, _abi.DENIED, NO_PLUGIN_MESSAGE)
        self._fill(out, json.dumps(self.settings[plugin]).encode())
        return _abi.OK

    def _secret(self, name, name_len, out):
        plugin = self._enter("secret")
        if plugin is None:
            return self._fail(out, _abi.DENIED, NO_PLUGIN_MESSAGE)
        wanted = _read(name, name_len).decode()
        value = self.secrets[plugin].get(wanted)
        if value is None:
            return self._fail(out, _abi.DENIED, secret_denied_message(wanted, PLUGINS[plugin]))
        self._fill(out, value.encode())
        return _abi.OK

    def kv_refusal(self, plugin: int | None, key: bytes) -> tuple[int, str] | None:
        """The status and message the host fails a kv call with, or None if it succeeds."""
        if plugin is None:
            return _abi.DENIED, NO_PLUGIN_MESSAGE
        if plugin == 1:
            return _abi.DENIED, denied_message("kv", PLUGINS[plugin])
        if key == b"boom":
            return _abi.ERROR, "kv store failed: disk on fire"
        return None

    def _kv_get(self, key, key_len, out):
        plugin = self._enter("kv_get")
        raw = _read(key, key_len)
        if (refusal := self.kv_refusal(plugin, raw)) is not None:
            return self._fail(out, *refusal)
        value = self.kv[plugin].get(raw)
        if value is None:
            return _abi.NOT_FOUND
        self._fill(out, value)
        return _abi.OK

    def _kv_set(self, key, key_len, value, value_len, out):
        plugin = self._enter("kv_set")
        raw = _read(key, key_len)
        if (refusal := self.kv_refusal(plugin, raw)) is not None:
            return self._fail(out, *refusal)
        self.kv[plugin][raw] = _read(value, value_len)
        return _abi.OK

    def _kv_delete(self, key, key_len, out):
        plugin = self._enter("kv_delete")
        raw = _read(key, key_len)
        if (refusal := self.kv_refusal(plugin, raw)) is not None:
            return self._fail(out, *refusal)
        self.kv[plugin].pop(raw, None)
        return _abi.OK

    def _call(self, name, name_len, data, data_len, out):
        plugin = self._enter("call")
        if plugin is None:
            return self._fail(out, _abi.DENIED, NO_PLUGIN_MESSAGE)
        function = _read(name, name_len).decode()
        payload = _read(data, data_len)
        try:
            json.loads(payload)
        except ValueError as exc:
            return self._fail(out, _abi.INVALID, f"data is not JSON: {exc}")
        if function == "missing":
            return self._fail(
                out, _abi.NO_SUCH_FUNCTION, 'no host function named "missing" is registered'
            )
        if function == "fail":
            return self._fail(out, _abi.ERROR, "host function 'fail' failed: nope")
        if function == "denied":
            return self._fail(out, _abi.DENIED, denied_message("call:denied", PLUGINS[plugin]))
        if function == "silent":
            return _abi.ERROR
        if function == "empty":
            self._fill(out, b"")
            return _abi.OK
        if function == "nested" and self.nested_hook is not None:
            payload = json.dumps({"inner": self.nested_hook(), "outer": json.loads(payload)})
            payload = payload.encode()
        self._fill(out, payload)
        return _abi.OK

    def _free_buffer(self, buffer):
        if buffer.data == ffi.NULL:
            self.empty_frees += 1
            return
        address = _address(buffer.data)
        with self._lock:
            if self.live.pop(address, None) is None:
                self.bad_frees.append(address)
            else:
                self.freed += 1


# --- a stand-in for the host's `_pyhost_host` module


class HostCallError(Exception):
    """Stands in for `_pyhost_host.HostCallError(status, message)` (args only, as in the host)."""


def fake_module(
    fake: FakeHost, *, kv_async: tuple[str, ...] = (), builtins: bool = False
) -> types.ModuleType:
    """A `_pyhost_host` over `fake`: `abi_table`, `plugins`, `call_async`, `HostCallError`.

    `kv_async` names the awaitable kv forms it offers (`"get"`, `"set"`, `"delete"` for
    `kv_get_async`, ...). As the host's, they act for `fake.caller`, check the grant when
    called (raising `HostCallError` right away) and do the work when awaited (where the key
    `"boom"` fails); they record `("kv_get_async", caller)` etc. in `fake.calls`, insist on a
    `str` key and `bytes` value, and never touch the table. `builtins` adds the built-in
    `kv_get`, `call`, `log` and `settings`, recorded as `("builtin_kv_get", caller)` etc.
    """
    module = types.ModuleType("_pyhost_host")
    module.abi_table = lambda: fake.address
    module.plugins = lambda: list(PLUGINS)
    module.HostCallError = HostCallError

    async def call_async(name: str, data: bytes) -> bytes:
        plugin = fake.caller
        fake.calls.append(("call_async", plugin))
        if plugin is None:
            raise HostCallError(_abi.DENIED, NO_PLUGIN_MESSAGE)
        await asyncio.sleep(0)
        return data

    module.call_async = call_async

    def start(function: str, key: Any, work: Callable[[dict[bytes, bytes], bytes], Any]) -> Any:
        plugin = fake.caller
        fake.calls.append((function, plugin))
        if type(key) is not str:
            raise TypeError(f"{function}: key must be a str, got {type(key).__name__}")
        raw = key.encode()
        refusal = fake.kv_refusal(plugin, raw)
        if refusal is not None and refusal[0] == _abi.DENIED:
            raise HostCallError(*refusal)  # the grant is checked on the calling thread

        async def finish() -> Any:
            await asyncio.sleep(0)
            if refusal is not None:
                raise HostCallError(*refusal)
            return work(fake.kv[plugin], raw)

        return finish()

    def kv_get_async(key: str) -> Any:
        return start("kv_get_async", key, lambda store, raw: store.get(raw))

    def kv_set_async(key: str, value: bytes) -> Any:
        if type(value) is not bytes:
            raise TypeError(f"kv_set_async: value must be bytes, got {type(value).__name__}")

        def store_value(store: dict[bytes, bytes], raw: bytes) -> None:
            store[raw] = value

        return start("kv_set_async", key, store_value)

    def kv_delete_async(key: str) -> Any:
        def delete(store: dict[bytes, bytes], raw: bytes) -> None:
            store.pop(raw, None)

        return start("kv_delete_async", key, delete)

    forms = {"get": kv_get_async, "set": kv_set_async, "delete": kv_delete_async}
    for name in kv_async:
        setattr(module, f"kv_{name}_async", forms[name])

    if builtins:

        def builtin(function: str) -> int:
            plugin = fake.caller
            fake.calls.append((f"builtin_{function}", plugin))
            if plugin is None and function != "log":
                raise HostCallError(_abi.DENIED, NO_PLUGIN_MESSAGE)
            return plugin

        def kv_get(key: str) -> bytes | None:
            plugin = builtin("kv_get")
            refusal = fake.kv_refusal(plugin, key.encode())
            if refusal is not None:
                raise HostCallError(*refusal)
            return fake.kv[plugin].get(key.encode())

        def call(name: str, data: Any) -> Any:
            builtin("call")
            if name == "fail":
                raise HostCallError(_abi.ERROR, "host function 'fail' failed: nope")
            return json.loads(json.dumps(data))

        def log(level: int, message: str, request_id: str, fields: str) -> None:
            plugin = builtin("log")
            fake.logs.append((plugin, level, message, request_id, json.loads(fields)))

        def settings() -> dict[str, Any]:
            plugin = builtin("settings")
            return json.loads(json.dumps(fake.settings[plugin]))

        module.kv_get = kv_get
        module.call = call
        module.log = log
        module.settings = settings
    return module
