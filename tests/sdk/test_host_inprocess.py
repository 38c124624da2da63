"""`pyhost.host` outside the host: the in-process implementation set up by `pyhost.testing`."""

import asyncio
import logging

import pytest

import pyhost
from pyhost import CapabilityError, HostError, host, testing
from pyhost._context import Placeholder, current
from pyhost.host import InProcessHost, Status
from tests.sdk.fake_host import denied_message, secret_denied_message


def denied(capability: str) -> str:
    """The message the host gives (see tests/sdk/fake_host.py)."""
    return denied_message(capability, "app")


def test_public_names():
    for name in ("host", "HostError", "CapabilityError", "host_logging_handler"):
        assert name in pyhost.__all__
        assert hasattr(pyhost, name)
    assert issubclass(CapabilityError, HostError)
    assert issubclass(CapabilityError, PermissionError)


def test_host_errors_carry_status_and_message():
    error = CapabilityError(Status.DENIED, "no")
    assert (error.status, error.message, str(error)) == (2, "no", "no")
    assert error.errno is None  # not read as (errno, strerror)
    assert repr(error) == "CapabilityError(2, 'no')"
    assert HostError(42, "odd").status == 42


def test_configure_returns_the_installed_host():
    installed = testing.configure()
    assert isinstance(installed, InProcessHost)
    assert host.implementation is installed


# --- settings


def test_settings_are_copies():
    testing.configure(settings={"name": "demo", "limits": {"rate": [1, 2]}})
    settings = host.settings
    assert settings == {"name": "demo", "limits": {"rate": [1, 2]}}
    settings["limits"]["rate"].append(3)
    settings["name"] = "changed"
    assert host.settings == {"name": "demo", "limits": {"rate": [1, 2]}}


def test_settings_go_through_json():
    testing.configure(settings={"pair": (1, 2)})
    assert host.settings == {"pair": [1, 2]}
    with pytest.raises(TypeError):
        testing.configure(settings={"bad": object()})


def test_settings_default_to_empty_and_need_no_capability():
    testing.configure(capabilities=[])
    assert host.settings == {}


# --- secrets


def test_secrets():
    testing.configure(secrets={"TOKEN": "s3cret"})
    assert host.secret("TOKEN") == "s3cret"
    with pytest.raises(CapabilityError) as caught:
        host.secret("OTHER")
    assert caught.value.status == Status.DENIED
    assert str(caught.value) == secret_denied_message("OTHER", "app")


def test_secrets_default_to_the_environment(monkeypatch):
    monkeypatch.setenv("PYHOST_TEST_SECRET", "from-env")
    monkeypatch.delenv("PYHOST_TEST_UNSET", raising=False)
    testing.configure()
    assert host.secret("PYHOST_TEST_SECRET") == "from-env"
    with pytest.raises(CapabilityError, match="environment variable PYHOST_TEST_UNSET is not set"):
        host.secret("PYHOST_TEST_UNSET")


# --- kv


def test_kv():
    store = testing.configure(capabilities=["kv"]).store
    assert host.kv.get("k") is None
    host.kv.set("k", b"\x00\x01")
    host.kv.set("text", "héllo")
    host.kv.set("view", memoryview(b"mv"))
    assert host.kv.get("k") == b"\x00\x01"
    assert host.kv.get("text") == "héllo".encode()
    assert store == {"k": b"\x00\x01", "text": "héllo".encode(), "view": b"mv"}
    host.kv.delete("k")
    host.kv.delete("k")
    assert host.kv.get("k") is None


def test_kv_checks_types():
    testing.configure()
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        host.kv.get(b"k")
    with pytest.raises(TypeError, match="kv values must be bytes or str, got int"):
        host.kv.set("k", 1)


