"""Grants the host enforces: plugin `thief` tries every way to act as plugin `vault`.

`vault` holds a secret and the key-value store; `thief` has the store (its own namespace) and
no secret. Every attempt runs inside `thief`'s handlers over real HTTP, and each must fail to
read `vault`'s secret or touch `vault`'s data. The same routes from `vault`'s own code (its
handlers, the tasks and threads they start, its import) must keep working.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import Server, ServerFactory, base_env

SECRET = "vault-secret-value-7f3a"

APPS = {
    "vault/__init__.py": """
import asyncio
import concurrent.futures
import threading

from pyhost import CapabilityError, Router, host

router = Router()
POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1)
AT_IMPORT = host.settings["owner"]


def read_secret():
    try:
        return host.secret("VAULT_TOKEN")
    except CapabilityError:
        return "denied"


@router.get("/secret")
async def secret(request):
    return {"value": read_secret()}


@router.get("/secret-sync")
def secret_sync(request):
    return {"value": read_secret()}


@router.get("/import")
async def at_import(request):
    return {"owner": AT_IMPORT}


@router.post("/kv")
async def kv_set(request):
    host.kv.set("k", request.body)
    return None


@router.get("/kv")
async def kv_get(request):
    value = host.kv.get("k")
    return {"value": None if value is None else value.decode()}


@router.get("/spawned")
async def spawned(request):
    async def child():
        await asyncio.sleep(0)
        return read_secret()

    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("v", read_secret()))
    thread.start()
    thread.join()
    loop = asyncio.get_running_loop()
    async with asyncio.TaskGroup() as group:
        grouped = group.create_task(child())
    return {
        "task": await asyncio.create_task(child()),
        "gather": (await asyncio.gather(child()))[0],
        "task_group": grouped.result(),
        "to_thread": await asyncio.to_thread(read_secret),
        "executor": await loop.run_in_executor(None, read_secret),
        "own_pool": await asyncio.wrap_future(POOL.submit(read_secret)),
        "thread": box["v"],
    }


@router.get("/callback")
async def callback(request):
    # A loop callback runs outside any plugin's code: not even the plugin that scheduled it
    # is calling then.
    future = asyncio.get_running_loop().create_future()

    def later():
        try:
            future.set_result(host.secret("VAULT_TOKEN"))
        except CapabilityError as exc:
            future.set_result("denied: " + str(exc))

    asyncio.get_running_loop().call_soon(later)
    return {"value": await future}
""",
    "thief/__init__.py": """
import asyncio
import os
import threading
import types

import _pyhost_host
import vault
from pyhost import CapabilityError, HostError, Router, host
from pyhost import _context

router = Router()


def attempt(action):
    try:
        result = action()
    except (CapabilityError, HostError, TypeError) as exc:
        return "refused: " + type(exc).__name__
    if isinstance(result, bytes):
        result = result.decode(errors="replace")
    return result


@router.get("/attempts")
async def attempts(request):
    binding = host.implementation.binding
    results = {}
    results["secret"] = attempt(lambda: host.secret("VAULT_TOKEN"))
    results["vault_code"] = vault.read_secret()
    # The SDK's context variable names the request, not the caller.
    token = _context.current.set(types.SimpleNamespace(plugin=0, request_id="forged"))
    try:
        results["forged_context"] = attempt(lambda: host.secret("VAULT_TOKEN"))
    finally:
        _context.current.reset(token)
    # ABI version 1 took the caller's index first; now nothing does.
    results["abi_secret_index"] = attempt(lambda: binding.secret(0, "VAULT_TOKEN"))
    results["abi_secret"] = attempt(lambda: binding.secret("VAULT_TOKEN"))
    results["abi_kv_set"] = attempt(lambda: binding.kv_set("k", b"stolen-abi"))
    results["builtin_kv_get_index"] = attempt(lambda: _pyhost_host.kv_get(0, "k"))
    results["builtin_kv_get"] = attempt(lambda: _pyhost_host.kv_get("k"))
    results["kv_set"] = attempt(lambda: host.kv.set("k", "stolen-sdk"))
    results["settings"] = host.settings.get("owner")
    results["environ"] = os.environ.get("VAULT_TOKEN", "absent")
    with open("/proc/self/environ", "rb") as environ:
        results["proc_environ"] = "present" if b"vault-secret" in environ.read() else "absent"
    # Submitting to the vault's own pool runs as the submitter.
    results["vault_pool"] = await asyncio.wrap_future(vault.POOL.submit(vault.read_secret))
    # The host's wrappers cannot be made by plugin code.
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    results["forge_wrapper"] = attempt(lambda: type(thread.run)(lambda: None))
    return results
""",
}

CONFIG = """
[app]
module = "vault"
settings = { owner = "vault" }
secrets = ["VAULT_TOKEN"]
capabilities = ["kv"]

[plugins.thief]
module = "thief"
prefix = "/thief"
settings = { owner = "thief" }
capabilities = ["kv"]
"""


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(APPS, CONFIG, env=base_env(VAULT_TOKEN=SECRET)) as running:
        yield running


def test_no_route_lets_one_plugin_act_as_another(server: Server) -> None:
    with server.client() as http:
        assert http.post("/kv", content=b"vault-data").status_code == 204
        results = http.get("/thief/attempts").json()
        assert http.get("/kv").json() == {"value": "vault-data"}

    assert results["secret"] == "refused: CapabilityError"
    # Identity follows the code the host runs, not whose module defines it.
    assert results["vault_code"] == "denied"
    assert results["forged_context"] == "refused: CapabilityError"
    assert results["abi_secret_index"] == "refused: TypeError"
    assert results["abi_secret"] == "refused: CapabilityError"
    assert results["builtin_kv_get_index"] == "refused: TypeError"
    # The thief's store is its own namespace: what it writes never reaches the vault's key.
    assert results["abi_kv_set"] is None
    assert results["kv_set"] is None
    assert results["builtin_kv_get"] == "stolen-abi"
    assert results["settings"] == "thief"
    assert results["vault_pool"] == "denied"
    assert results["forge_wrapper"] == "refused: TypeError"


def test_granted_secrets_leave_the_process_environment(server: Server) -> None:
    with server.client() as http:
        results = http.get("/thief/attempts").json()
    assert results["environ"] == "absent"
    assert results["proc_environ"] == "absent"
    # ...and the plugin they are granted to still reads them through the host.
    with server.client() as http:
        assert http.get("/secret").json() == {"value": SECRET}


def test_work_a_plugin_starts_keeps_its_identity(server: Server) -> None:
    with server.client() as http:
        assert http.get("/secret-sync").json() == {"value": SECRET}
        assert http.get("/import").json() == {"owner": "vault"}
        spawned = http.get("/spawned").json()
    assert spawned == {
        "task": SECRET,
        "gather": SECRET,
        "task_group": SECRET,
        "to_thread": SECRET,
        "executor": SECRET,
        "own_pool": SECRET,
        "thread": SECRET,
    }


def test_a_loop_callback_acts_for_no_plugin(server: Server) -> None:
    with server.client() as http:
        value = http.get("/callback").json()["value"]
    assert value.startswith("denied: host services answer only the code the host runs")


def test_secret_values_never_reach_the_log(server: Server) -> None:
    with server.client() as http:
        assert http.get("/secret").status_code == 200
        http.get("/thief/attempts")
    assert SECRET not in server.stderr_text()
