"""Connections are bounded and reaped: the open-files limit is raised at start, at most
`max_connections` are served at once (the rest wait in the listen backlog, the accept loop
idle), idle HTTP/2 connections get a GOAWAY after the keep-alive timeout, and running out of
descriptors makes the accept loop back off with one warning instead of spinning."""

import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.h2client import H2Client
from tests.harness import Server, ServerFactory, make_config

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])

APP = {
    "app.py": """
        import asyncio
        import os

        from pyhost import Query, Router

        router = Router()
        hogged = []


        @router.get("/health")
        async def health(request):
            return {"ok": True}


        @router.get("/slow", query={"seconds": Query(float)})
        async def slow(request):
            await asyncio.sleep(request.query["seconds"])
            return {"slept": request.query["seconds"]}


        @router.get("/hog")
        def hog(request):
            # Takes every free descriptor, as a handler leaking files would.
            try:
                while True:
                    hogged.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                pass
            return {"hogged": len(hogged)}


        @router.get("/release")
        def release(request):
            while hogged:
                os.close(hogged.pop())
            return {"released": True}
    """,
}


def nofile(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accept_warnings(server: Server) -> int:
    return server.stderr_text().count("accept failed")


def open_idle_h2c(server: Server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(PREFACE + EMPTY_SETTINGS)
    return sock


def test_check_reports_the_open_files_limit_raised_to_the_hard_limit(
    server_factory: ServerFactory,
) -> None:
    config = server_factory.write_app(APP)
    result = server_factory.run("check", "--config", str(config), preexec_fn=nofile(256, 1024))
    assert result.returncode == 0, result.describe()
    assert "open files:  1024 (raised from 256 to the hard limit 1024)" in result.stdout, (
        result.describe()
    )


def test_serve_names_its_connection_limit_under_the_open_files_limit(
    server_factory: ServerFactory,
) -> None:
    # 256 descriptors, 64 kept back for the process's own files: 192 connections.
    with server_factory.serve(APP, preexec_fn=nofile(256, 256)) as server:
        log = server.wait_for_stderr("connections (open files limit")
        assert "up to 192 connections (open files limit 256)" in log, log


def test_idle_h2c_connections_get_a_goaway_after_the_keep_alive_timeout(
    server_factory: ServerFactory,
) -> None:
    # Before: 5,000 idle h2c connections stayed open indefinitely. Now each gets a GOAWAY
    # naming the last stream it had (0 for none) once idle for header_timeout (1 s here),
    # within a quarter more, and is closed.
    config = make_config(server="header_timeout = 1")
    with server_factory.serve(APP, config) as server:
        clients = [H2Client(server.host, server.port) for _ in range(20)]
        try:
            for client in clients[:10]:
                stream = client.response(client.request("/health"))
                assert stream.status == 200
            busy = H2Client(server.host, server.port)
            slow = busy.request("/slow?seconds=2.5")
            started = time.monotonic()
            closed_after: list[float] = []
            for client in clients:
                assert client.wait(lambda c=client: c.closed, timeout=5), "never closed"
                closed_after.append(time.monotonic() - started)
            for index, client in enumerate(clients):
                # h2's graceful shutdown: a GOAWAY naming no stream, a PING, then the last one.
                assert client.goaway_frames, "closed without a GOAWAY"
                last_stream, error = client.goaway_frames[-1]
                assert (last_stream, error) == (1 if index < 10 else 0, 0), client.goaway_frames
            # Idle for 1 s (the ten that made a request did so just before `started`).
            print(f"figure: idle h2c closed after {min(closed_after):.2f}-{max(closed_after):.2f}s")
            assert max(closed_after) < 2.0, closed_after
            # A connection with a stream open is not idle, however long the stream takes.
            stream = busy.response(slow, timeout=5)
            assert stream.status == 200, stream
            assert all(last >= slow for last, _ in busy.goaway_frames), busy.goaway_frames
            busy.close()
        finally:
            for client in clients:
                client.close()


def test_connections_beyond_max_connections_wait_in_the_backlog(
    server_factory: ServerFactory,
) -> None:
    # Before: at an open-files limit of 1,024, about 1,100 idle h2c connections made new
    # clients wait forever while the accept loop logged 20 warnings a second. Now, at 256
    # descriptors (192 connections), 250 idle h2c connections leave the accept loop idle, and
    # a new client is served as soon as the idle ones are reaped (header_timeout = 1).
    config = make_config(server="header_timeout = 1")
    with server_factory.serve(APP, config, preexec_fn=nofile(256, 256)) as server:
        idle = [open_idle_h2c(server) for _ in range(250)]
        try:
            time.sleep(0.3)
            cpu_before = cpu_seconds(server.proc.pid)
            asked = time.monotonic()
            with server.client(timeout=10) as http:
                response = http.get("/health")
            waited = time.monotonic() - asked
            assert response.status_code == 200
            cpu = cpu_seconds(server.proc.pid) - cpu_before
            print(f"figure: new client served after {waited:.2f}s, server CPU {cpu:.2f}s")
            assert waited < 4.0, f"a new client waited {waited:.1f}s"
            assert cpu < 0.5, f"{cpu:.2f}s of CPU while waiting: the accept loop spun"
            assert accept_warnings(server) == 0, server.stderr_text()
            # The ones left in the backlog are served (and reaped) too.
            for sock in idle:
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
        finally:
            for sock in idle:
                sock.close()
        assert server.is_running()


def test_out_of_descriptors_the_accept_loop_backs_off_with_one_warning(
    server_factory: ServerFactory,
) -> None:
    # A handler takes every free descriptor: accepting fails with EMFILE. The loop must pause
    # (not spin), warn once, and serve again once descriptors are free.
    with server_factory.serve(APP, preexec_fn=nofile(256, 256)) as server:
        with server.client() as keeper:  # a connection opened before the descriptors run out
            assert keeper.get("/health").status_code == 200
            assert keeper.get("/hog").json()["hogged"] > 0
            cpu_before = cpu_seconds(server.proc.pid)
            results: list[int | str] = []

            def knock() -> None:
                try:
                    with server.client(timeout=15) as http:
                        results.append(http.get("/health").status_code)
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

            knockers = [threading.Thread(target=knock) for _ in range(5)]
            for thread in knockers:
                thread.start()
            time.sleep(2.0)
            cpu = cpu_seconds(server.proc.pid) - cpu_before
            print(f"figure: {cpu:.2f}s of CPU in 2 s of EMFILE, {accept_warnings(server)} warning")
            assert cpu < 0.5, f"{cpu:.2f}s of CPU in 2 s without descriptors: the loop spun"
            assert accept_warnings(server) == 1, server.stderr_text()
            assert keeper.get("/release").json() == {"released": True}
            for thread in knockers:
                thread.join(15)
        assert results == [200] * 5, results
        assert accept_warnings(server) == 1, server.stderr_text()


@pytest.fixture(autouse=True)
def _enough_descriptors_here() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 600:
        pytest.skip(f"the test process itself needs more than {soft} descriptors")
