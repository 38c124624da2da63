"""Plugins and host services over real HTTP: prefixes, settings, secrets, capabilities, the
key-value store, host functions, logging, and the Rust service that embeds pyhost."""

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO_ROOT, ServerFactory, base_env, running_server

PLUGIN_APP = {
    "app/__init__.py": """
from pyhost import CapabilityError, HostError, Router, host

router = Router()


@router.get("/settings")
async def settings(request):
    return dict(host.settings)


@router.get("/secret/{name}")
async def secret(request):
    try:
        return {"value": host.secret(request.path_params["name"])}
    except CapabilityError as exc:
        return {"denied": str(exc)}


@router.post("/kv/{key}")
async def kv_set(request):
    host.kv.set(request.path_params["key"], request.body)
    return None


@router.get("/kv/{key}")
async def kv_get(request):
    value = host.kv.get(request.path_params["key"])
    return {"value": None if value is None else value.decode()}


@router.get("/call/{name}")
async def call(request):
    try:
        return {"result": host.call(request.path_params["name"], {"x": 1})}
    except CapabilityError as exc:
        return {"denied": str(exc)}
    except HostError as exc:
        return {"error": str(exc), "status": exc.status}


@router.get("/abi/{key}")
async def through_the_c_table(request):
    # The cffi binding of the C table itself, beside the built-in fast path.
    binding = host.implementation.binding
    binding.kv_set(request.path_params["key"], b"via-abi")
    value = binding.kv_get(request.path_params["key"])
    try:
        binding.call("missing", b"null")
    except HostError as exc:
        return {"value": value.decode(), "call_status": int(exc.status)}
    return {"value": value.decode()}


@router.get("/log")
async def log(request):
    import logging

    host.log("warning", "from host.log", order=17)
    logging.getLogger("app.audit").info("from logging")
    return {"request_id": request.request_id}
""",
    "billing/__init__.py": """
from pyhost import CapabilityError, Router, host

router = Router()


@router.get("/settings")
async def settings(request):
    return dict(host.settings)


@router.get("/kv/{key}")
async def kv_get(request):
    try:
        value = host.kv.get(request.path_params["key"])
    except CapabilityError as exc:
        return {"denied": str(exc)}
    return {"value": None if value is None else value.decode()}
""",
}

PLUGIN_CONFIG = """
[app]
module = "app"
settings = {{ greeting = "hi", limits = {{ max = 3 }} }}
secrets = ["PYHOST_TEST_TOKEN"]
capabilities = ["kv", "call:*"]

[plugins.billing]
module = "billing"
prefix = "/billing"
settings = {{ currency = "EUR" }}
{kv}
"""


def plugin_env() -> dict[str, str]:
    return base_env(PYHOST_TEST_TOKEN="s3cr3t-value")


def serve_plugins(server_factory: ServerFactory, kv: str = ""):
    config = PLUGIN_CONFIG.format(kv=kv)
    return server_factory.serve(PLUGIN_APP, config, env=plugin_env())


def test_two_plugins_under_two_prefixes_with_their_own_settings(
    server_factory: ServerFactory,
) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        assert http.get("/settings").json() == {"greeting": "hi", "limits": {"max": 3}}
        assert http.get("/billing/settings").json() == {"currency": "EUR"}
        assert http.get("/billing/log").status_code == 404


def test_routes_lists_the_owning_plugin(server_factory: ServerFactory) -> None:
    config_path = server_factory.write_app(PLUGIN_APP, PLUGIN_CONFIG.format(kv=""))
    result = server_factory.run("routes", "--config", str(config_path), env=plugin_env())
    assert result.returncode == 0, result.describe()
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    owners = {(row[0], row[1]): row[2] for row in rows}
    assert owners[("GET", "/settings")] == "app"
    assert owners[("GET", "/billing/settings")] == "billing"


def test_secrets_are_granted_by_name_and_never_logged(server_factory: ServerFactory) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        assert http.get("/secret/PYHOST_TEST_TOKEN").json() == {"value": "s3cr3t-value"}
        denied = http.get("/secret/HOME").json()["denied"]
        assert "HOME" in denied
        assert "app.secrets" in denied
        http.get("/log")
        server.wait_for_stderr("from logging")
        assert "s3cr3t-value" not in server.stderr_text()


def test_missing_secret_variable_is_a_startup_error(server_factory: ServerFactory) -> None:
    config_path = server_factory.write_app(PLUGIN_APP, PLUGIN_CONFIG.format(kv=""))
    env = base_env(PYHOST_TEST_TOKEN=None)
    result = server_factory.run("check", "--config", str(config_path), env=env)
    assert result.returncode == 1
    assert "app.secrets[0]" in result.output
    assert "PYHOST_TEST_TOKEN" in result.output


def test_kv_is_namespaced_and_capability_checked(server_factory: ServerFactory) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        assert http.get("/kv/colour").json() == {"value": None}
        assert http.post("/kv/colour", content=b"green").status_code == 204
        assert http.get("/kv/colour").json() == {"value": "green"}
        denied = http.get("/billing/kv/colour").json()["denied"]
        assert '"kv"' in denied
        assert "plugins.billing.capabilities" in denied


def test_kv_in_sqlite_survives_a_restart(server_factory: ServerFactory, tmp_path: Path) -> None:
    database = tmp_path / "kv.sqlite"
    kv = f'[kv]\npath = "{database.as_posix()}"'
    config_path = server_factory.write_app(PLUGIN_APP, PLUGIN_CONFIG.format(kv=kv))
    binary = server_factory.binary
    with running_server(binary, config_path, env=plugin_env()) as server, server.client() as http:
        assert http.post("/kv/kept", content=b"across restarts").status_code == 204
    assert database.exists()
    with running_server(binary, config_path, env=plugin_env()) as server, server.client() as http:
        assert http.get("/kv/kept").json() == {"value": "across restarts"}


