"""The command line: help and version, `routes`, `check`, config handling, startup failures."""

import json
import os
import platform
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    EXAMPLE_CONFIG,
    EXAMPLE_DIR,
    REPO_ROOT,
    CliResult,
    Server,
    ServerFactory,
    base_env,
    make_config,
)

Pyhost = Callable[..., CliResult]

VERSION = tomllib.loads((REPO_ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]

GOOD_APP = {
    "app.py": """
        from pyhost import Query, Router

        router = Router()


        @router.get("/", query={"n": Query(int, default=1)})
        async def index(request):
            return {"n": request.query["n"]}
    """,
}


# --- help, version, usage errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ["serve", "routes", "check"]),
        (["serve"], ["--config", "--listen"]),
        (["routes"], ["--config"]),
        (["check"], ["--config"]),
    ],
)
def test_help(pyhost: Pyhost, args: list[str], expected: list[str]) -> None:
    result = pyhost(*args, "--help")
    assert result.returncode == 0, result.describe()
    for word in expected:
        assert word in result.stdout, result.describe()


def test_version(pyhost: Pyhost) -> None:
    result = pyhost("--version")
    assert result.returncode == 0, result.describe()
    assert VERSION in result.stdout


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["serve", "--bogus"], ["check", "--config"], ["routes", "extra-arg"]],
)
def test_usage_errors_exit_2(pyhost: Pyhost, args: list[str]) -> None:
    result = pyhost(*args)
    assert result.returncode == 2, result.describe()
    assert result.stderr.strip()


# --- routes -------------------------------------------------------------------------------


def example_route_specs() -> list[dict[str, Any]]:
    """The example's routes as the SDK describes them, read in a separate interpreter."""
    code = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import hello\n"
        "print(json.dumps([route.spec() for route in hello.router.routes]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE_DIR)],
        capture_output=True,
        text=True,
        check=True,
        env=base_env(),
    )
    specs: list[dict[str, Any]] = json.loads(done.stdout)
    return specs


def route_lines(lines: list[str], path: str, name: str) -> list[str]:
    """The lines of `pyhost routes` for one route (one line, or one per method)."""
    matches = [line for line in lines if path in line.split() and name in line.split()]
    assert matches, f"no line for {path} {name}"
    return matches


NO_BODY = re.compile(r"body:\s*-\s*$")


