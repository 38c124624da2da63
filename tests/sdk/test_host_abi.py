"""The cffi binding (`pyhost._abi`) against a fake `pyhost_host_v2` table, without the host."""

import asyncio
import dataclasses
import importlib.resources
import sys
import threading
import types

import pytest

from pyhost import CapabilityError, HostError, _abi, _context, host, testing
from pyhost._context import Placeholder, current
from pyhost.host import EmbeddedHost, InProcessHost, Status
from tests.sdk.fake_host import (
    NO_PLUGIN_MESSAGE,
    FakeHost,
    HostCallError,
    denied_message,
    fake_module,
    secret_denied_message,
)

# --- the header and the cdef


def test_header_ships_with_the_package():
    header = importlib.resources.files("pyhost") / "include" / "pyhost_host.h"
    assert header.is_file()
    text = header.read_text()
    assert "pyhost_host_v2" in text
    assert "pyhost_host_v1" not in text


def test_cdef_keeps_declarations_and_integer_defines_only():
    cdef, constants = _abi.cdef_from_header(_abi.header_text())
    assert "#include" not in cdef
    assert "#ifndef" not in cdef
    assert "#endif" not in cdef
    assert "/*" not in cdef
    assert "PYHOST_HOST_H" not in cdef
    assert "#define PYHOST_OK 0" in cdef
    assert constants == {
        "PYHOST_HOST_ABI_VERSION": 2,
        "PYHOST_OK": 0,
        "PYHOST_NOT_FOUND": 1,
        "PYHOST_DENIED": 2,
        "PYHOST_ERROR": 3,
        "PYHOST_INVALID": 4,
        "PYHOST_NO_SUCH_FUNCTION": 5,
    }
    assert _abi.ABI_VERSION == 2


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
    fields = [name for name, _ in _abi.ffi.typeof("pyhost_host_v2").fields]
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


def test_no_table_function_takes_the_calling_plugin():
    ffi = _abi.ffi
    fields = dict(ffi.typeof("pyhost_host_v2").fields)
    size_t, u8 = ffi.typeof("size_t"), ffi.typeof("const uint8_t *")
    out = ffi.typeof("pyhost_buffer *")
    expected = {
        "log": [ffi.typeof("int32_t"), u8, size_t, u8, size_t, u8, size_t, out],
        "settings": [out],
        "secret": [u8, size_t, out],
        "kv_get": [u8, size_t, out],
        "kv_set": [u8, size_t, u8, size_t, out],
        "kv_delete": [u8, size_t, out],
        "call": [u8, size_t, u8, size_t, out],
        "free_buffer": [out],
    }
    for name, args in expected.items():
        assert list(fields[name].type.args) == args, name


# --- binding a table


def test_bind_accepts_an_address_or_a_pointer(fake):
    for table in (fake.address, fake.table):
        binding = _abi.bind(table)
        binding.kv_set("k", b"v")
        assert binding.kv_get("k") == b"v"


@pytest.mark.parametrize("version", [1, 3])
def test_bind_refuses_another_abi_version(version):
    fake = FakeHost(abi_version=version)
    with pytest.raises(
        ImportError, match=rf"ABI version {version}, but this pyhost SDK speaks version 2"
    ):
        _abi.bind(fake.address)


def test_bind_refuses_a_smaller_table():
    fake = FakeHost(struct_size=16)
    with pytest.raises(ImportError, match=r"pyhost_host_v2 table is 16 bytes, smaller than the 72"):
        _abi.bind(fake.address)


