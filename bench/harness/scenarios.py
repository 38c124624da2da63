"""The scenarios: one endpoint each, served alike by every server, and the wrk script for it."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# About 100 bytes of JSON, posted to /echo, parsed by the app and sent back.
ECHO_BODY = (
    b'{"id": 12345, "name": "pyhost-bench", "tags": ["alpha", "beta", "gamma"], '
    b'"active": true, "score": 98.5}'
)

HELLO = {"message": "hello"}

# The file of the download scenarios: made by the harness (`prepare.ensure_bench_file`) in the
# directory both pyhost's `[static]` mount and Granian's `--static-path-mount` serve.
BENCH_FILE_NAME = "big.bin"
BENCH_FILE_SIZE = 100 << 20
# The body of each WebSocket echo message (bench/wsload adds a 16-byte counter in front).
WS_MESSAGE_SIZE = 48


@dataclass(frozen=True)
class Scenario:
    """One endpoint under load and the answer every server must give to it."""

    name: str
    method: str
    path: str
    expected: Any
    description: str
    body: bytes | None = None
    connections: int | None = None  # None: the run's --connections
    smoke_connections: int = 4
    # Response headers the answer must carry (names in lower case), checked with the body.
    headers: tuple[tuple[str, str], ...] = ()
    # A download: the answer is the bench file's bytes (not JSON), this many of them.
    file_size: int = 0
    # "http" (loaded with wrk) or "websocket" (loaded with bench/wsload, messages not requests).
    protocol: str = "http"

    def wrk_setup(self) -> str:
        """Lua lines that make wrk send this scenario's request (empty for a plain GET)."""
        if self.body is None:
            return ""
        return "\n".join(
            [
                f'wrk.method = "{self.method}"',
                'wrk.headers["Content-Type"] = "application/json"',
                f"wrk.body = [==[{self.body.decode()}]==]",
                "",
            ]
        )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "GET", "/hello", HELLO, 'GET /hello -> {"message": "hello"}'),
    Scenario(
        "users",
        "GET",
        "/users/42",
        {"id": 42, "name": "user42"},
        "GET /users/{id}: int path parameter, small JSON object",
    ),
    Scenario(
        "echo",
        "POST",
        "/echo",
        json.loads(ECHO_BODY),
        f"POST /echo: {len(ECHO_BODY)}-byte JSON body parsed and sent back",
        body=ECHO_BODY,
    ),
    Scenario("sleep0", "GET", "/sleep0", HELLO, "GET /sleep0: awaits asyncio.sleep(0) first"),
    Scenario(
        "sleep50",
        "GET",
        "/sleep50",
        HELLO,
        "GET /sleep50: awaits asyncio.sleep(0.05), many connections",
        connections=1000,
        smoke_connections=32,
    ),
    Scenario(
        "mw",
        "GET",
        "/mw/hello",
        HELLO,
        "GET /mw/hello: as /hello, through one Python middleware that adds `x-mw: 1`",
        headers=(("x-mw", "1"),),
    ),
    Scenario(
        "file",
        "GET",
        "/file",
        None,
        f"GET /file: a {BENCH_FILE_SIZE >> 20} MiB file named by the handler (pyhost "
        "`FileResponse`, Granian RSGI `response_file`), few connections",
        connections=4,
        smoke_connections=2,
        file_size=BENCH_FILE_SIZE,
    ),
    Scenario(
        "static",
        "GET",
        f"/static/{BENCH_FILE_NAME}",
        None,
        f"GET /static/{BENCH_FILE_NAME}: the same file from a static directory mount (pyhost "
        "`[static]`, Granian `--static-path-mount`), no Python",
        connections=4,
        smoke_connections=2,
        file_size=BENCH_FILE_SIZE,
    ),
    Scenario(
        "ws",
        "GET",
        "/ws",
        None,
        f"WebSocket echo: {WS_MESSAGE_SIZE + 16}-byte text messages, one in flight per "
        "connection (figures per message, not per request)",
        protocol="websocket",
    ),
)

SCENARIO_NAMES: tuple[str, ...] = tuple(scenario.name for scenario in SCENARIOS)


def select_scenarios(names: list[str] | None) -> list[Scenario]:
    """The scenarios named (all when ``names`` is None), in that order; ValueError if unknown."""
    if names is None:
        return list(SCENARIOS)
    by_name = {scenario.name: scenario for scenario in SCENARIOS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[name] for name in names]


def write_wrk_scripts(
    scenarios: list[Scenario], report_lua: Path, out_dir: Path
) -> dict[str, Path]:
    """Write one wrk Lua script per HTTP scenario (its request setup + the reporting ``done()``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = report_lua.read_text()
    scripts: dict[str, Path] = {}
    for scenario in scenarios:
        if scenario.protocol != "http":
            continue
        path = out_dir / f"{scenario.name}.lua"
        path.write_text(scenario.wrk_setup() + report)
        scripts[scenario.name] = path
    return scripts