def test_kv_async():
    store = testing.configure(capabilities=["kv"]).store

    async def run():
        assert await host.kv.get_async("k") is None
        await host.kv.set_async("k", b"\x00\x01")
        await host.kv.set_async("text", "héllo")
        assert await host.kv.get_async("k") == b"\x00\x01"
        assert store == {"k": b"\x00\x01", "text": "héllo".encode()}
        await host.kv.delete_async("k")
        await host.kv.delete_async("k")
        assert await host.kv.get_async("k") is None

    asyncio.run(run())
    assert store == {"text": "héllo".encode()}


def test_kv_async_on_an_in_process_host_directly():
    direct = InProcessHost()
    asyncio.run(direct.kv.set_async("k", "v"))
    assert asyncio.run(direct.kv.get_async("k")) == b"v"
    asyncio.run(direct.kv.delete_async("k"))
    assert direct.store == {}


def test_kv_async_checks_the_capability_and_types():
    store = testing.configure(capabilities=[]).store
    cases = [
        lambda: host.kv.get_async("k"),
        lambda: host.kv.set_async("k", "v"),
        lambda: host.kv.delete_async("k"),
    ]
    for action in cases:
        with pytest.raises(CapabilityError) as caught:
            asyncio.run(action())
        assert str(caught.value) == denied("kv")
        assert caught.value.status == Status.DENIED
    assert store == {}
    direct = InProcessHost(capabilities=[])
    with pytest.raises(CapabilityError, match='capability "kv" is not granted'):
        asyncio.run(direct.kv.get_async("k"))
    testing.configure()
    with pytest.raises(TypeError, match="kv keys must be a str, got bytes"):
        asyncio.run(host.kv.get_async(b"k"))
    with pytest.raises(TypeError, match="kv values must be bytes or str, got int"):
        asyncio.run(host.kv.set_async("k", 1))


def test_every_configure_starts_with_an_empty_store():
    testing.configure().store["k"] = b"v"
    assert host.kv.get("k") == b"v"
    testing.configure()
    assert host.kv.get("k") is None


def test_references_to_host_follow_configure():
    kv = host.kv
    log = host.log
    testing.configure(capabilities=[])
    with pytest.raises(CapabilityError):
        kv.get("k")
    with pytest.raises(CapabilityError):
        asyncio.run(kv.get_async("k"))
    testing.configure()
    assert kv.get("k") is None
    assert asyncio.run(kv.get_async("k")) is None
    log("info", "still works")


# --- calls


def test_call_passes_json_through():
    seen = []

    def add(data):
        seen.append(data)
        return {"sum": data["a"] + data["b"], "tuple": (1, 2)}

    testing.configure(functions={"add": add, "none": lambda data: None})
    assert host.call("add", {"a": 1, "b": 2}) == {"sum": 3, "tuple": [1, 2]}
    assert host.call("none") is None
    assert seen == [{"a": 1, "b": 2}]
    with pytest.raises(TypeError):
        host.call("add", {"a": object()})


def test_call_failures():
    def broken(data):
        raise ValueError("bad input")

    def refusing(data):
        raise HostError(Status.INVALID, "refused by the fake")

    testing.configure(functions={"broken": broken, "refusing": refusing})
    with pytest.raises(HostError) as caught:
        host.call("broken")
    assert caught.value.status == Status.ERROR
    assert str(caught.value) == 'host function "broken" failed: ValueError: bad input'
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(HostError, match="refused by the fake") as caught:
        host.call("refusing")
    assert caught.value.status == Status.INVALID
    with pytest.raises(HostError, match='no host function named "nope" is registered') as caught:
        host.call("nope")
    assert caught.value.status == Status.NO_SUCH_FUNCTION


def test_call_async():
    async def fetch(data):
        await asyncio.sleep(0)
        return {"got": data}

    testing.configure(functions={"sync": lambda data: data * 2}, async_functions={"fetch": fetch})
    assert asyncio.run(host.call_async("fetch", [1, "x"])) == {"got": [1, "x"]}
    assert host.call("sync", 21) == 42


