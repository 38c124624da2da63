"""The SSE scenario: 200 clients each reading an endless server-sent event stream.

Every app's ``GET /sse`` sends the same bytes, event after event, as fast as its client takes
them, its generator awaiting one turn of the event loop (``asyncio.sleep(0)``) per event, as a
producer waiting on a queue or a model would: ``data: N the quick brown fox jumps over the lazy
dog\\nid: N\\n\\n``. pyhost's is an ``EventSourceResponse`` of ``ServerSentEvent`` objects
(what its users write); Starlette's a ``StreamingResponse`` of f-strings with
``media_type="text/event-stream"``, served by Granian and by uvicorn. The load is
``sse_client.py`` on the load core; the figures are the events all clients received per second
and the server's CPU time per event over the measured window.
"""

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .load import HOST

SERVERS: tuple[str, ...] = ("pyhost", "starlette-granian", "starlette-uvicorn")
# Servers that run this scenario only (not in ``servers.SERVERS``).
ONLY_SERVERS: tuple[str, ...] = ("starlette-uvicorn",)
PATH = "/sse"
CLIENTS = 200
SMOKE_CLIENTS = 8
TEXT = "the quick brown fox jumps over the lazy dog"
CLIENT_SCRIPT = Path(__file__).resolve().parent / "sse_client.py"
CHECKED_EVENTS = 5


@dataclass(frozen=True)
class SseResult:
    """What one measured window gave."""

    events_per_s: float
    cpu_us_per_event: float
    min_per_client: float  # events per second of the slowest client
    max_per_client: float  # and of the fastest
    errors: int  # streams that ended during the window


def _dechunk(data: bytes) -> bytes:
    """The body of a chunked HTTP/1.1 response so far (a partial last chunk left out)."""
    out = bytearray()
    while True:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return bytes(out)
        size = int(line.split(b";")[0] or b"0", 16)
        if size == 0 or len(rest) < size + 2:
            return bytes(out)
        out += rest[:size]
        data = rest[size + 2 :]


def check(port: int) -> str | None:
    """Read the first events of one stream: None if head and events are right, else why."""
    request = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    expected = "".join(f"data: {n} {TEXT}\nid: {n}\n\n" for n in range(1, CHECKED_EVENTS + 1))
    data = b""
    try:
        with socket.create_connection((HOST, port), timeout=10) as sock:
            sock.sendall(request)
            while True:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and len(_dechunk(rest)) >= len(expected):
                    break
                chunk = sock.recv(65536)
                if not chunk:
                    return f"GET {PATH}: closed after {data[:300]!r}"
                data += chunk
    except OSError as error:
        return f"GET {PATH}: {error} after {data[:300]!r}"
    lowered = head.lower()
    if not lowered.startswith(b"http/1.1 200"):
        return f"GET {PATH}: {head[:200]!r}"
    if b"content-type: text/event-stream" not in lowered:
        return f"GET {PATH}: no text/event-stream content type in {head!r}"
    if b"transfer-encoding: chunked" not in lowered:
        return f"GET {PATH}: not chunked: {head!r}"
    body = _dechunk(rest).decode()
    if not body.startswith(expected):
        return f"GET {PATH}: the events begin {body[:300]!r}, expected {expected[:120]!r}..."
    return None


def measure(
    load_prefix: list[str],
    port: int,
    *,
    clients: int,
    warmup: float,
    duration: float,
    cpu_seconds: Callable[[], float],
) -> SseResult:
    """One measured window of ``clients`` streams; ``cpu_seconds()`` reads the server's CPU."""
    command = [
        *load_prefix,
        sys.executable,
        str(CLIENT_SCRIPT),
        str(port),
        PATH,
        str(clients),
        str(warmup),
        str(duration),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as client:
        assert client.stdout is not None
        line = client.stdout.readline()
        if line.strip() != "measuring":
            client.kill()
            raise RuntimeError(f"the SSE client did not start measuring: {line!r}")
        before = cpu_seconds()
        started = time.perf_counter()
        line = client.stdout.readline()
        cpu = cpu_seconds() - before
        elapsed = time.perf_counter() - started
        client.wait(30)
    if client.returncode != 0 or not line:
        raise RuntimeError(f"the SSE client failed (exit {client.returncode})")
    figures = json.loads(line)
    if figures["problems"]:
        raise RuntimeError(f"the SSE client saw: {figures['problems']}")
    events = int(figures["events"])
    seconds = max(float(figures["seconds"]), 1e-9)
    return SseResult(
        events_per_s=events / seconds,
        cpu_us_per_event=cpu * 1e6 / max(events, 1) * (seconds / elapsed),
        min_per_client=int(figures["min_per_client"]) / seconds,
        max_per_client=int(figures["max_per_client"]) / seconds,
        errors=int(figures["closed_early"]),
    )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _ratio(pyhost: float, peer: float) -> str:
    return f" ({pyhost / peer:.2f}x)" if peer else ""


def table(results: dict[str, list[tuple[SseResult, float]]], clients: int) -> list[str]:
    """The report's section: one row per server, medians over rounds, pyhost/peer ratios."""
    if not results:
        return []
    lines = [
        "",
        f"## Server-sent events: {clients} clients reading endless streams (medians over rounds)",
        "",
        "Each client's stream sends `data: N the quick brown fox jumps over the lazy dog\\nid: "
        "N\\n\\n` event after event, as fast as the client takes them (pyhost: an "
        "`EventSourceResponse` of `ServerSentEvent`s; Starlette: a `StreamingResponse` of "
        "f-strings, `text/event-stream`). events/s: what all clients received; CPU µs/event: "
        "the server's CPU time over the window per event; per client: the least and most one "
        "client received per second. Ratios are pyhost/peer: above 1x pyhost is ahead for "
        "events/s, below 1x for CPU and RSS.",
        "",
        "| server | events/s | CPU µs/event | per client events/s (min-max) | peak RSS MiB "
        "| streams cut |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    medians: dict[str, tuple[float, float, float, float, float, float]] = {}
    for name, runs in results.items():
        if not runs:
            continue
        medians[name] = (
            _median([r.events_per_s for r, _ in runs]),
            _median([r.cpu_us_per_event for r, _ in runs]),
            _median([r.min_per_client for r, _ in runs]),
            _median([r.max_per_client for r, _ in runs]),
            _median([rss for _, rss in runs]),
            _median([r.errors for r, _ in runs]),
        )
    reference = medians.get("pyhost")
    for name in SERVERS:
        if name not in results:
            continue
        if name not in medians:
            lines.append(f"| {name} | FAILED | | | | |")
            continue
        rate, cpu, low, high, rss, cut = medians[name]
        row = [f"{rate:,.0f}", f"{cpu:.2f}", f"{low:,.0f}-{high:,.0f}", f"{rss:.1f}", f"{cut:.0f}"]
        if name != "pyhost" and reference is not None:
            row[0] += _ratio(reference[0], rate)
            row[1] += _ratio(reference[1], cpu)
            row[3] += _ratio(reference[4], rss)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines
