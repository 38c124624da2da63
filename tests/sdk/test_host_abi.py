"""The cffi binding (`pyhost._abi`) against a fake `pyhost_host_v1` table, without the host."""

import asyncio
import importlib.resources
import sys
import threading
import types

import pytest

from pyhost import CapabilityError, HostError, _abi, host, testing
from pyhost._context import Placeholder, current
from pyhost.host import EmbeddedHost, InProcessHost, Status
from tests.sdk.fake_host import FakeHost, denied_message, secret_denied_message

# --- the header and the cdef


def test_header_ships_with_the_package():
    header = importlib.resources.files("pyhost") / "include" / "pyhost_host.h"
    assert header.is_file()
    assert "pyhost_host_v1" in header.read_text()


def test_cdef_keeps_declarations_and_integer_defines_only():
    cdef, constants = _abi.cdef_from_header(_abi.header_text())
    assert "#include" not in cdef
    assert "#ifndef" not in cdef
    assert "#endif" not in cdef
    assert "/*" not in cdef
    assert "PYHOST_HOST_H" not in cdef
    assert "#define PYHOST_OK 0" in cdef
    assert constants == {
        "PYHOST_HOST_ABI_VERSION": 1,
        "PYHOST_OK": 0,
        "PYHOST_NOT_FOUND": 1,
        "PYHOST_DENIED": 2,
        "PYHOST_ERROR": 3,
        "PYHOST_INVALID": 4,
        "PYHOST_NO_SUCH_FUNCTION": 5,
    }


def test_cdef_parser_handles_line_comments_and_hex():
    text = "#ifndef X\n#define X\n#define A 0x10 // sixteen\n#define B 2u\nint f(void); /* c */\n"
    cdef, constants = _abi.cdef_from_header(text)
    assert constants == {"A": 16, "B": 2}
    assert cdef == "#define A 0x10\n#define B 2u\nint f(void);\n"


def test_status_constants_match_the_header():
    assert [_abi.OK, _abi.NOT_FOUND, _abi.DENIED, _abi.ERROR, _abi.INVALID] == [0, 1, 2, 3, 4]
    assert _abi.NO_SUCH_FUNCTION == 5
    for status in Status:
        assert _abi.CONSTANTS[f"PYHOST_{status.name}"] == status


def test_table_layout():
    fields = [name for name, _ in _abi.ffi.typeof("pyhost_host_v1").fields]
    assert fields == [
        "abi_version",
        "struct_size",
        "log",
        "settings",
        "secret",
        "kv_get",
        "kv_set",
        "kv_delete",
        "call",
        "free_buffer",
    ]
    assert _abi.ffi.sizeof("pyhost_buffer") == 3 * _abi.ffi.sizeof("size_t")


# --- binding a table


def test_bind_accepts_an_address_or_a_pointer(fake):
    for table in (fake.address, fake.table):
        binding = _abi.bind(table)
        binding.kv_set(0, "k", b"v")
        assert binding.kv_get(0, "k") == b"v"


def test_bind_refuses_another_abi_version():
    fake = FakeHost(abi_version=2)
    with pytest.raises(ImportError, match=r"ABI version 2, but this pyhost SDK speaks version 1"):
        _abi.bind(fake.address)


def test_bind_refuses_a_smaller_table():
    fake = FakeHost(struct_size=16)
    with pytest.raises(ImportError, match=r"table is 16 bytes, smaller than the 72 bytes"):
        _abi.bind(fake.address)


def test_bind_accepts_a_larger_table_from_a_newer_host(fake):
    fake.table.struct_size = _abi.ffi.sizeof("pyhost_host_v1") + 16
    assert _abi.bind(fake.address).kv_get(0, "nothing") is None


def test_bind_refuses_null():
    with pytest.raises(ImportError, match="NULL"):
        _abi.bind(0)
    with pytest.raises(ImportError, match="NULL"):
        _abi.bind(_abi.ffi.NULL)
    with pytest.raises(TypeError):
        _abi.bind("0x1234")


def test_bind_refuses_null_entries(fake):
    fake.table.kv_get = _abi.ffi.NULL
    with pytest.raises(ImportError, match=r"NULL entries: \['kv_get'\]"):
        _abi.bind(fake.address)


# --- calls through the binding


def test_kv_round_trip(fake, binding):
    assert binding.kv_get(0, "missing") is None
    binding.kv_set(0, "k", b"\x00binary\xff")
    binding.kv_set(0, "ключ", b"")
    assert binding.kv_get(0, "k") == b"\x00binary\xff"
    assert binding.kv_get(0, "ключ") == b""
    assert fake.kv[0] == {b"k": b"\x00binary\xff", "ключ".encode(): b""}
    binding.kv_delete(0, "k")
    assert binding.kv_get(0, "k") is None
    binding.kv_delete(0, "k")  # deleting a missing key is fine
    assert fake.filled == 2  # the two hits; misses and writes fill nothing


