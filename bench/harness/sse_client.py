"""The load client of the SSE scenario: N connections each reading an endless event stream.

Run by the driver (pinned to the load core) as::

    python3 sse_client.py PORT PATH CLIENTS WARMUP DURATION

It opens every connection (HTTP/1.1 ``GET PATH``), checks each response head (200,
``text/event-stream``), reads for ``WARMUP`` seconds, prints ``measuring``, counts for
``DURATION`` seconds the events that arrive (an event ends with a blank line, ``\\n\\n``;
HTTP/1.1 chunk framing never contains one), then prints one JSON line with the figures and
exits, closing every connection. Standard library only, asyncio protocols: counting is a
``bytes.count`` per read, far cheaper than the server's work per event.
"""

import asyncio
import json
import sys
import time

HOST = "127.0.0.1"


class Counter(asyncio.Protocol):
    """One connection: its head checked, then the events counted."""

    def __init__(self, request: bytes, problems: list[str]) -> None:
        self.request = request
        self.problems = problems
        self.head = b""
        self.in_head = True
        self.events = 0
        self.last_newline = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end].lower(), self.head[end + 4 :]
            self.in_head = False
            if not head.startswith(b"http/1.1 200") or b"text/event-stream" not in head:
                self.problems.append(f"bad response head: {head[:200]!r}")
        if not data:
            return
        count = data.count(b"\n\n")
        if self.last_newline and data[:1] == b"\n":
            count += 1
        self.events += count
        self.last_newline = data[-1:] == b"\n"

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def main(port: int, path: str, clients: int, warmup: float, duration: float) -> None:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    problems: list[str] = []
    connections = [
        await loop.create_connection(lambda: Counter(request.encode(), problems), HOST, port)
        for _ in range(clients)
    ]
    await asyncio.sleep(warmup)
    protocols = [protocol for _, protocol in connections]
    before = [p.events for p in protocols]
    print("measuring", flush=True)
    started = time.perf_counter()
    await asyncio.sleep(duration)
    elapsed = time.perf_counter() - started
    counts = [p.events - b for p, b in zip(protocols, before, strict=True)]
    closed_early = sum(p.closed.done() for p in protocols)
    for transport, _ in connections:
        transport.close()
    print(
        json.dumps(
            {
                "events": sum(counts),
                "seconds": elapsed,
                "min_per_client": min(counts),
                "max_per_client": max(counts),
                "closed_early": closed_early,
                "problems": problems[:5],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    port, path, clients, warmup, duration = sys.argv[1:6]
    asyncio.run(main(int(port), path, int(clients), float(warmup), float(duration)))
