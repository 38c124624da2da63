"""Instructions per request of a pyhost binary, counted by callgrind: an A/B measure that does
not depend on what else the machine is doing.

The server runs under ``valgrind --tool=callgrind`` twice, serving SHORT and then LONG requests
over keep-alive connections; the difference of the two totals divided by LONG - SHORT is what
one request costs, start-up and shutdown cancelled out. Every thread of the process counts (the
tokio workers, the loop thread, the watchdog).

    python3 scripts/instructions.py --bin target/release/pyhost [--bin OTHER ...] \
        [--config bench/apps/pyhost_app/pyhost.toml] [--path /hello] [--workers 1,2]

``--workers N`` serves with N worker processes and adds the totals of every worker, so the
figure is what one request costs the server's workers together. The supervisor is started
outside callgrind, with a wrapper as its worker program that starts each worker under callgrind:
valgrind (3.19) does not know ``pidfd_open``, which the supervisor uses to watch its workers.
The supervisor takes no part in a request (the kernel hands connections to the workers'
sockets); ``bench/run.py --workers`` reports its share of the CPU time under load. The requests
go over ``--connections`` keep-alive connections one after another (8 by default with workers,
so that each worker gets some), the same way for every worker count. The config is copied with
``server.worker_timeout`` and ``server.startup_timeout`` raised, since under callgrind a worker
runs about fifty times slower than it would.

Needs valgrind. Slow: about a minute per binary and worker count.
"""

from __future__ import annotations

import argparse
import os
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


def request_bytes(path: str) -> bytes:
    """A GET of PATH, or for ``/echo`` the benchmark's POST of its JSON body."""
    if path == "/echo":
        sys.path.insert(0, str(ROOT / "bench"))
        from harness.scenarios import ECHO_BODY

        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(ECHO_BODY)}\r\n\r\n"
        )
        return head.encode() + ECHO_BODY
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def send(port: int, path: str, count: int, connections: int) -> None:
    """COUNT requests over CONNECTIONS keep-alive connections, one connection after another."""
    request = request_bytes(path)
    for index in range(connections):
        share = count // connections + (1 if index < count % connections else 0)
        send_on_one(port, request, share)


def send_on_one(port: int, request: bytes, count: int) -> None:
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
    listen = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp) / "out"
        if keep is not None:
            out_dir = keep / f"{Path(binary).parent.parent.name}-w{workers}-{count}"
        out_dir.mkdir(parents=True, exist_ok=True)
        callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/%p"]
        env = dict(os.environ)
        if venv:
            env["VIRTUAL_ENV"] = venv
        patched: str | None = None
        if workers == 1:
            command = [*callgrind, binary, "serve", "--config", config, "--listen", listen]
        else:
            config = patched = with_patient_workers(config, Path(tmp))
            wrapper = Path(tmp) / "worker-under-callgrind"
            wrapper.write_text(f'#!/bin/sh\nexec {" ".join(callgrind)} {binary} "$@"\n')
            wrapper.chmod(0o755)
            # The command line `pyhost serve --workers N` execs, with our worker program.
            supervisor = Path(binary).with_name("pyhost-supervisor")
            arguments = ["--config", config, "--listen", listen, "--workers", str(workers)]
            command = [str(supervisor), "--program", str(wrapper), *arguments]
            command += ["--", "serve", *arguments]
        server = subprocess.Popen(
            command,
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
            if patched is not None:
                Path(patched).unlink(missing_ok=True)
        totals = [
            int(line.split()[1])
            for out in out_dir.iterdir()
            for line in out.read_text().splitlines()
            if line.startswith("totals:")
        ]
        if len(totals) != workers:
            raise SystemExit(
                f"{len(totals)} callgrind totals for {workers} worker(s):\n{stderr[-3000:]}"
            )
        return sum(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", action="append", required=True)
    parser.add_argument("--config", default=str(ROOT / "bench/apps/pyhost_app/pyhost.toml"))
    parser.add_argument("--path", default="/hello", help="a GET path, or /echo (its POST)")
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