def test_sync_and_async_functions_are_separate_as_in_the_host():
    async def fetch(data):
        return data

    testing.configure(functions={"sync": lambda data: data}, async_functions={"fetch": fetch})
    with pytest.raises(HostError, match=r"\(it is async: use host\.call_async\)") as caught:
        host.call("fetch")
    assert caught.value.status == Status.NO_SUCH_FUNCTION
    with pytest.raises(HostError, match=r"\(it is not async: use host\.call\)") as caught:
        asyncio.run(host.call_async("sync"))
    assert caught.value.status == Status.NO_SUCH_FUNCTION


def test_call_async_failures():
    async def broken(data):
        raise RuntimeError("down")

    testing.configure(async_functions={"broken": broken}, capabilities=["call:broken"])
    with pytest.raises(HostError, match='host function "broken" failed: RuntimeError: down'):
        asyncio.run(host.call_async("broken"))
    with pytest.raises(CapabilityError, match='capability "call:other" is not granted'):
        asyncio.run(host.call_async("other"))


# --- capabilities


def test_capability_refusals_name_the_capability_and_the_config_key():
    testing.configure(
        secrets={"TOKEN": "t"},
        functions={"f": lambda data: data, "g": lambda data: data},
        capabilities=["call:f"],
    )
    cases = [
        (lambda: host.kv.get("k"), "kv"),
        (lambda: host.kv.set("k", "v"), "kv"),
        (lambda: host.kv.delete("k"), "kv"),
        (lambda: host.call("g"), "call:g"),
        (lambda: host.call("unknown"), "call:unknown"),
    ]
    for action, capability in cases:
        with pytest.raises(CapabilityError) as caught:
            action()
        assert str(caught.value) == denied(capability)
        assert caught.value.status == Status.DENIED
        assert isinstance(caught.value, PermissionError)
    assert host.call("f", 1) == 1
    assert host.secret("TOKEN") == "t"  # secrets are granted by name, not by a capability
    assert host.settings == {}
    host.log("info", "logging is always allowed")


def test_call_wildcard_capability():
    testing.configure(functions={"f": lambda data: "ok"}, capabilities=["call:*"])
    assert host.call("f") == "ok"
    with pytest.raises(HostError) as caught:
        host.call("missing")
    assert caught.value.status == Status.NO_SUCH_FUNCTION


def test_capability_names_are_checked():
    with pytest.raises(ValueError, match="unknown capability 'kvv'"):
        testing.configure(capabilities=["kvv"])
    with pytest.raises(ValueError, match="unknown capability 'call:'"):
        testing.configure(capabilities=["call:"])
    with pytest.raises(ValueError, match=r"'secrets'.*secrets are granted by name"):
        testing.configure(capabilities=["secrets"])
    with pytest.raises(TypeError, match="not the string 'kv'"):
        testing.configure(capabilities="kv")


def test_reset_grants_everything_again():
    testing.configure(capabilities=[])
    with pytest.raises(CapabilityError):
        host.kv.get("k")
    testing.reset()
    assert host.kv.get("k") is None


# --- log


def test_log_goes_to_the_pyhost_host_logger(caplog):
    testing.configure()
    caplog.set_level(logging.DEBUG, logger="pyhost.host")
    token = current.set(Placeholder(request_id="req-1"))
    try:
        host.log("info", "hello", user=7, odd={1})
        host.log(logging.DEBUG, "details")
        host.log("WARNING", "careful")
    finally:
        current.reset(token)
    records = [r for r in caplog.records if r.name == "pyhost.host"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (20, "hello"),
        (10, "details"),
        (30, "careful"),
    ]
    assert records[0].plugin == "app"
    assert records[0].request_id == "req-1"
    assert records[0].fields == {"user": 7, "odd": "{1}"}
    assert records[1].fields == {}


def test_log_levels_are_checked():
    testing.configure()
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        host.log("verbose", "x")
    with pytest.raises(TypeError):
        host.log(True, "x")
    with pytest.raises(TypeError):
        host.log(None, "x")
