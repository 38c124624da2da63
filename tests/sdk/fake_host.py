"""A fake host for the cffi binding: a `pyhost_host_v1` table of `ffi.callback` functions.

It behaves like a small host with two plugins, `app` (0) and `billing` (1):

- `log` records `(plugin, level, message, request_id, fields)`; an unknown plugin is INVALID.
- `settings` returns `settings[plugin]` as JSON.
- `secret` returns `secrets[name]`, or is DENIED with the host's message.
- `kv_get` / `kv_set` / `kv_delete` use a dict per plugin; `billing` lacks `kv` (DENIED);
  the key `"boom"` fails with ERROR.
- `call` echoes its data; `missing` is NO_SUCH_FUNCTION, `fail` ERROR, `denied` DENIED,
  `silent` fails with ERROR but no message, `empty` succeeds with an empty buffer; `nested`
  calls `nested_hook()` first, from inside the callback (re-entrancy).

Every buffer it fills is an `ffi.new("uint8_t[]", n)` kept alive in `live`, keyed by address,
until `free_buffer` releases it; freeing an unknown address is recorded in `bad_frees`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from pyhost import _abi

ffi = _abi.ffi
PLUGINS = ("app", "billing")


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
    """The fake table (`self.table`, a `pyhost_host_v1 *`) and what it saw."""

    def __init__(self, *, abi_version: int = _abi.ABI_VERSION, struct_size: int | None = None):
        self.settings: dict[int, Any] = {0: {"greeting": "hi", "nested": {"n": [1, 2]}}, 1: {}}
        self.secrets: dict[str, str] = {"TOKEN": "s3cret"}
        self.kv: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
        self.logs: list[tuple[int, int, str, str, Any]] = []
        self.calls: list[tuple[str, int]] = []  # (function, plugin) for every call made
        self.live: dict[int, Any] = {}  # filled, not yet freed buffers by address
        self.filled = 0
        self.freed = 0
        self.empty_frees = 0
        self.bad_frees: list[int] = []
        self.callback_errors: list[BaseException] = []
        self.nested_hook: Callable[[], Any] | None = None
        self._lock = threading.Lock()

        fields = dict(ffi.typeof("pyhost_host_v1").fields)

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
            "pyhost_host_v1 *",
            {
                "abi_version": abi_version,
                "struct_size": ffi.sizeof("pyhost_host_v1") if struct_size is None else struct_size,
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

    def _check_plugin(self, plugin: int, out: Any) -> int | None:
        if plugin >= len(PLUGINS):
            return self._fail(out, _abi.INVALID, f"unknown plugin {plugin}")
        return None

    # --- the table's functions

    def _log(self, plugin, level, message, message_len, rid, rid_len, fields, fields_len, out):
        self.calls.append(("log", plugin))
        if (status := self._check_plugin(plugin, out)) is not None:
            return status
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

    def _settings(self, plugin, out):
        self.calls.append(("settings", plugin))
        if (status := self._check_plugin(plugin, out)) is not None:
            return status
        self._fill(out, json.dumps(self.settings[plugin]).encode())
        return _abi.OK

    def _secret(self, plugin, name, name_len, out):
        self.calls.append(("secret", plugin))
        if (status := self._check_plugin(plugin, out)) is not None:
            return status
        wanted = _read(name, name_len).decode()
        value = self.secrets.get(wanted)
        if value is None:
            return self._fail(out, _abi.DENIED, secret_denied_message(wanted, PLUGINS[plugin]))
        self._fill(out, value.encode())
        return _abi.OK

    def _kv_check(self, plugin: int, key: bytes, out: Any) -> int | None:
        if (status := self._check_plugin(plugin, out)) is not None:
            return status
        if plugin == 1:
            return self._fail(out, _abi.DENIED, denied_message("kv", PLUGINS[plugin]))
        if key == b"boom":
            return self._fail(out, _abi.ERROR, "kv store failed: disk on fire")
        return None

    def _kv_get(self, plugin, key, key_len, out):
        self.calls.append(("kv_get", plugin))
        raw = _read(key, key_len)
        if (status := self._kv_check(plugin, raw, out)) is not None:
            return status
        value = self.kv[plugin].get(raw)
        if value is None:
            return _abi.NOT_FOUND
        self._fill(out, value)
        return _abi.OK

    def _kv_set(self, plugin, key, key_len, value, value_len, out):
        self.calls.append(("kv_set", plugin))
        raw = _read(key, key_len)
        if (status := self._kv_check(plugin, raw, out)) is not None:
            return status
        self.kv[plugin][raw] = _read(value, value_len)
        return _abi.OK

    def _kv_delete(self, plugin, key, key_len, out):
        self.calls.append(("kv_delete", plugin))
        raw = _read(key, key_len)
        if (status := self._kv_check(plugin, raw, out)) is not None:
            return status
        self.kv[plugin].pop(raw, None)
        return _abi.OK

    def _call(self, plugin, name, name_len, data, data_len, out):
        self.calls.append(("call", plugin))
        if (status := self._check_plugin(plugin, out)) is not None:
            return status
        function = _read(name, name_len).decode()
        payload = _read(data, data_len)
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
