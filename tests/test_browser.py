"""A real browser against the real server: headless Chromium loads a page served by pyhost,
whose `EventSource` receives server-sent events (a reconnection with `Last-Event-ID`
included) and POSTs what it got back to the server, where the test reads it.

Chromium is Debian's `chromium` package, which `make test` installs when it is missing (see
the Makefile's `browser` target). Without it the test fails, saying so, unless
`PYHOST_SKIP_BROWSER=1` is set.

The same page then holds a WebSocket conversation (`websocket()` in its script, switched on
with `?ws=1`): the browser's `WebSocket` sends a message over `/ws/echo`, gets the server's
echo and closes with 1000, which the handler sees as the end of its `async for`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Server, ServerFactory, make_config, wait_until

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>pyhost browser test</title></head>
<body>
<pre id="out"></pre>
<script>
const params = new URLSearchParams(location.search);

function sse() {
  // Resolves with every event the EventSource dispatched, once the "done" event arrives.
  return new Promise((resolve) => {
    const got = [];
    const source = new EventSource("/events");
    const keep = (e) => got.push({type: e.type, data: e.data, id: e.lastEventId});
    source.addEventListener("tick", keep);
    source.onmessage = (e) => {
      keep(e);
      if (e.data === "done") {
        source.close();
        resolve(got);
      }
    };
    setTimeout(() => { source.close(); resolve(got); }, 20000);
  });
}

function websocket() {
  // An echo over /ws/echo: what was sent and what came back.
  return new Promise((resolve) => {
    const socket = new WebSocket(`ws://${location.host}/ws/echo`);
    const got = [];
    socket.onopen = () => socket.send("hello from the browser");
    socket.onmessage = (e) => { got.push(e.data); socket.close(1000, "done"); };
    socket.onclose = (e) => resolve({received: got, code: e.code});
    socket.onerror = () => resolve({received: got, error: true});
    setTimeout(() => resolve({received: got, timeout: true}), 20000);
  });
}

async function main() {
  const report = {userAgent: navigator.userAgent, sse: await sse()};
  if (params.get("ws") === "1") {
    report.websocket = await websocket();
  }
  document.getElementById("out").textContent = JSON.stringify(report, null, 2);
  await fetch("/report", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify(report),
  });
}

main().catch((err) => fetch("/report", {
  method: "POST",
  headers: {"content-type": "application/json"},
  body: JSON.stringify({error: String(err)}),
}));
</script>
</body>
</html>
"""

APP = {
    "app.py": f"""
        import asyncio

        from pyhost import EventSourceResponse, HTMLResponse, Router, ServerSentEvent

        router = Router()
        PAGE = {PAGE!r}
        REPORTS = []
        CONNECTIONS = []
        LOG = []


        @router.get("/")
        async def page(request):
            return HTMLResponse(PAGE)


        @router.get("/events")
        async def events(request):
            last = request.last_event_id
            CONNECTIONS.append(last)

            async def first_connection():
                # A short reconnection delay, then two events and the end of the stream: the
                # browser reconnects, sending the last id it saw.
                yield ServerSentEvent(retry=100)
                yield ServerSentEvent("first\\nline", event="tick", id="1")
                yield ServerSentEvent("second", id="2")

            async def resumed():
                try:
                    yield ServerSentEvent(f"resumed after {{last}}", id="3")
                    yield ServerSentEvent("done", id="4")
                    # Stays open: the page closes it, and that stops this generator.
                    await asyncio.sleep(3600)
                finally:
                    LOG.append("finally resumed")

            return EventSourceResponse(first_connection() if last is None else resumed(), ping=1)


        @router.websocket("/ws/echo")
        async def echo(socket):
            await socket.accept()
            try:
                async for message in socket:
                    await socket.send_text(f"echo: {{message}}")
            finally:
                LOG.append("websocket closed")


        @router.post("/report")
        async def report(request):
            REPORTS.append(request.json)
            return {{"ok": True}}


        @router.get("/reports")
        async def reports(request):
            return {{"reports": REPORTS, "connections": CONNECTIONS, "log": LOG}}
    """,
}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("PYHOST_SKIP_BROWSER") == "1":
            pytest.skip("PYHOST_SKIP_BROWSER=1 and no chromium")
        pytest.fail(
            "chromium is not installed: `make browser` installs Debian's package "
            "(or set PYHOST_SKIP_BROWSER=1 to skip this test)"
        )
    return found


@pytest.fixture
def server(pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    with factory.serve(APP, make_config()) as running:
        yield running


def reports(server: Server) -> dict[str, Any]:
    with server.client() as client:
        data: dict[str, Any] = client.get("/reports").json()
        return data


def test_a_browser_receives_events_and_talks_over_a_websocket(
    server: Server, tmp_path: Path
) -> None:
    browser = subprocess.Popen(
        [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"{server.url}/?ws=1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own process group, so the test ends the browser's helper processes with it.
        start_new_session=True,
    )
    try:
        assert wait_until(lambda: bool(reports(server)["reports"]), 60), (
            f"the page reported nothing; the server saw {reports(server)}"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(10)
    seen = reports(server)
    (report,) = seen["reports"]
    assert "error" not in report, report
    assert "Chrome" in report["userAgent"]
    assert report["sse"] == [
        {"type": "tick", "data": "first\nline", "id": "1"},
        {"type": "message", "data": "second", "id": "2"},
        {"type": "message", "data": "resumed after 2", "id": "3"},
        {"type": "message", "data": "done", "id": "4"},
    ]
    # The browser reconnected by itself, with the id of the last event it had seen.
    assert seen["connections"] == [None, "2"]
    # Closing the EventSource stopped the producer of the open stream.
    assert wait_until(lambda: "finally resumed" in reports(server)["log"], 10)
    # The WebSocket echoed, and the browser's close ended the handler's loop.
    assert report["websocket"] == {"received": ["echo: hello from the browser"], "code": 1000}
    assert wait_until(lambda: "websocket closed" in reports(server)["log"], 10)
