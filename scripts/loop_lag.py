"""How much a slow host function delays everyone else, called each way.

Not part of the test suite. Run it from the repository root after
`cargo build --release -p pyhost-embed-example`:

    .venv/bin/python scripts/loop_lag.py [--seconds 5] [--connections 16] [--ms 50]

It starts the embed example (`examples/embed`), whose plugin offers `/hello/{name}` (a quick
handler) and two routes calling the same blocking 50 ms host function: `/lookup/{key}` awaits
it with `host.call_async` (it runs on a host thread) and `/lookup-blocking/{key}` calls it
with `host.call` (it runs on the event loop's thread). For each, `wrk` loads `/hello/ada` while
one client calls the slow route back to back, and the script prints wrk's latency figures for
`/hello`, beside a run with no slow calls at all. The server is pinned to core 0, wrk and the
slow client to core 1 when the machine has two cores or more.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BINARY = REPO_ROOT / "target" / "release" / "embed-example"
CONFIG = REPO_ROOT / "examples" / "embed" / "pyhost.toml"
LISTENING_RE = re.compile(r"^listening on (http://\S+)$")
LATENCY_RE = re.compile(r"^\s+(50|75|90|99)(?:\.000)?%\s+(\S+)$", re.MULTILINE)


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 else []


def start_server() -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen(
        [*pinned(0), str(BINARY), "--config", str(CONFIG), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = LISTENING_RE.match(line.strip())
        if match:
            return proc, match[1]
    raise SystemExit(f"{BINARY} exited before listening")


def slow_client(url: str, stop: threading.Event, counts: list[int]) -> None:
    while not stop.is_set():
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        counts[0] += 1


def measure(base: str, slow_path: str | None, args: argparse.Namespace) -> dict[str, str]:
    stop = threading.Event()
    counts = [0]
    worker = None
    if slow_path is not None:
        url = f"{base}{slow_path}?ms={args.ms}"
        worker = threading.Thread(target=slow_client, args=(url, stop, counts), daemon=True)
        worker.start()
        time.sleep(0.2)
    wrk = subprocess.run(
        [
            *pinned(1),
            "wrk",
            "--latency",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            f"{base}/hello/ada",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stop.set()
    if worker is not None:
        worker.join(30)
    figures = dict(LATENCY_RE.findall(wrk.stdout))
    requests = re.search(r"Requests/sec:\s+(\S+)", wrk.stdout)
    figures["req/s"] = requests[1] if requests else "?"
    figures["slow calls"] = str(counts[0])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ms", type=int, default=50, help="duration of one slow call")
    args = parser.parse_args()
    proc, base = start_server()
    try:
        rows = [
            ("no slow calls", measure(base, None, args)),
            ("host.call_async (off the loop)", measure(base, "/lookup/k", args)),
            ("host.call (on the loop)", measure(base, "/lookup-blocking/k", args)),
        ]
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"/hello/ada under wrk -t1 -c{args.connections} -d{args.seconds}s, beside a client")
    print(f"calling a {args.ms} ms blocking host function back to back:\n")
    print("| slow calls made with | req/s | p50 | p90 | p99 | slow calls |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, figures in rows:
        print(
            f"| {name} | {figures['req/s']} | {figures.get('50', '?')} | {figures.get('90', '?')}"
            f" | {figures.get('99', '?')} | {figures['slow calls']} |"
        )


if __name__ == "__main__":
    main()