def test_bind_accepts_a_larger_table_from_a_newer_host(fake):
    fake.table.struct_size = _abi.ffi.sizeof("pyhost_host_v2") + 16
    assert _abi.bind(fake.address).kv_get("nothing") is None


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
    assert binding.kv_get("missing") is None
    binding.kv_set("k", b"\x00binary\xff")
    binding.kv_set("ключ", b"")
    assert binding.kv_get("k") == b"\x00binary\xff"
    assert binding.kv_get("ключ") == b""
    assert fake.kv[0] == {b"k": b"\x00binary\xff", "ключ".encode(): b""}
    binding.kv_delete("k")
    assert binding.kv_get("k") is None
    binding.kv_delete("k")  # deleting a missing key is fine
    assert fake.filled == 2  # the two hits; misses and writes fill nothing
    assert {plugin for _, plugin in fake.calls} == {0}


def test_the_host_decides_which_plugin_is_calling(fake, binding):
    binding.kv_set("k", b"app's")
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"; add "kv" to plugins\.billing'):
        binding.kv_get("k")
    assert binding.settings() == b"{}"
    binding.log(20, "from billing", "", b"{}")
    fake.caller = 0
    assert binding.kv_get("k") == b"app's"
    assert fake.calls == [
        ("kv_set", 0),
        ("kv_get", 1),
        ("settings", 1),
        ("log", 1),
        ("kv_get", 0),
    ]
    assert fake.logs == [(1, 20, "from billing", "", {})]


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("settings", lambda b: b.settings()),
        ("secret", lambda b: b.secret("TOKEN")),
        ("kv_get", lambda b: b.kv_get("k")),
        ("kv_set", lambda b: b.kv_set("k", b"v")),
        ("kv_delete", lambda b: b.kv_delete("k")),
        ("call", lambda b: b.call("echo", b"1")),
    ],
)
def test_calls_from_no_plugin_are_denied(fake, binding, function, call):
    fake.caller = None
    with pytest.raises(CapabilityError) as caught:
        call(binding)
    assert caught.value.status == Status.DENIED
    assert str(caught.value) == NO_PLUGIN_MESSAGE
    assert fake.calls == [(function, None)]
    assert fake.kv == {0: {}, 1: {}}
    assert fake.filled == fake.freed == 1


def test_log_from_no_plugin_is_accepted(fake, binding):
    fake.caller = None
    binding.log(40, "from a loop callback", "", b'{"n":1}')
    assert fake.logs == [(None, 40, "from a loop callback", "", {"n": 1})]
    assert fake.calls == [("log", None)]


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.log(0, 20, "m", "", b"{}"),
        lambda b: b.settings(0),
        lambda b: b.secret(0, "TOKEN"),
        lambda b: b.kv_get(0, "k"),
        lambda b: b.kv_set(0, "k", b"v"),
        lambda b: b.kv_delete(0, "k"),
        lambda b: b.call(0, "echo", b"1"),
    ],
)
def test_passing_a_plugin_index_the_old_way_is_a_type_error(fake, binding, call):
    with pytest.raises(TypeError):
        call(binding)
    assert fake.calls == []  # nothing reached the host
    assert fake.filled == 0


