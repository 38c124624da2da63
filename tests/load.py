"""A load generator for the tests that restart or kill workers under traffic.

Clients run on an asyncio loop in a background thread and speak HTTP/1.1 over plain sockets,
so that every request is accounted for: each one sent either gets a complete response or is
recorded as a failure (a reset, an early close, a timeout). Two kinds of client run together:

- keep-alive clients reuse their connection until the server answers `Connection: close`,
  which is where a server that closes idle connections while draining loses requests;
- connection-per-request clients open a new connection for every request, which is where a
  listening socket that dies with connections queued loses them.

Responses are expected to be JSON objects; their `pid` and `version` fields (when present) are
recorded with the time, to tell which worker and which code answered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 10.0


@dataclass
class Answer:
    at: float
    status: int
    pid: int | None
    version: Any
    kind: str


@dataclass
class Failure:
    at: float
    kind: str
    error: str
    last_pid: int | None = None
    """For a keep-alive connection, the worker that answered its previous request."""


@dataclass
class LoadResults:
    answers: list[Answer] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def pids(self) -> Counter[int | None]:
        return Counter(answer.pid for answer in self.answers)

    def statuses(self) -> Counter[int]:
        return Counter(answer.status for answer in self.answers)

    def describe(self) -> str:
        return (
            f"{len(self.answers)} answers (statuses {dict(self.statuses())}, "
            f"pids {dict(self.pids())}), {len(self.failures)} failures: "
            f"{[f'{f.kind}: {f.error}' for f in self.failures[:10]]}"
        )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


class Load:
    """Runs clients against `url` + `path` until stopped (use as a context manager)."""

    def __init__(
        self,
        url: str,
        path: str = "/",
        *,
        keepalive: int = 4,
        per_request: int = 4,
        pause: float = 0.002,
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = path
        self.keepalive = keepalive
        self.per_request = per_request
        self.pause = pause
        self.results = LoadResults()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResults:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT + 5)
        return self.results

    def count(self) -> int:
        with self._lock:
            return len(self.results.answers)

    def answers_since(self, moment: float) -> list[Answer]:
        with self._lock:
            return [answer for answer in self.results.answers if answer.at >= moment]

    def _request(self) -> bytes:
        return f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()

    def _record(self, status: int, body: bytes, kind: str) -> int | None:
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        answer = Answer(time.monotonic(), status, payload.get("pid"), payload.get("version"), kind)
        with self._lock:
            self.results.answers.append(answer)
        return answer.pid

    def _fail(self, kind: str, error: BaseException, last_pid: int | None = None) -> None:
        failure = Failure(time.monotonic(), kind, f"{type(error).__name__}: {error}", last_pid)
        with self._lock:
            self.results.failures.append(failure)

    async def _keepalive_client(self) -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        last_pid: int | None = None
        while not self._stop.is_set():
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, self.port), REQUEST_TIMEOUT
                    )
                    last_pid = None
                writer.write(self._request())
                await writer.drain()
                status, headers, body = await asyncio.wait_for(
                    _read_response(reader), REQUEST_TIMEOUT
                )
                last_pid = self._record(status, body, "keep-alive")
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader = writer = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self._fail("keep-alive", exc, last_pid)
                if writer is not None:
                    writer.close()
                reader = writer = None
            await asyncio.sleep(self.pause)
        if writer is not None:
            writer.close()

    async def _per_request_client(self) -> None:
        while not self._stop.is_set():
            writer: asyncio.StreamWriter | None = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), REQUEST_TIMEOUT
                )
                writer.write(self._request().replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                await writer.drain()
                status, _headers, body = await asyncio.wait_for(
                    _read_response(reader), REQUEST_TIMEOUT
                )
                self._record(status, body, "per-request")
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self._fail("per-request", exc)
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(self.pause)

    def _run(self) -> None:
        async def main() -> None:
            clients = [self._keepalive_client() for _ in range(self.keepalive)]
            clients += [self._per_request_client() for _ in range(self.per_request)]
            await asyncio.gather(*clients)

        asyncio.run(main())
