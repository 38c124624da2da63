"""Graceful shutdown on SIGTERM / SIGINT: in-flight requests finish, new connections are refused."""

import signal
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import pytest

from tests.harness import Server, ServerFactory, make_config, wait_until

SLOW_APP = {
    "app.py": """
        import asyncio

        from pyhost import Query, Router

        router = Router()
        state = {"in_flight": 0}


        @router.get("/slow", query={"seconds": Query(float, default=1.5)})
        async def slow(request):
            state["in_flight"] += 1
            try:
                await asyncio.sleep(request.query["seconds"])
            finally:
                state["in_flight"] -= 1
            return {"done": True, "slept": request.query["seconds"]}


        @router.get("/in-flight")
        async def in_flight(request):
            return {"in_flight": state["in_flight"]}
    """,
}


def in_flight(server: Server) -> int:
    with server.client() as http:
        count = http.get("/in-flight").json()["in_flight"]
    assert isinstance(count, int)
    return count


def connection_refused(server: Server) -> bool:
    """Whether a new connection is turned away (refused, or reset by a closing listener)."""
    try:
        with socket.create_connection((server.host, server.port), timeout=1):
            return False
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def start_slow_request(server: Server, seconds: float) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            with server.client(timeout=30.0) as http:
                result["response"] = http.get("/slow", params={"seconds": seconds})
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert wait_until(lambda: in_flight(server) == 1, timeout=5), "the slow request never started"
    return thread, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_in_flight_request_completes_and_new_connections_are_refused(
    server_factory: ServerFactory, sig: signal.Signals
) -> None:
    grace = 5.0
    config = make_config(server=f"shutdown_grace = {grace}")
    with server_factory.serve(SLOW_APP, config) as server:
        thread, result = start_slow_request(server, seconds=2.0)
        signalled = time.monotonic()
        server.proc.send_signal(sig)

        # The listener closes right away while the slow request is still running.
        assert wait_until(lambda: connection_refused(server), timeout=1.0, interval=0.05), (
            "new connections were still accepted 1 s after the signal"
        )
        assert thread.is_alive(), "the slow request was cut short"

        thread.join(15)
        assert "error" not in result, f"the in-flight request failed: {result.get('error')!r}"
        response: httpx.Response = result["response"]
        assert response.status_code == 200
        assert response.json() == {"done": True, "slept": 2.0}

        returncode = server.proc.wait(grace + 5)
        elapsed = time.monotonic() - signalled
        assert returncode == 0, server.stderr_text()
        assert elapsed < grace + 2, f"took {elapsed:.1f}s to exit"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_exits_0_promptly(server_factory: ServerFactory, sig: signal.Signals) -> None:
    with server_factory.serve(SLOW_APP) as server:
        with server.client() as http:  # leave an idle keep-alive connection open
            assert http.get("/in-flight").status_code == 200
            started = time.monotonic()
            server.proc.send_signal(sig)
            returncode = server.proc.wait(10)
        assert returncode == 0, server.stderr_text()
        assert time.monotonic() - started < 3


def test_requests_outliving_the_grace_period_do_not_keep_the_server_up(
    server_factory: ServerFactory,
) -> None:
    config = make_config(server="shutdown_grace = 0.5")
    with server_factory.serve(SLOW_APP, config) as server:
        thread, _ = start_slow_request(server, seconds=30.0)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail("still running 5 s after SIGTERM with shutdown_grace = 0.5")
        assert time.monotonic() - signalled < 4
        thread.join(10)


def test_connections_waiting_in_the_backlog_are_answered_not_reset(
    server_factory: ServerFactory,
) -> None:
    # With the one connection slot taken by a request in flight, the next connections wait in
    # the kernel's backlog, their requests sent. Closing the listener on SIGTERM reset them;
    # now they are taken and answered (with Connection: close) before it closes.
    config = make_config(server="max_connections = 1\nshutdown_grace = 10")
    with server_factory.serve(SLOW_APP, config) as server:
        sockets = []
        for path in ["/slow?seconds=1.5", "/in-flight", "/in-flight", "/in-flight"]:
            sock = socket.create_connection((server.host, server.port), timeout=10)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            sockets.append(sock)
            time.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        answers = []
        for sock in sockets:
            with sock:
                data = b""
                try:
                    while chunk := sock.recv(4096):
                        data += chunk
                except OSError as exc:
                    data = repr(exc).encode()
                answers.append(data)
        for answer in answers:
            head = answer.split(b"\r\n\r\n", 1)[0].lower()
            assert head.startswith(b"http/1.1 200"), answer[:200]
            assert b"connection: close" in head, answer[:200]
        assert b'"done":true' in answers[0].replace(b" ", b"")
        assert server.proc.wait(10) == 0, server.stderr_text()