def test_denied_raises_capability_error_with_the_host_message(fake, binding):
    with pytest.raises(CapabilityError) as caught:
        binding.kv_get(1, "k")
    assert caught.value.status == Status.DENIED == _abi.DENIED
    assert str(caught.value) == denied_message("kv", "billing")
    assert isinstance(caught.value, PermissionError)
    assert isinstance(caught.value, HostError)
    with pytest.raises(CapabilityError) as caught:
        binding.secret(0, "HOME")
    assert str(caught.value) == secret_denied_message("HOME", "app")
    assert binding.secret(0, "TOKEN") == b"s3cret"
    assert fake.filled == fake.freed == 3


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda b: b.kv_get(0, "boom"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.kv_set(0, "boom", b"v"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.kv_delete(0, "boom"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.kv_get(7, "k"), _abi.INVALID, "unknown plugin 7"),
        (lambda b: b.settings(7), _abi.INVALID, "unknown plugin 7"),
        (lambda b: b.log(7, 20, "m", "", b"{}"), _abi.INVALID, "unknown plugin 7"),
        (lambda b: b.call(0, "missing", b"1"), _abi.NO_SUCH_FUNCTION, "no host function named"),
        (lambda b: b.call(0, "fail", b"1"), _abi.ERROR, "host function 'fail' failed: nope"),
        (lambda b: b.call(0, "silent", b"1"), _abi.ERROR, "host call failed"),
    ],
)
def test_failures_raise_host_error_with_status_and_message(fake, binding, call, status, message):
    with pytest.raises(HostError) as caught:
        call(binding)
    assert type(caught.value) is HostError
    assert caught.value.status == status
    assert message in str(caught.value)
    fake.assert_all_freed()


def test_call_passes_json_bytes_and_returns_the_result(fake, binding):
    assert binding.call(0, "echo", b'{"a":[1,2]}') == b'{"a":[1,2]}'
    assert binding.call(0, "empty", b"null") == b""
    assert fake.filled == fake.freed == 2


def test_log_passes_every_argument(fake, binding):
    binding.log(0, 30, "héllo", "req-1", b'{"n":1}')
    binding.log(1, 20, "bad \udc80 surrogate", "", b"{}")
    assert fake.logs == [
        (0, 30, "héllo", "req-1", {"n": 1}),
        (1, 20, "bad \\udc80 surrogate", "", {}),
    ]
    assert fake.filled == 0


def test_out_buffers_are_reused_and_reset(fake, binding):
    binding.kv_set(0, "k", b"value")
    for _ in range(5):
        assert binding.kv_get(0, "k") == b"value"
        assert binding.kv_get(0, "nope") is None  # a reused buffer must not leak the last value
    with pytest.raises(HostError):
        binding.kv_get(0, "boom")
    assert binding.kv_get(0, "nope") is None
    assert fake.filled == fake.freed == 6


def test_reentrant_calls_do_not_share_buffers(fake, binding):
    binding.kv_set(0, "inner", b'"from kv"')
    fake.nested_hook = lambda: binding.kv_get(0, "inner").decode()
    assert binding.call(0, "nested", b"[1]") == b'{"inner": "\\"from kv\\"", "outer": [1]}'


def test_calls_from_many_threads(fake, binding):
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                key = f"{n}-{i}"
                binding.kv_set(0, key, key.encode())
                assert binding.kv_get(0, key) == key.encode()
                assert binding.call(0, "echo", str(i).encode()) == str(i).encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake.filled == fake.freed == 4 * 200 * 2


def test_a_buffer_is_freed_even_when_copying_it_fails(fake, binding, monkeypatch):
    binding.kv_set(0, "k", b"v")
    # Rebind with a failing unpack: the buffer must still go back to the host.
    monkeypatch.setattr(_abi.ffi, "unpack", None, raising=False)
    broken = _abi.bind(fake.address)
    monkeypatch.undo()
    with pytest.raises(TypeError):
        broken.kv_get(0, "k")
    fake.assert_all_freed()


# --- the embedded host over the binding


def test_embedded_host_kv_uses_the_calling_plugin(fake, embedded):
    embedded.kv.set("k", "text")
    embedded.kv.set("b", bytearray(b"\x01"))
    assert embedded.kv.get("k") == b"text"
    assert embedded.kv.get("b") == b"\x01"
    token = current.set(Placeholder(plugin=1))
    try:
        with pytest.raises(
            CapabilityError, match=r'plugin "billing"; add "kv" to plugins\.billing'
        ):
            embedded.kv.get("k")
    finally:
        current.reset(token)
    assert [plugin for _, plugin in fake.calls] == [0, 0, 0, 0, 1]
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        embedded.kv.get(b"k")
    with pytest.raises(TypeError, match="kv values must be bytes or str, got int"):
        embedded.kv.set("k", 1)