def test_denied_raises_capability_error_with_the_host_message(fake, binding):
    fake.caller = 1
    with pytest.raises(CapabilityError) as caught:
        binding.kv_get("k")
    assert caught.value.status == Status.DENIED == _abi.DENIED
    assert str(caught.value) == denied_message("kv", "billing")
    assert isinstance(caught.value, PermissionError)
    assert isinstance(caught.value, HostError)
    fake.caller = 0
    with pytest.raises(CapabilityError) as caught:
        binding.secret("HOME")
    assert str(caught.value) == secret_denied_message("HOME", "app")
    assert binding.secret("TOKEN") == b"s3cret"
    assert fake.filled == fake.freed == 3


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda b: b.kv_get("boom"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.kv_set("boom", b"v"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.kv_delete("boom"), _abi.ERROR, "kv store failed: disk on fire"),
        (lambda b: b.call("echo", b"{not json"), _abi.INVALID, "data is not JSON"),
        (lambda b: b.call("missing", b"1"), _abi.NO_SUCH_FUNCTION, "no host function named"),
        (lambda b: b.call("fail", b"1"), _abi.ERROR, "host function 'fail' failed: nope"),
        (lambda b: b.call("silent", b"1"), _abi.ERROR, "host call failed"),
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
    assert binding.call("echo", b'{"a":[1,2]}') == b'{"a":[1,2]}'
    assert binding.call("empty", b"null") == b""
    assert fake.filled == fake.freed == 2


def test_log_passes_every_argument(fake, binding):
    binding.log(30, "héllo", "req-1", b'{"n":1}')
    binding.log(20, "bad \udc80 surrogate", "", b"{}")
    assert fake.logs == [
        (0, 30, "héllo", "req-1", {"n": 1}),
        (0, 20, "bad \\udc80 surrogate", "", {}),
    ]
    assert fake.filled == 0


def test_out_buffers_are_reused_and_reset(fake, binding):
    binding.kv_set("k", b"value")
    for _ in range(5):
        assert binding.kv_get("k") == b"value"
        assert binding.kv_get("nope") is None  # a reused buffer must not leak the last value
    with pytest.raises(HostError):
        binding.kv_get("boom")
    assert binding.kv_get("nope") is None
    assert fake.filled == fake.freed == 6


def test_reentrant_calls_do_not_share_buffers(fake, binding):
    binding.kv_set("inner", b'"from kv"')
    fake.nested_hook = lambda: binding.kv_get("inner").decode()
    assert binding.call("nested", b"[1]") == b'{"inner": "\\"from kv\\"", "outer": [1]}'


def test_calls_from_many_threads(fake, binding):
    errors = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                key = f"{n}-{i}"
                binding.kv_set(key, key.encode())
                assert binding.kv_get(key) == key.encode()
                assert binding.call("echo", str(i).encode()) == str(i).encode()
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
    binding.kv_set("k", b"v")
    # Rebind with a failing unpack: the buffer must still go back to the host.
    monkeypatch.setattr(_abi.ffi, "unpack", None, raising=False)
    broken = _abi.bind(fake.address)
    monkeypatch.undo()
    with pytest.raises(TypeError):
        broken.kv_get("k")
    fake.assert_all_freed()


# --- the context carries the request id only


def test_the_context_carries_only_the_request_id():
    assert [field.name for field in dataclasses.fields(Placeholder)] == ["request_id"]
    with pytest.raises(TypeError):
        Placeholder(plugin=1)
    assert not hasattr(_context, "caller")
    assert not hasattr(_context, "current_plugin")
    assert _context.request_id() == ""
    token = current.set(Placeholder(request_id="req-3"))
    try:
        assert _context.request_id() == "req-3"
    finally:
        current.reset(token)
    assert _context.request_id() == ""


# --- the embedded host over the binding


def test_embedded_host_kv_uses_the_calling_plugin(fake, embedded):
    embedded.kv.set("k", "text")
    embedded.kv.set("b", bytearray(b"\x01"))
    assert embedded.kv.get("k") == b"text"
    assert embedded.kv.get("b") == b"\x01"
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"; add "kv" to plugins\.billing'):
        embedded.kv.get("k")
    assert [plugin for _, plugin in fake.calls] == [0, 0, 0, 0, 1]
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        embedded.kv.get(b"k")
    with pytest.raises(TypeError, match="kv values must be bytes or str, got int"):
        embedded.kv.set("k", 1)
    assert len(fake.calls) == 5  # the type errors never reach the host


def test_the_context_cannot_make_a_call_act_as_another_plugin(fake, embedded):
    embedded.kv.set("k", "app's")
    # Whatever the running context holds, the host (here: fake.caller) decides.
    token = current.set(types.SimpleNamespace(plugin=1, request_id="req-2"))
    try:
        assert embedded.kv.get("k") == b"app's"
        embedded.log("info", "still app")
    finally:
        current.reset(token)
    assert fake.calls == [("kv_set", 0), ("kv_get", 0), ("log", 0)]
    assert fake.logs == [(0, 20, "still app", "req-2", {})]


def test_embedded_host_from_no_plugin(fake, embedded):
    fake.caller = None
    actions = [
        lambda: embedded.kv.get("k"),
        lambda: embedded.kv.set("k", "v"),
        lambda: embedded.kv.delete("k"),
        lambda: embedded.secret("TOKEN"),
        lambda: embedded.settings,
        lambda: embedded.call("echo", 1),
    ]
    for action in actions:
        with pytest.raises(CapabilityError) as caught:
            action()
        assert caught.value.status == Status.DENIED
        assert str(caught.value) == NO_PLUGIN_MESSAGE
    embedded.log("warning", "logging still works")
    assert fake.logs == [(None, 30, "logging still works", "", {})]
    assert fake.calls == [
        ("kv_get", None),
        ("kv_set", None),
        ("kv_delete", None),
        ("secret", None),
        ("settings", None),
        ("call", None),
        ("log", None),
    ]
    assert fake.kv == {0: {}, 1: {}}


def test_embedded_host_settings_come_from_the_host_on_every_access(fake, embedded):
    settings = embedded.settings
    assert settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    settings["nested"]["n"].append(3)
    assert embedded.settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    fake.settings[0] = {"greeting": "changed"}  # nothing is cached
    assert embedded.settings == {"greeting": "changed"}
    fake.caller = 1
    assert embedded.settings == {}
    assert [call for call in fake.calls if call[0] == "settings"] == [
        ("settings", 0),
        ("settings", 0),
        ("settings", 0),
        ("settings", 1),
    ]
    fake.settings[1] = [1, 2]
    with pytest.raises(HostError, match="settings are not a JSON object") as caught:
        _ = embedded.settings
    assert caught.value.status == Status.ERROR


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
    token = current.set(Placeholder(request_id="req-9"))
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
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'add "TOKEN" to plugins\.billing\.secrets'):
        embedded.secret("TOKEN")


