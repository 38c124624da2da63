"""Instructions per request of a pyhost binary, counted by callgrind: an A/B measure that does
not depend on what else the machine is doing.

The server runs under ``valgrind --tool=callgrind`` twice, serving SHORT and then LONG requests
over one keep-alive connection; the difference of the two totals divided by LONG - SHORT is what
one request costs, start-up and shutdown cancelled out. Every thread of the process counts (the
tokio workers, the loop thread, the watchdog).

    python3 scripts/instructions.py --bin target/release/pyhost [--bin OTHER ...] \
        [--config bench/apps/pyhost_app/pyhost.toml] [--path /hello]

Needs valgrind. Slow: about a minute per binary.
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


def send(port: int, path: str, count: int) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
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


def total(
    binary: str, config: str, path: str, count: int, venv: str | None, keep: Path | None
) -> int:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            out = keep / f"{Path(binary).parent.parent.name}-{count}.callgrind"
        env = dict(os.environ)
        if venv:
            env["VIRTUAL_ENV"] = venv
        server = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                binary,
                "serve",
                "--config",
                config,
                "--listen",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(port, time.monotonic() + 120)
            send(port, path, count)
        finally:
            server.send_signal(signal.SIGTERM)
            _, stderr = server.communicate(timeout=120)
        found = re.search(r"Collected : (\d+)", stderr)
        if not found:
            raise SystemExit(f"no callgrind total in the output:\n{stderr[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", action="append", required=True)
    parser.add_argument("--config", default=str(ROOT / "bench/apps/pyhost_app/pyhost.toml"))
    parser.add_argument("--path", default="/hello")
    parser.add_argument("--short", type=int, default=100)
    parser.add_argument("--long", type=int, default=4100)
    parser.add_argument("--venv", default=os.environ.get("VIRTUAL_ENV"))
    parser.add_argument(
        "--keep", type=Path, help="keep callgrind's files here, for callgrind_annotate"
    )
    args = parser.parse_args()
    for binary in args.bin:
        short = total(binary, args.config, args.path, args.short, args.venv, args.keep)
        long = total(binary, args.config, args.path, args.long, args.venv, args.keep)
        per_request = (long - short) / (args.long - args.short)
        print(f"{binary}: {per_request:,.0f} instructions per request ({args.path})")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