def test_routes_lists_every_route_of_the_example(pyhost: Pyhost) -> None:
    result = pyhost("routes", "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.describe()
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    specs = example_route_specs()
    listed = set()
    for spec in specs:
        found = route_lines(lines, spec["path"], spec["name"])
        listed.update(found)
        for method in spec["methods"]:
            assert any(re.search(rf"\b{method}\b", line) for line in found), found
        for line in found:
            if spec["body_schema"] is None:
                assert NO_BODY.search(line), line
            else:
                assert "body:" in line, line
                assert not NO_BODY.search(line), line
    # Nothing but the routes (and at most a heading).
    assert len(set(lines) - listed) <= 1, set(lines) - listed


def test_routes_shows_query_parameters(pyhost: Pyhost) -> None:
    result = pyhost("routes", "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    (list_items,) = route_lines(lines, "/api/items", "hello.items.list_items")
    assert "query:" in list_items
    assert "limit:int=10" in list_items
    assert "offset:int=0" in list_items
    (search,) = route_lines(lines, "/api/search", "hello.items.search")
    assert "code:str (required)" in search
    assert "in_stock:bool=" in search


def test_routes_uses_pyhost_toml_in_the_working_directory(pyhost: Pyhost) -> None:
    result = pyhost("routes", cwd=EXAMPLE_DIR)
    assert result.returncode == 0, result.describe()
    assert "hello.index" in result.stdout


# --- check --------------------------------------------------------------------------------


def test_check_on_the_example(pyhost: Pyhost) -> None:
    result = pyhost("check", "--config", str(EXAMPLE_CONFIG))
    assert result.returncode == 0, result.describe()
    assert platform.python_version() in result.stdout
    assert sys.prefix in result.stdout  # the venv, from VIRTUAL_ENV
    specs = example_route_specs()
    # Routes as declared, or as (method, path) pairs: the contract does not say which.
    counts = {len(specs), sum(len(spec["methods"]) for spec in specs)}
    assert any(
        "route" in line.lower() and any(re.search(rf"\b{n}\b", line) for n in counts)
        for line in result.stdout.splitlines()
    ), f"no line gives the route count ({counts}):\n{result.stdout}"


def test_check_uses_pyhost_toml_in_the_working_directory(pyhost: Pyhost) -> None:
    assert pyhost("check", cwd=EXAMPLE_DIR).returncode == 0


def test_missing_default_config(pyhost: Pyhost, tmp_path: Path) -> None:
    result = pyhost("check", cwd=tmp_path)
    assert result.returncode == 1, result.describe()
    assert "pyhost.toml" in result.output


def test_missing_config_file(pyhost: Pyhost, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pyhost.toml"
    for command in ("check", "routes", "serve"):
        result = pyhost(command, "--config", str(missing))
        assert result.returncode == 1, result.describe()
        assert str(missing) in result.output, result.describe()


def relative_venv(config_dir: Path) -> str:
    return os.path.relpath(sys.prefix, config_dir)


def test_every_documented_key(server_factory: ServerFactory) -> None:
    config_path = server_factory.write_app(GOOD_APP)
    config_path.write_text(
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        'body_limit = "2 MiB"\n'
        "debug = false\n"
        "shutdown_grace = 2.5\n"
        "sync_threads = 4\n"
        'event_loop = "asyncio"\n'
        "\n[app]\n"
        'module = "app"\n'
        'router = "router"\n'
        'paths = ["."]\n'
        f'venv = "{relative_venv(config_path.parent)}"\n'
    )
    result = server_factory.run(
        "check", "--config", str(config_path), env=base_env(VIRTUAL_ENV=None)
    )
    assert result.returncode == 0, result.describe()


@pytest.mark.parametrize("body_limit", ["2048", '"512 KiB"', '"1MB"', '"10 MiB"'])
def test_body_limit_forms(server_factory: ServerFactory, body_limit: str) -> None:
    config_path = server_factory.write_app(
        GOOD_APP, make_config(server=f"body_limit = {body_limit}")
    )
    result = server_factory.run("check", "--config", str(config_path))
    assert result.returncode == 0, result.describe()


def test_explicit_venv_without_virtual_env(server_factory: ServerFactory) -> None:
    config_path = server_factory.write_app(GOOD_APP)
    config_path.write_text(make_config(app=f'venv = "{relative_venv(config_path.parent)}"'))
    env = base_env(VIRTUAL_ENV=None)
    result = server_factory.run("check", "--config", str(config_path), env=env)
    # The handler imports `pyhost`, which only the venv provides.
    assert result.returncode == 0, result.describe()


# --- serve --------------------------------------------------------------------------------


def test_example_server_listens_on_the_port_from_the_command_line(example_server: Server) -> None:
    # The example config says 127.0.0.1:8000; --listen 127.0.0.1:0 picked a free port instead.
    assert example_server.host == "127.0.0.1"
    assert example_server.port not in (0, 8000)


def test_serve_prints_exactly_one_line(server_factory: ServerFactory) -> None:
    config = make_config(server='listen = "127.0.0.1:0"')
    with server_factory.serve(GOOD_APP, config, listen=None) as server:
        assert server.port != 0
        with server.client() as http:
            assert http.get("/", params={"n": 3}).json() == {"n": 3}
        assert server.stdout_text() == f"listening on {server.url}\n"


def test_app_paths_and_router_attribute(server_factory: ServerFactory) -> None:
    files = {
        "src/app/__init__.py": """
            from pyhost import Router

            import helper
            import shadow

            api = Router()


            @api.get("/")
            async def index(request):
                return {"shadow": shadow.NAME, "helper": helper.NAME}
        """,
        "src/shadow.py": "NAME = 'src'\n",
        "lib/shadow.py": "NAME = 'lib'\n",
        "lib/helper.py": "NAME = 'lib'\n",
    }
    config = make_config(app='router = "api"\npaths = ["src", "lib"]')
    with server_factory.serve(files, config) as server, server.client() as http:
        # Both directories are importable, and the first one listed wins.
        assert http.get("/").json() == {"shadow": "src", "helper": "lib"}


# --- startup failures ---------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    id: str
    config: str
    expect: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=lambda: dict(GOOD_APP))


def app_with(source: str) -> dict[str, str]:
    return {"app.py": source}


BROKEN = [
    # --- the config file
    Broken("toml-syntax", "[server\nlisten = ", ()),
    Broken("unknown-server-key", make_config(server='listn = "127.0.0.1:0"'), ("listn",)),
    Broken("unknown-app-key", make_config(app='modul = "x"'), ("modul",)),
    Broken("unknown-table", make_config() + "\n[extra]\nx = 1\n", ("extra",)),
    Broken("debug-type", make_config(server='debug = "yes"'), ("server.debug",)),
    Broken("listen-type", make_config(server="listen = 8000"), ("server.listen",)),
    Broken("threads-type", make_config(server='sync_threads = "many"'), ("server.sync_threads",)),
    Broken("grace-type", make_config(server='shutdown_grace = "soon"'), ("server.shutdown_grace",)),
    Broken("paths-type", make_config(app='paths = "."'), ("app.paths",)),
    Broken("listen-value", make_config(server='listen = "not an address"'), ("server.listen",)),
    Broken("body-limit-value", make_config(server='body_limit = "lots"'), ("server.body_limit",)),
    Broken("event-loop-value", make_config(server='event_loop = "trio"'), ("server.event_loop",)),
    Broken("sched-batch-type", make_config(server='sched_batch = "yes"'), ("server.sched_batch",)),
    Broken("module-missing", '[app]\nrouter = "router"\n', ("app.module",)),
    Broken(
        "paths-missing-dir",
        make_config(app='paths = ["missing_dir"]'),
        ("app.paths", "missing_dir"),
    ),
    Broken("venv-missing-dir", make_config(app='venv = "no_such_venv"'), ("app.venv",)),
    Broken(
        "venv-not-a-venv",
        make_config(app='venv = "not_a_venv"'),
        ("app.venv",),
        {**GOOD_APP, "not_a_venv/README.txt": "no pyvenv.cfg here\n"},
    ),
    # --- the handler package
    Broken("no-such-module", make_config(module="no_such_module"), ("no_such_module",)),
    Broken(
        "import-error",
        make_config(),
        ("ZeroDivisionError", "Traceback", "app.py"),
        app_with("from pyhost import Router\nrouter = Router()\nratio = 1 / 0\n"),
    ),
    Broken(
        "router-attribute-missing",
        make_config(app='router = "not_there"'),
        ("not_there", "key `app.router`"),
    ),
    Broken(
        "router-attribute-not-a-router",
        make_config(app='router = "not_a_router"'),
        ("not_a_router", "key `app.router`", "is a int, not a pyhost.Router"),
        app_with("not_a_router = 42\n"),
    ),
    Broken(
        "route-declared-twice",
        make_config(),
        ("app.handler_alpha", "app.handler_beta", "/dup"),
        app_with(
            "from pyhost import Router\n"
            "router = Router()\n\n"
            "@router.get('/dup')\n"
            "async def handler_alpha(request):\n"
            "    return 'a'\n\n"
            "@router.get('/dup')\n"
            "async def handler_beta(request):\n"
            "    return 'b'\n"
        ),
    ),
    Broken(
        "route-overlapping-methods",
        make_config(),
        ("app.handler_gamma", "app.handler_delta", "/both"),
        app_with(
            "from pyhost import Router\n"
            "router = Router()\n\n"
            "@router.route('/both', methods=['GET', 'POST'])\n"
            "async def handler_gamma(request):\n"
            "    return 'a'\n\n"
            "@router.post('/both')\n"
            "def handler_delta(request):\n"
            "    return 'b'\n"
        ),
    ),
    # --- query patterns: checked with Rust's `regex` crate, which matches the values
    Broken(
        "query-pattern-rust-refuses",
        make_config(),
        (
            "GET /search (handler app.search)",
            "query parameter `code`",
            "Rust's `regex` crate",
            "repetition quantifier expects a valid decimal",
        ),
        app_with(
            "from pyhost import Query, Router\n"
            "router = Router()\n\n"
            # Python's `re` reads `{,3}` as `{0,3}`; the SDK leaves the verdict to the host.
            "@router.get('/search', query={'code': Query(str, pattern='a{,3}')})\n"
            "async def search(request):\n"
            "    return 'x'\n"
        ),
    ),
    Broken(
        "query-pattern-lookahead-past-the-sdk",
        make_config(),
        ("GET, POST /lookahead (handler app.lookahead)", "query parameter `q`", "look-around"),
        app_with(
            "from pyhost import Query, Router, params\n"
            # As if the SDK let it through: the host must refuse it by itself.
            "params.Query._check_pattern = lambda self: None\n"
            "router = Router()\n\n"
            "@router.route('/lookahead', methods=['GET', 'POST'],\n"
            "              query={'q': Query(str, pattern='^(?=a)')})\n"
            "async def lookahead(request):\n"
            "    return 'x'\n"
        ),
    ),
    Broken(
        "query-pattern-lookahead",
        make_config(),
        ("ValueError", "app.py", "look-around ('(?=' at position 1) is not supported"),
        app_with(
            "from pyhost import Query, Router\n"
            "router = Router()\n\n"
            "@router.get('/search', query={'code': Query(str, pattern='^(?=a)')})\n"
            "async def search(request):\n"
            "    return 'x'\n"
        ),
    ),
    *(
        Broken(
            f"bad-template-{index}",
            make_config(),
            (template,),
            app_with(
                "from pyhost import Router\n"
                "router = Router()\n\n"
                f"@router.get({template!r})\n"
                "async def handler(request):\n"
                "    return 'x'\n"
            ),
        )
        for index, template in enumerate(
            ["/a/{x:bogus}", "/a/{rest:path}/b", "/a/b{x}", "no-leading-slash"]
        )
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=[case.id for case in BROKEN])
@pytest.mark.parametrize("command", ["check", "serve"])
def test_startup_failure(server_factory: ServerFactory, case: Broken, command: str) -> None:
    config_path = server_factory.write_app(case.files, case.config)
    args = ["--config", str(config_path)]
    if command == "serve":
        args += ["--listen", "127.0.0.1:0"]
    result = server_factory.run(command, *args, timeout=20)
    assert result.returncode == 1, result.describe()
    assert "listening on" not in result.stdout, result.describe()
    # `serve` must explain itself on stderr; `check` may report its problems on either stream.
    text = result.stderr if command == "serve" else result.output
    assert str(config_path) in text, result.describe()
    for needle in case.expect:
        assert needle in text, f"{needle!r} missing\n{result.describe()}"
    assert "panicked" not in result.output, result.describe()