def test_embedded_host_call_async_maps_host_call_errors(fake, binding):
    seen = []

    async def call_async(name: str, data: bytes) -> bytes:
        seen.append((name, data))
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
    assert str(denied) == denied_message("call:denied", "app")
    assert type(failed) is HostError
    assert failed.status == Status.ERROR
    assert seen == [("echo", b'{"x":1}'), ("denied", b"null"), ("fail", b"[1]")]
    assert fake.calls == []  # the table is not used


def test_embedded_host_without_call_async(fake, embedded):
    with pytest.raises(HostError, match="offers no async host functions"):
        asyncio.run(embedded.call_async("echo"))


# --- the awaitable kv forms


def kv_async_host(fake: FakeHost, forms=("get", "set", "delete")) -> EmbeddedHost:
    return EmbeddedHost.from_module(fake_module(fake, kv_async=forms))


def test_kv_async_uses_the_module_coroutines(fake):
    embedded = kv_async_host(fake)

    async def run():
        assert await embedded.kv.get_async("k") is None
        await embedded.kv.set_async("k", "text")
        await embedded.kv.set_async("b", bytearray(b"\x01"))
        assert await embedded.kv.get_async("k") == b"text"
        assert await embedded.kv.get_async("b") == b"\x01"
        await embedded.kv.delete_async("k")
        assert await embedded.kv.get_async("k") is None
        await embedded.kv.delete_async("k")

    asyncio.run(run())
    assert fake.kv[0] == {b"b": b"\x01"}
    assert fake.calls == [
        ("kv_get_async", 0),
        ("kv_set_async", 0),
        ("kv_set_async", 0),
        ("kv_get_async", 0),
        ("kv_get_async", 0),
        ("kv_delete_async", 0),
        ("kv_get_async", 0),
        ("kv_delete_async", 0),
    ]
    assert fake.filled == 0  # the table was never called
    # The sync forms still go through the table.
    assert embedded.kv.get("b") == b"\x01"
    assert fake.calls[-1] == ("kv_get", 0)