def test_the_c_table_serves_plugins_through_cffi(server_factory: ServerFactory) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        assert http.get("/abi/through").json() == {"value": "via-abi", "call_status": 5}
        # Written through the table, read through the built-in fast path: one store.
        assert http.get("/kv/through").json() == {"value": "via-abi"}


def test_host_errors_reach_python_as_typed_exceptions(server_factory: ServerFactory) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        # The pyhost binary registers no host functions: granted (call:*) but unknown.
        body = http.get("/call/nothing_here").json()
        assert body["status"] == 5
        assert "nothing_here" in body["error"]


def test_logging_lands_in_the_host_log_with_plugin_and_request_id(
    server_factory: ServerFactory,
) -> None:
    with serve_plugins(server_factory) as server, server.client() as http:
        request_id = http.get("/log").json()["request_id"]
        text = server.wait_for_stderr("from host.log", "from logging")
    lines = [line for line in text.splitlines() if "from host.log" in line]
    assert lines and f"request_id={request_id}" in lines[0]
    assert "plugin=app" in lines[0]
    assert '"order":17' in lines[0]
    logged = [line for line in text.splitlines() if "from logging" in line]
    assert logged and f"request_id={request_id}" in logged[0]


def test_conflicting_routes_across_plugins_name_both_handlers(
    server_factory: ServerFactory,
) -> None:
    files = {
        "app/__init__.py": "from pyhost import Router\nrouter = Router()\n"
        "@router.get('/billing/x')\nasync def first(request):\n    return 1\n",
        "billing/__init__.py": "from pyhost import Router\nrouter = Router()\n"
        "@router.get('/x')\nasync def second(request):\n    return 2\n",
    }
    config = '[app]\nmodule = "app"\n[plugins.billing]\nmodule = "billing"\nprefix = "/billing"\n'
    config_path = server_factory.write_app(files, config)
    result = server_factory.run("check", "--config", str(config_path))
    assert result.returncode == 1
    assert "app.first" in result.output and "billing.second" in result.output


# --- the Rust service embedding pyhost (examples/embed) -----------------------------------

EMBED_BIN = REPO_ROOT / "target" / "debug" / "embed-example"
EMBED_CONFIG = REPO_ROOT / "examples" / "embed" / "pyhost.toml"


@pytest.fixture(scope="module")
def embed_server():
    if not EMBED_BIN.is_file():
        pytest.fail(f"{EMBED_BIN} is missing: build the workspace (`cargo build`)", pytrace=False)
    with running_server(EMBED_BIN, EMBED_CONFIG) as server:
        yield server


def test_embed_serves_rust_and_python_routes_side_by_side(embed_server) -> None:
    with embed_server.client() as http:
        assert http.get("/rust/health").text == "ok"
        greeting = http.get("/hello/ada").json()
    assert greeting == {
        "plugin": "greeter",
        "style": "friendly",
        "greeting": "Hello, ada!",
        "from": "rust",
    }


def test_embed_async_host_function_runs_on_tokio(embed_server) -> None:
    with embed_server.client() as http:
        assert http.get("/double/21", params={"ms": "20"}).json() == {"result": 42}


def test_embed_async_host_function_is_cancelled_with_its_handler(embed_server) -> None:
    with embed_server.client() as http:
        before = http.get("/rust/slow-double-stats").json()
        reply = http.get("/double/5", params={"ms": "3000", "timeout": "0.2"}).json()
        assert reply == {"timed_out": True}
        deadline = time.monotonic() + 5
        after = before
        while time.monotonic() < deadline:
            after = http.get("/rust/slow-double-stats").json()
            if after["cancelled"] > before["cancelled"]:
                break
            time.sleep(0.05)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["finished"] == before["finished"]


def test_embed_slow_sync_host_function_awaited_off_the_loop(embed_server) -> None:
    # While an awaited 1.5 s blocking host function runs, the loop answers other requests;
    # the same call made synchronously holds every request behind it.
    def hello_waited_for_the_lookup(path: str) -> bool:
        with embed_server.client(timeout=20.0) as slow_http, embed_server.client() as http:

            def stats() -> dict[str, int]:
                return http.get("/rust/slow-double-stats").json()

            before = stats()
            worker = threading.Thread(target=lambda: slow_http.get(path, params={"ms": "1500"}))
            worker.start()
            deadline = time.monotonic() + 10
            while stats()["lookups"] == before["lookups"]:
                assert time.monotonic() < deadline, "the slow call never started"
                time.sleep(0.01)
            assert http.get("/hello/ada").status_code == 200
            waited = stats()["lookups_done"] > before["lookups_done"]
            worker.join(20)
        return waited

    assert not hello_waited_for_the_lookup("/lookup/k")
    assert hello_waited_for_the_lookup("/lookup-blocking/k")


def test_embed_key_value_store_awaitable(embed_server) -> None:
    with embed_server.client() as http:
        first = http.post("/visits-async").json()["visits"]
        assert http.post("/visits-async").json()["visits"] == first + 1


def test_embed_key_value_store(embed_server) -> None:
    with embed_server.client() as http:
        first = http.post("/visits").json()["visits"]
        assert http.post("/visits").json()["visits"] == first + 1


def test_embed_shuts_down_cleanly(server_factory: ServerFactory) -> None:
    with running_server(EMBED_BIN, EMBED_CONFIG) as server:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/rust/health").status_code == 200
        assert server.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection((server.host, server.port), timeout=1).close()
