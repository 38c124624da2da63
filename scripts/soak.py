"""Soak test: push many requests through pyhost and watch statuses and memory.

Not part of the test suite. Run it from the repository root:

    .venv/bin/python scripts/soak.py [--requests 1000000] [--concurrency 64]
                                     [--bin target/release/pyhost]

It writes a small handler package to a temporary directory, starts `pyhost serve` on it, and
sends the requested number of requests over keep-alive connections (raw asyncio streams, so
the client keeps up with the server). The mix covers successes (async and plain `def`
handlers, JSON bodies), handler exceptions (500), HTTPError, validation failures (422),
unknown paths (404) and handler timeouts (504). Every response's status is checked against
the one its request must get.

The server's resident memory (VmRSS) is sampled once the warm-up share of the requests is done
and again at the end. The script prints requests/s, counts per status, unexpected statuses,
the RSS figures and their growth, and exits 1 if any status was unexpected, the server died,
or RSS grew by the allowed percentage or more (10 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LISTENING_RE = re.compile(rb"^listening on http://(\S+):(\d+)$")

APP = """
import asyncio
import dataclasses

from pyhost import HTTPError, Query, Router

router = Router()


@dataclasses.dataclass
class Item:
    name: str
    price: float
    tags: list[str] = dataclasses.field(default_factory=list)


@router.get("/ok")
async def ok(request):
    return {"ok": True, "id": request.request_id}


@router.get("/sync")
def sync(request):
    return {"sync": True, "q": request.query_params.get("q")}


@router.get("/sleep")
async def sleep(request):
    await asyncio.sleep(0.001)
    return "slept"


@router.get("/items/{item_id:int}", query={"limit": Query(int, default=10, ge=1, le=100)})
async def get_item(request):
    return {"id": request.path_params["item_id"], "limit": request.query["limit"]}


@router.post("/items", body=Item)
async def create_item(request):
    return request.json, 201


@router.get("/boom")
async def boom(request):
    raise ValueError("boom")


@router.get("/sync-boom")
def sync_boom(request):
    raise KeyError("sync boom")


@router.get("/teapot")
async def teapot(request):
    raise HTTPError(418, "short and stout")


@router.get("/slow", timeout=0.05)
async def slow(request):
    await asyncio.sleep(10)
"""

CONFIG = """
[server]
listen = "127.0.0.1:0"
sync_threads = 4