@pytest.mark.parametrize(
    "action",
    [
        lambda kv: kv.get_async("k"),
        lambda kv: kv.set_async("k", "v"),
        lambda kv: kv.delete_async("k"),
    ],
)
def test_kv_async_maps_a_refusal_to_capability_error(fake, action):
    embedded = kv_async_host(fake)
    fake.caller = 1
    with pytest.raises(CapabilityError) as caught:
        asyncio.run(action(embedded.kv))
    assert type(caught.value) is CapabilityError
    assert caught.value.status == Status.DENIED
    assert str(caught.value) == denied_message("kv", "billing")
    assert caught.value.__suppress_context__  # the HostCallError is not chained
    fake.caller = None
    with pytest.raises(CapabilityError) as caught:
        asyncio.run(action(embedded.kv))
    assert str(caught.value) == NO_PLUGIN_MESSAGE
    assert fake.kv == {0: {}, 1: {}}


@pytest.mark.parametrize(
    "action",
    [
        lambda kv: kv.get_async("boom"),
        lambda kv: kv.set_async("boom", b"v"),
        lambda kv: kv.delete_async("boom"),
    ],
)
def test_kv_async_maps_a_failure_to_host_error(fake, action):
    embedded = kv_async_host(fake)
    with pytest.raises(HostError) as caught:
        asyncio.run(action(embedded.kv))
    assert type(caught.value) is HostError
    assert caught.value.status == Status.ERROR
    assert str(caught.value) == "kv store failed: disk on fire"


def test_kv_async_checks_types_before_calling_the_host(fake):
    embedded = kv_async_host(fake)
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        asyncio.run(embedded.kv.get_async(b"k"))
    with pytest.raises(TypeError, match="kv keys must be a str, got int"):
        asyncio.run(embedded.kv.set_async(1, "v"))
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        asyncio.run(embedded.kv.delete_async(b"k"))
    with pytest.raises(TypeError, match="kv values must be bytes or str, got int"):
        asyncio.run(embedded.kv.set_async("k", 1))
    assert fake.calls == []


@pytest.mark.parametrize("forms", [(), ("get",), ("get", "set")])
def test_kv_async_falls_back_to_the_table_without_all_three_forms(fake, forms):
    embedded = kv_async_host(fake, forms)

    async def run():
        await embedded.kv.set_async("k", "v")
        assert await embedded.kv.get_async("k") == b"v"
        await embedded.kv.delete_async("k")
        assert await embedded.kv.get_async("k") is None

    asyncio.run(run())
    assert fake.calls == [("kv_set", 0), ("kv_get", 0), ("kv_delete", 0), ("kv_get", 0)]
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"; add "kv"'):
        asyncio.run(embedded.kv.get_async("k"))
    with pytest.raises(TypeError, match="kv keys must be a str"):
        asyncio.run(embedded.kv.get_async(b"k"))


def test_kv_async_over_a_plain_embedded_host_uses_the_table(fake, embedded):
    asyncio.run(embedded.kv.set_async("k", b"v"))
    assert asyncio.run(embedded.kv.get_async("k")) == b"v"
    with pytest.raises(HostError, match="disk on fire"):
        asyncio.run(embedded.kv.delete_async("boom"))
    assert fake.calls == [("kv_set", 0), ("kv_get", 0), ("kv_delete", 0)]


# --- the module's built-in functions