def test_embedded_host_settings_are_decoded_once_and_copied(fake, embedded):
    settings = embedded.settings
    assert settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    settings["nested"]["n"].append(3)
    assert embedded.settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    token = current.set(Placeholder(plugin=1))
    try:
        assert embedded.settings == {}
    finally:
        current.reset(token)
    assert [call for call in fake.calls if call[0] == "settings"] == [
        ("settings", 0),
        ("settings", 1),
    ]


def test_embedded_host_call_encodes_and_decodes_json(fake, embedded):
    assert embedded.call("echo", {"a": [1, "é"], "b": None}) == {"a": [1, "é"], "b": None}
    assert embedded.call("echo") is None
    assert embedded.call("empty", 1) is None
    with pytest.raises(HostError) as caught:
        embedded.call("missing")
    assert caught.value.status == Status.NO_SUCH_FUNCTION
    with pytest.raises(CapabilityError, match="call:denied"):
        embedded.call("denied")
    with pytest.raises(TypeError):
        embedded.call("echo", object())


def test_embedded_host_log_sends_level_request_id_and_fields(fake, embedded):
    embedded.log("warning", "plain")
    token = current.set(Placeholder(plugin=0, request_id="req-9"))
    try:
        embedded.log(10, "with fields", user=42, tags=["a"], odd={1, 2})
    finally:
        current.reset(token)
    assert fake.logs == [
        (0, 30, "plain", "", {}),
        (0, 10, "with fields", "req-9", {"user": 42, "tags": ["a"], "odd": "{1, 2}"}),
    ]
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        embedded.log("loud", "x")


def test_embedded_host_secret(fake, embedded):
    assert embedded.secret("TOKEN") == "s3cret"
    with pytest.raises(CapabilityError, match=r'add "HOME" to app\.secrets in the config file'):
        embedded.secret("HOME")


class HostCallError(Exception):
    """Stands in for `_pyhost_host.HostCallError(status, message)`."""


def test_embedded_host_call_async_maps_host_call_errors(fake, binding):
    seen = []

    async def call_async(plugin: int, name: str, data: bytes) -> bytes:
        seen.append((plugin, name, data))
        if name == "denied":
            raise HostCallError(_abi.DENIED, denied_message("call:denied", "app"))
        if name == "fail":
            raise HostCallError(_abi.ERROR, "it broke")
        return data

    embedded = EmbeddedHost(binding, call_async=call_async, call_error=HostCallError)

    async def run():
        assert await embedded.call_async("echo", {"x": 1}) == {"x": 1}
        with pytest.raises(CapabilityError, match="call:denied") as denied:
            await embedded.call_async("denied")
        with pytest.raises(HostError, match="it broke") as failed:
            await embedded.call_async("fail", [1])
        return denied.value, failed.value

    denied, failed = asyncio.run(run())
    assert denied.status == Status.DENIED
    assert failed.status == Status.ERROR
    assert seen == [(0, "echo", b'{"x":1}'), (0, "denied", b"null"), (0, "fail", b"[1]")]


# --- the module-level host picks the embedded host inside the host


def test_host_uses_the_embedded_host_when_pyhost_host_imports(fake, monkeypatch):
    async def call_async(plugin: int, name: str, data: bytes) -> bytes:
        return data

    module = types.ModuleType("_pyhost_host")
    module.abi_table = lambda: fake.address
    module.plugins = lambda: ["app", "billing"]
    module.call_async = call_async
    module.HostCallError = HostCallError
    monkeypatch.setitem(sys.modules, "_pyhost_host", module)
    testing.reset()

    host.kv.set("k", b"v")
    assert host.kv.get("k") == b"v"
    assert fake.kv[0] == {b"k": b"v"}
    assert isinstance(host.implementation, EmbeddedHost)
    assert host.call("echo", [1]) == [1]
    assert asyncio.run(host.call_async("echo", {"a": 1})) == {"a": 1}
    with pytest.raises(CapabilityError):
        host.secret("HOME")
    assert host.secret("TOKEN") == "s3cret"
    assert host.settings["greeting"] == "hi"
    host.log("info", "hello", n=1)
    assert fake.logs == [(0, 20, "hello", "", {"n": 1})]


def test_host_is_in_process_without_pyhost_host(monkeypatch):
    monkeypatch.setitem(sys.modules, "_pyhost_host", None)  # makes the import fail
    assert "not chosen yet" in repr(host)
    host.kv.set("k", "v")
    assert isinstance(host.implementation, InProcessHost)
    assert "InProcessHost" in repr(host)
