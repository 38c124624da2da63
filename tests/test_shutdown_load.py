"""Shutdown under load, the in-flight limit (`server.max_in_flight`), and a burst of mixed
traffic (successes, failures, validation errors, timeouts) answered with the right statuses."""

import asyncio
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.harness import (
    RawResponse,
    Server,
    ServerFactory,
    fetch_concurrently,
    make_config,
    wait_until,
)

LOAD_APP = {
    "app.py": """
        import asyncio

        from pyhost import HTTPError, Query, Router

        router = Router()
        state = {"arrived": 0, "in_flight": 0, "done": 0}


        WORK_QUERY = {"n": Query(int, default=0), "seconds": Query(float, default=0.5)}


        @router.get("/work", query=WORK_QUERY)
        async def work(request):
            # Wait (up to 10 s) until n requests have arrived, so they are all in flight at once.
            state["arrived"] += 1
            state["in_flight"] += 1
            try:
                for _ in range(1000):
                    if state["arrived"] >= request.query["n"]:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(request.query["seconds"])
                state["done"] += 1
                return {"done": True}
            finally:
                state["in_flight"] -= 1


        @router.get("/state")
        async def get_state(request):
            return state


        @router.get("/ok")
        async def ok(request):
            return {"ok": True}


        @router.get("/sync-ok")
        def sync_ok(request):
            return {"ok": True}


        @router.get("/boom")
        async def boom(request):
            raise ValueError("boom")


        @router.get("/teapot")
        async def teapot(request):
            raise HTTPError(418)


        @router.get("/bounded", query={"n": Query(int, ge=0, le=10)})
        async def bounded(request):
            return {"n": request.query["n"]}


        @router.get("/slow", timeout=0.2)
        async def slow(request):
            await asyncio.sleep(5)
    """,
}


def get_state(server: Server) -> dict[str, int]:
    with server.client() as http:
        state = http.get("/state").json()
    assert isinstance(state, dict)
    return state