def test_builtins_replace_the_table_for_the_hot_calls(fake):
    embedded = EmbeddedHost.from_module(fake_module(fake, builtins=True))
    fake.kv[0][b"k"] = b"v"
    assert embedded.kv.get("k") == b"v"
    assert embedded.call("echo", {"a": 1}) == {"a": 1}
    token = current.set(Placeholder(request_id="req-4"))
    try:
        embedded.log("info", "hello", n=1)
    finally:
        current.reset(token)
    settings = embedded.settings
    assert settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    settings["nested"]["n"].append(3)
    assert embedded.settings == {"greeting": "hi", "nested": {"n": [1, 2]}}
    embedded.kv.set("k2", "w")  # not a built-in: through the table
    assert fake.calls == [
        ("builtin_kv_get", 0),
        ("builtin_call", 0),
        ("builtin_log", 0),
        ("builtin_settings", 0),
        ("builtin_settings", 0),
        ("kv_set", 0),
    ]
    assert fake.logs == [(0, 20, "hello", "req-4", {"n": 1})]


def test_builtins_map_host_call_errors(fake):
    embedded = EmbeddedHost.from_module(fake_module(fake, builtins=True))
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"; add "kv"') as caught:
        embedded.kv.get("k")
    assert caught.value.status == Status.DENIED
    fake.caller = None
    with pytest.raises(CapabilityError) as caught:
        _ = embedded.settings
    assert str(caught.value) == NO_PLUGIN_MESSAGE
    fake.caller = 0
    with pytest.raises(HostError, match="'fail' failed: nope") as caught:
        embedded.call("fail")
    assert type(caught.value) is HostError
    assert caught.value.status == Status.ERROR


def test_builtins_are_used_only_when_all_four_are_there(fake):
    module = fake_module(fake, builtins=True)
    del module.settings
    embedded = EmbeddedHost.from_module(module)
    assert embedded.kv.get("k") is None
    assert embedded.settings["greeting"] == "hi"
    assert embedded.call("echo", 1) == 1
    assert fake.calls == [("kv_get", 0), ("settings", 0), ("call", 0)]


# --- the module-level host picks the embedded host inside the host


def test_host_uses_the_embedded_host_when_pyhost_host_imports(fake, monkeypatch):
    monkeypatch.setitem(sys.modules, "_pyhost_host", fake_module(fake))
    testing.reset()

    host.kv.set("k", b"v")
    assert host.kv.get("k") == b"v"
    assert fake.kv[0] == {b"k": b"v"}
    assert isinstance(host.implementation, EmbeddedHost)
    assert host.call("echo", [1]) == [1]
    assert asyncio.run(host.call_async("echo", {"a": 1})) == {"a": 1}
    assert ("call_async", 0) in fake.calls
    with pytest.raises(CapabilityError):
        host.secret("HOME")
    assert host.secret("TOKEN") == "s3cret"
    assert host.settings["greeting"] == "hi"
    host.log("info", "hello", n=1)
    assert fake.logs == [(0, 20, "hello", "", {"n": 1})]
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"'):
        host.kv.get("k")
    assert host.settings == {}


def test_host_kv_async_forwards_to_the_embedded_host(fake, monkeypatch):
    monkeypatch.setitem(
        sys.modules, "_pyhost_host", fake_module(fake, kv_async=("get", "set", "delete"))
    )
    testing.reset()
    kv = host.kv  # a reference taken before the implementation is chosen

    async def run():
        await kv.set_async("k", "v")
        assert await kv.get_async("k") == b"v"
        await kv.delete_async("k")
        assert await kv.get_async("k") is None

    asyncio.run(run())
    assert isinstance(host.implementation, EmbeddedHost)
    assert fake.calls == [
        ("kv_set_async", 0),
        ("kv_get_async", 0),
        ("kv_delete_async", 0),
        ("kv_get_async", 0),
    ]
    fake.caller = 1
    with pytest.raises(CapabilityError, match=r'plugin "billing"'):
        asyncio.run(kv.get_async("k"))


def test_host_is_in_process_without_pyhost_host(monkeypatch):
    monkeypatch.setitem(sys.modules, "_pyhost_host", None)  # makes the import fail
    assert "not chosen yet" in repr(host)
    host.kv.set("k", "v")
    assert isinstance(host.implementation, InProcessHost)
    assert "InProcessHost" in repr(host)
