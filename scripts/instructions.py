"""Instructions per request of a pyhost binary, counted by callgrind: an A/B measure that does
not depend on what else the machine is doing.

The server runs under ``valgrind --tool=callgrind`` twice, serving SHORT and then LONG requests
over keep-alive connections; the difference of the two totals divided by LONG - SHORT is what
one request costs, start-up and shutdown cancelled out. Every thread of the process counts (the
tokio workers, the loop thread, the watchdog).

    python3 scripts/instructions.py --bin target/release/pyhost [--bin OTHER ...] \
        [--config bench/apps/pyhost_app/pyhost.toml] [--path /hello] [--workers 1,2]

``--workers N`` serves with N worker processes: callgrind follows the supervisor and every
worker it starts (``--trace-children``), and the totals of all of them are added, so the figure
is what one request costs the whole server, supervisor included. The requests go over
``--connections`` keep-alive connections one after another (8 by default with workers, so
that each worker gets some), the same way for every worker count. The config is copied with
``server.worker_timeout`` and ``server.startup_timeout`` raised, since under callgrind a worker
runs about fifty times slower than it would.

Needs valgrind. Slow: about a minute per binary and worker count.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not listen on {port} in time")


def send(port: int, path: str, count: int, connections: int) -> None:
    """COUNT requests over CONNECTIONS keep-alive connections, one connection after another."""
    for index in range(connections):
        share = count // connections + (1 if index < count % connections else 0)
        send_on_one(port, path, share)


def send_on_one(port: int, path: str, count: int) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        reader = sock.makefile("rb")
        for _ in range(count):
            sock.sendall(request)
            length = 0
            while True:
                line = reader.readline()
                if not line:
                    raise SystemExit("the server closed the connection")
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)


def with_patient_workers(config: str, tmp: Path) -> str:
    """A copy of CONFIG whose workers may be as slow as callgrind makes them.

    The copy lives in the config's own directory, so that its relative paths mean the same."""
    text = Path(config).read_text()
    patience = "worker_timeout = 600.0\nstartup_timeout = 600.0\n"
    if "[server]\n" in text:
        text = text.replace("[server]\n", "[server]\n" + patience, 1)
    else:
        text = "[server]\n" + patience + text
    copy = Path(config).parent / f".instructions-{tmp.name}.toml"
    copy.write_text(text)
    return str(copy)


def total(
    binary: str,
    config: str,
    path: str,
    count: int,
    workers: int,
    connections: int,
    venv: str | None,
    keep: Path | None,
) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out.%p"
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            out = keep / f"{Path(binary).parent.parent.name}-w{workers}-{count}.callgrind.%p"
        env = dict(os.environ)
        if venv:
            env["VIRTUAL_ENV"] = venv
        extra: list[str] = []
        if workers > 1:
            config = with_patient_workers(config, Path(tmp))
            extra = ["--workers", str(workers)]
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--trace-children=yes",
                f"--callgrind-out-file={out}",
                binary,
                "serve",
                "--config",
                config,
                "--listen",
                f"127.0.0.1:{port}",
                *extra,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # With workers the socket is the supervisor's: a connection made before its worker is
            # ready waits in the slot's queue, which is why the reads may wait minutes.
            wait_for(port, time.monotonic() + 300)
            send(port, path, count, connections)
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=300)
            if workers > 1:
                Path(config).unlink(missing_ok=True)
        # One line per process image callgrind ran to its end: the supervisor and each worker.
        found = re.findall(r"Collected : (\d+)", stderr)
        if not found:
            raise SystemExit(f"no callgrind total in the output:\n{stderr[-2000:]}")
        if workers > 1 and len(found) < workers + 1:
            raise SystemExit(
                f"{len(found)} callgrind totals for a supervisor and {workers} workers:\n"
                f"{stderr[-2000:]}"
            )
        return sum(int(value) for value in found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", action="append", required=True)
    parser.add_argument("--config", default=str(ROOT / "bench/apps/pyhost_app/pyhost.toml"))
    parser.add_argument("--path", default="/hello")
    parser.add_argument(
        "--workers", default="1", help="worker counts to measure, comma-separated: 1,2"
    )
    parser.add_argument(
        "--connections", type=int, help="keep-alive connections (1; 8 with workers)"
    )
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--long", type=int, default=4100)
    parser.add_argument("--venv", default=os.environ.get("VIRTUAL_ENV"))
    parser.add_argument(
        "--keep", type=Path, help="keep callgrind's files here, for callgrind_annotate"
    )
    args = parser.parse_args()
    counts = [int(value) for value in args.workers.split(",")]
    connections = args.connections or (8 if max(counts) > 1 else 1)
    for binary in args.bin:
        for workers in counts:
            runs = [
                total(
                    binary,
                    args.config,
                    args.path,
                    count,
                    workers,
                    connections,
                    args.venv,
                    args.keep,
                )
                for count in (args.short, args.long)
            ]
            per_request = (runs[1] - runs[0]) / (args.long - args.short)
            print(
                f"{binary}, {workers} worker(s), {connections} connection(s): "
                f"{per_request:,.0f} instructions per request ({args.path})"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