[app]
module = "soakapp"
"""


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n".encode()


def _post(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True)
class Kind:
    name: str
    request: bytes
    status: int
    weight: int


KINDS = [
    Kind("ok", _get("/ok"), 200, 40),
    Kind("sync", _get("/sync?q=soak"), 200, 10),
    Kind("sleep", _get("/sleep"), 200, 5),
    Kind("item", _get("/items/42?limit=7"), 200, 10),
    Kind("create", _post("/items", b'{"name": "a", "price": 1.5, "tags": ["x"]}'), 201, 10),
    Kind("boom", _get("/boom"), 500, 5),
    Kind("sync-boom", _get("/sync-boom"), 500, 2),
    Kind("teapot", _get("/teapot"), 418, 3),
    Kind("bad-query", _get("/items/42?limit=1000"), 422, 4),
    Kind("bad-path", _get("/items/forty-two"), 422, 2),
    Kind("bad-body", _post("/items", b'{"name": 1}'), 422, 4),
    Kind("not-found", _get("/nope"), 404, 3),
    Kind("timeout", _get("/slow"), 504, 2),
]
# One round of the mix: each kind `weight` times, interleaved deterministically.
SCHEDULE = [
    kind for index in range(max(k.weight for k in KINDS)) for kind in KINDS if index < kind.weight
]


@dataclass
class Stats:
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    done: int = 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the server will close."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def drive(host: str, port: int, args: argparse.Namespace, pid: int) -> tuple[Stats, dict]:
    stats = Stats()
    total = args.requests
    warmup_at = max(1, int(total * args.warmup))
    progress_every = max(1, total // 10)
    marks: dict[str, float | int] = {}
    next_index = 0

    def take() -> int | None:
        nonlocal next_index
        if next_index >= total:
            return None
        index = next_index
        next_index += 1
        return index

    def record(kind: Kind, status: int) -> None:
        stats.done += 1
        stats.statuses[status] += 1
        if status != kind.status:
            stats.unexpected[(kind.name, status)] += 1
        if stats.done == warmup_at:
            marks["warm_rss"] = rss_kib(pid)
            marks["warm_time"] = time.perf_counter()
            marks["warm_done"] = stats.done
        if stats.done % progress_every == 0:
            elapsed = time.perf_counter() - marks["start"]
            print(
                f"  {stats.done:>9} / {total}  {stats.done / elapsed:8.0f} req/s  "
                f"RSS {rss_kib(pid) / 1024:7.1f} MiB",
                flush=True,
            )

    async def worker() -> None:
        reader = writer = None
        while (index := take()) is not None:
            kind = SCHEDULE[index % len(SCHEDULE)]
            for attempt in range(2):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert reader is not None
                    writer.write(kind.request)
                    await writer.drain()
                    status, close = await asyncio.wait_for(read_response(reader), args.timeout)
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    if attempt == 1:
                        stats.errors[type(exc).__name__] += 1
                        stats.done += 1
                    continue
                record(kind, status)
                if close:
                    writer.close()
                    reader = writer = None
                break
        if writer is not None:
            writer.close()

    marks["start"] = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    marks["end"] = time.perf_counter()
    return stats, marks


def start_server(binary: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = sys.prefix
    env["NO_COLOR"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for name in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "serve", "--config", str(workdir / "pyhost.toml")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        cwd=workdir,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    match = LISTENING_RE.match(line)
    if match is None:
        proc.kill()
        proc.wait()
        log.close()
        sys.exit(
            f"pyhost did not start (first line {line!r}); log:\n"
            + (workdir / "server.log").read_text(errors="replace")[-4000:]
        )
    return proc, match.group(1).decode(), int(match.group(2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bin", type=Path, default=REPO_ROOT / "target" / "release" / "pyhost")
    parser.add_argument(
        "--warmup", type=float, default=0.05, help="share of requests before the first RSS sample"
    )
    parser.add_argument("--max-growth", type=float, default=10.0, help="allowed RSS growth in %%")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per response")
    args = parser.parse_args()

    binary = args.bin if args.bin.is_absolute() else Path.cwd() / args.bin
    if not binary.is_file():
        print(f"no pyhost binary at {binary} (build it, or pass --bin)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="pyhost-soak-") as tmp:
        workdir = Path(tmp)
        (workdir / "soakapp.py").write_text(textwrap.dedent(APP).lstrip())
        (workdir / "pyhost.toml").write_text(textwrap.dedent(CONFIG).lstrip())
        proc, host, port = start_server(binary, workdir)
        print(
            f"pyhost {binary} pid {proc.pid} on {host}:{port}: {args.requests} requests, "
            f"concurrency {args.concurrency}",
            flush=True,
        )
        start_rss = rss_kib(proc.pid)
        try:
            stats, marks = asyncio.run(drive(host, port, args, proc.pid))
            alive = proc.poll() is None
            end_rss = rss_kib(proc.pid) if alive else 0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                exit_status = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_status = proc.wait()
        log_size = (workdir / "server.log").stat().st_size
        log_tail = (workdir / "server.log").read_text(errors="replace").splitlines()[-3:]

    elapsed = marks["end"] - marks["start"]
    warm_rss = int(marks.get("warm_rss", start_rss))
    growth = (end_rss - warm_rss) / warm_rss * 100 if warm_rss else 0.0
    expected = Counter()
    for index in range(args.requests):
        expected[SCHEDULE[index % len(SCHEDULE)].status] += 1

    print()
    print(f"requests:     {stats.done} in {elapsed:.1f}s = {stats.done / elapsed:.0f} req/s")
    steady = marks.get("warm_time")
    if steady is not None and marks["end"] > steady:
        rate = (stats.done - int(marks["warm_done"])) / (marks["end"] - steady)
        print(f"after warm-up: {rate:.0f} req/s")
    print("statuses:     " + ", ".join(f"{s}: {n}" for s, n in sorted(stats.statuses.items())))
    print("expected:     " + ", ".join(f"{s}: {n}" for s, n in sorted(expected.items())))
    unexpected_total = sum(stats.unexpected.values())
    print(f"unexpected:   {unexpected_total}")
    for (name, status), count in stats.unexpected.most_common(10):
        print(f"    {name}: got {status} x{count}")
    if stats.errors:
        print("client errors: " + ", ".join(f"{k}: {v}" for k, v in stats.errors.items()))
    print(f"RSS at start:        {start_rss / 1024:8.1f} MiB")
    print(f"RSS after warm-up:   {warm_rss / 1024:8.1f} MiB")
    print(f"RSS at end:          {end_rss / 1024:8.1f} MiB")
    print(f"RSS growth:          {growth:+8.2f} %  (limit {args.max_growth:.0f} %)")
    print(f"server log:          {log_size / 1024 / 1024:.1f} MiB; exit status {exit_status}")

    problems = []
    if unexpected_total:
        problems.append(f"{unexpected_total} unexpected statuses")
    if stats.errors:
        problems.append(f"{sum(stats.errors.values())} requests without a response")
    if not alive:
        problems.append("the server died: " + " | ".join(log_tail))
    if growth >= args.max_growth:
        problems.append(f"RSS grew {growth:.1f}%")
    if exit_status != 0:
        problems.append(f"the server exited {exit_status} after SIGTERM")
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