def connection_refused(server: Server) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=1):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def fetch_in_background(
    server: Server, targets: list[str], timeout: float = 60.0
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["responses"] = fetch_concurrently(server.url, targets, timeout=timeout)
        except Exception as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


# --- graceful shutdown under load ------------------------------------------------------------


def test_sigterm_with_50_requests_in_flight_answers_them_all(
    server_factory: ServerFactory,
) -> None:
    count, grace = 50, 10.0
    config = make_config(server=f"shutdown_grace = {grace}")
    with server_factory.serve(LOAD_APP, config) as server:
        thread, result = fetch_in_background(server, [f"/work?n={count}&seconds=0.5"] * count)
        assert wait_until(lambda: get_state(server)["arrived"] >= count, timeout=15.0), get_state(
            server
        )
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)

        assert wait_until(lambda: connection_refused(server), timeout=2.0, interval=0.05), (
            "new connections were still accepted after SIGTERM"
        )
        try:
            returncode = server.proc.wait(grace + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {grace + 5:.0f}s after SIGTERM")
        elapsed = time.monotonic() - signalled
        thread.join(30)

        assert "error" not in result, f"the in-flight requests failed: {result.get('error')!r}"
        responses: list[RawResponse] = result["responses"]
        assert len(responses) == count
        assert Counter(response.status for response in responses) == {200: count}
        assert all(response.json() == {"done": True} for response in responses)
        assert returncode == 0, server.stderr_text()
        assert elapsed < grace, f"took {elapsed:.1f}s to exit"


def test_sigterm_with_keep_alive_clients_hammering(server_factory: ServerFactory) -> None:
    # Clients keep sending on keep-alive connections while the signal arrives: every request
    # gets a complete answer or a closed connection, never a half response, and the process
    # exits 0.
    config = make_config(server="shutdown_grace = 5")
    with server_factory.serve(LOAD_APP, config) as server:
        statuses: Counter[int | str] = Counter()
        stop = threading.Event()

        async def hammer() -> None:
            async def one_connection() -> None:
                try:
                    reader, writer = await asyncio.open_connection(server.host, server.port)
                except OSError:
                    statuses["refused"] += 1
                    return
                try:
                    while not stop.is_set():
                        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                        await writer.drain()
                        head = await reader.readuntil(b"\r\n\r\n")
                        length = next(
                            int(line.split(b":", 1)[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length:")
                        )
                        body = await reader.readexactly(length)
                        ok = body == b'{"ok":true}'
                        statuses[int(head.split(b" ", 2)[1]) if ok else "bad body"] += 1
                except (asyncio.IncompleteReadError, ConnectionError):
                    statuses["closed"] += 1
                finally:
                    writer.close()

            await asyncio.gather(*(one_connection() for _ in range(16)))

        thread = threading.Thread(target=lambda: asyncio.run(hammer()))
        thread.start()
        time.sleep(1.0)
        server.proc.send_signal(signal.SIGTERM)
        returncode = server.proc.wait(15)
        stop.set()
        thread.join(15)
        assert not thread.is_alive()
        assert returncode == 0, server.stderr_text()
        assert statuses[200] > 0, statuses
        assert set(statuses) <= {200, "closed", "refused"}, statuses


def test_short_grace_period_cuts_a_30_second_handler(server_factory: ServerFactory) -> None:
    config = make_config(server="shutdown_grace = 1\nrequest_timeout = 0")
    with server_factory.serve(LOAD_APP, config) as server:
        thread, _ = fetch_in_background(server, ["/work?seconds=30"], timeout=40)
        assert wait_until(lambda: get_state(server)["in_flight"] == 1, timeout=10.0)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            returncode = server.proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 10 s after SIGTERM with shutdown_grace = 1")
        elapsed = time.monotonic() - signalled
        thread.join(45)
        assert 0.8 <= elapsed < 4.0, f"exited {elapsed:.2f}s after SIGTERM"
        assert returncode == 0, server.stderr_text()


# --- max_in_flight ---------------------------------------------------------------------------


def test_requests_beyond_max_in_flight_get_503_with_retry_after(
    server_factory: ServerFactory,
) -> None:
    limit, total = 4, 10
    config = make_config(server=f"max_in_flight = {limit}")
    with server_factory.serve(LOAD_APP, config) as server:
        responses = fetch_concurrently(server.url, ["/work?seconds=3"] * total, timeout=60)
        statuses = Counter(response.status for response in responses)
        assert statuses == {200: limit, 503: total - limit}, statuses
        for response in responses:
            if response.status == 503:
                assert response.header("retry-after") == "1", response.headers
                assert isinstance(response.json().get("detail"), str)
        # Capacity comes back once they are done.
        with server.client() as http:
            assert http.get("/ok").status_code == 200


def test_max_in_flight_counts_only_requests_being_handled(server_factory: ServerFactory) -> None:
    config = make_config(server="max_in_flight = 2")
    with server_factory.serve(LOAD_APP, config) as server:
        # Far more requests than the limit, one after another: none is refused.
        with server.client() as http:
            for _ in range(50):
                assert http.get("/ok").status_code == 200
        targets = ["/ok"] * 2
        for _ in range(20):
            assert [r.status for r in fetch_concurrently(server.url, targets)] == [200, 200]


def test_503_while_full_then_200(server_factory: ServerFactory) -> None:
    config = make_config(server="max_in_flight = 2")
    with server_factory.serve(LOAD_APP, config) as server:
        thread, result = fetch_in_background(server, ["/work?n=2&seconds=2"] * 2)
        with server.client() as http:
            # /state is itself a request, so poll /ok until it is refused.
            assert wait_until(lambda: http.get("/ok").status_code == 503, timeout=5.0)
        thread.join(30)
        assert [r.status for r in result["responses"]] == [200, 200]
        with server.client() as http:
            assert http.get("/ok").status_code == 200


# --- mixed load ------------------------------------------------------------------------------

MIX = [
    ("/ok", 200),
    ("/sync-ok", 200),
    ("/boom", 500),
    ("/teapot", 418),
    ("/bounded?n=5", 200),
    ("/bounded?n=50", 422),
    ("/bounded?n=x", 422),
    ("/bounded", 422),
    ("/missing", 404),
    ("/slow", 504),
]


def test_mixed_burst_gets_exactly_the_expected_statuses(server_factory: ServerFactory) -> None:
    with server_factory.serve(LOAD_APP, make_config(server="sync_threads = 4")) as server:
        targets = [target for target, _ in MIX] * 30
        responses = fetch_concurrently(server.url, targets, timeout=120)
        expected = dict(MIX)
        wrong = [
            (target, response.status)
            for target, response in zip(targets, responses, strict=True)
            if response.status != expected[target]
        ]
        assert wrong == [], wrong[:20]
        assert all(response.header("x-request-id") for response in responses)
        ids = [response.header("x-request-id") for response in responses]
        assert len(set(ids)) == len(ids), "request ids repeat"
        with server.client() as http:
            assert http.get("/ok").status_code == 200


def test_sustained_keep_alive_load(server_factory: ServerFactory) -> None:
    # 2000 requests over 16 keep-alive connections (httpx), mixing the statuses.
    with server_factory.serve(LOAD_APP, make_config(server="sync_threads = 4")) as server:
        expected = dict(MIX)
        targets = [target for target, _ in MIX if target != "/slow"] * 200

        async def run() -> list[tuple[str, int]]:
            queue: asyncio.Queue[str] = asyncio.Queue()
            for target in targets:
                queue.put_nowait(target)
            wrong: list[tuple[str, int]] = []
            async with server.async_client(timeout=30.0) as http:

                async def worker() -> None:
                    while not queue.empty():
                        target = queue.get_nowait()
                        response = await http.get(target)
                        if response.status_code != expected[target]:
                            wrong.append((target, response.status_code))

                await asyncio.gather(*(worker() for _ in range(16)))
            return wrong

        assert asyncio.run(run()) == []
        assert server.is_running()


# --- no request lost to SIGTERM on a kept-alive connection -------------------------------


async def _keep_alive_loop(
    host: str, port: int, signalled: asyncio.Event, outcome: Counter[str]
) -> None:
    """One client sending request after request on one connection, as fast as answered."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            after_signal = signalled.is_set()
            try:
                writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                # The request went out and the connection ended without an answer.
                outcome["eof without response"] += 1
                return
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            assert body == b'{"ok":true}', body
            outcome["answered after the signal" if after_signal else "answered"] += 1
            if b"\r\nconnection: close\r\n" in head.lower():
                outcome["told to close"] += 1
                return
    finally:
        writer.close()


@pytest.mark.parametrize("run", range(10))
def test_sigterm_loses_no_request_on_20_keep_alive_loops(
    server_factory: ServerFactory, run: int
) -> None:
    # Before: with 20 clients looping on keep-alive connections, SIGTERM left connections
    # with a request sent and answered by EOF (hyper closed idle keep-alive connections at
    # once, racing the next request). Now every connection ends with a response that says
    # `Connection: close`: 0 EOF-without-response, in each of 10 runs.
    outcome: Counter[str] = Counter()
    with server_factory.serve(LOAD_APP, make_config(server="shutdown_grace = 5")) as server:

        async def clients() -> None:
            signalled = asyncio.Event()
            loops = [
                asyncio.create_task(_keep_alive_loop(server.host, server.port, signalled, outcome))
                for _ in range(20)
            ]
            await asyncio.sleep(0.3 + 0.02 * run)
            server.proc.send_signal(signal.SIGTERM)
            signalled.set()
            await asyncio.wait_for(asyncio.gather(*loops), timeout=10)

        asyncio.run(clients())
        returncode = server.proc.wait(10)
    print(f"figure: run {run}: {dict(outcome)}")
    assert returncode == 0, server.stderr_text()
    assert outcome["eof without response"] == 0, outcome
    assert outcome["told to close"] == 20, outcome
    assert outcome["answered"] > 0, outcome


def test_sigterm_over_h2_answers_every_stream_up_to_the_goaway(
    server_factory: ServerFactory,
) -> None:
    # HTTP/2: the GOAWAY names the last stream the server accepted; each of those is answered,
    # and none after it is.
    from tests.h2client import H2Client

    with server_factory.serve(LOAD_APP, make_config(server="shutdown_grace = 5")) as server:
        clients = [H2Client(server.host, server.port) for _ in range(5)]
        stop = threading.Event()

        def loop(client: H2Client) -> None:
            while not stop.is_set() and not client.goaway_frames and not client.closed:
                ids = [client.request("/ok") for _ in range(3)]
                for stream_id in ids:
                    client.response(stream_id, timeout=5)
            client.wait(lambda: client.closed, timeout=10)

        threads = [threading.Thread(target=loop, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(15)
        stop.set()
        returncode = server.proc.wait(10)
    assert returncode == 0, server.stderr_text()
    answered = 0
    for client in clients:
        assert client.goaway_frames, "no GOAWAY"
        last = client.goaway_frames[-1][0]
        for stream_id, stream in client.streams.items():
            if stream_id <= last:
                assert stream.ended and stream.status == 200, (stream_id, last, stream)
                answered += 1
            else:
                assert stream.status is None, (stream_id, last, stream)
        client.close()
    assert answered > 0
