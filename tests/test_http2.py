"""HTTP/2 with prior knowledge (h2c) is served beside HTTP/1.1 on the same port."""

import json
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.h2client import H2Client
from tests.harness import Server, ServerFactory

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = struct.pack(">I", 0)[1:] + bytes([0x4, 0x0]) + struct.pack(">I", 0)


def test_h2c_prior_knowledge_gets_a_settings_frame(example_server: Server) -> None:
    with socket.create_connection((example_server.host, example_server.port), timeout=5) as sock:
        sock.sendall(PREFACE + EMPTY_SETTINGS)
        header = b""
        while len(header) < 9:
            chunk = sock.recv(9 - len(header))
            assert chunk, "connection closed before the server's first frame"
            header += chunk
    length = int.from_bytes(header[:3], "big")
    frame_type, stream = header[3], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
    assert frame_type == 0x4, f"expected a SETTINGS frame, got type {frame_type}"
    assert stream == 0
    assert length % 6 == 0


@pytest.mark.parametrize("split", [1, 5, 14, 16, 23], ids=lambda split: f"split-at-{split}")
def test_preface_arriving_in_two_pieces_is_still_http2(example_server: Server, split: int) -> None:
    # The host tells the protocols apart from the first bytes a client sends; a preface cut
    # short (too short to tell, or long enough) must still reach the HTTP/2 server.
    with socket.create_connection((example_server.host, example_server.port), timeout=5) as sock:
        sock.sendall(PREFACE[:split])
        time.sleep(0.1)
        sock.sendall(PREFACE[split:] + EMPTY_SETTINGS)
        header = b""
        while len(header) < 9:
            chunk = sock.recv(9 - len(header))
            assert chunk, "connection closed before the server's first frame"
            header += chunk
    assert header[3] == 0x4, f"expected a SETTINGS frame, got type {header[3]}"


# --- Host and :authority (RFC 9113 8.3.1): the same rules as HTTP/1.1 ----------------------

WHOAMI_APP = {
    "app.py": """
        from pyhost import Router

        router = Router()


        @router.get("/whoami")
        async def whoami(request):
            return {"url": request.url, "host": request.headers.getlist("host")}
    """,
}


@pytest.fixture(scope="module")
def whoami(server_factory: ServerFactory) -> Iterator[Server]:
    with server_factory.serve(WHOAMI_APP) as server:
        yield server


def h2_get(server: Server, **kwargs: Any) -> tuple[int | None, Any]:
    with H2Client(server.host, server.port) as client:
        stream = client.response(client.request("/whoami?q=1", **kwargs))
    assert stream.ended, f"no complete response: {stream}"
    return stream.status, json.loads(stream.body)


def test_h2_authority_alone_names_the_host(whoami: Server) -> None:
    status, body = h2_get(whoami, authority="a.test:8080")
    assert status == 200, body
    assert body == {"url": "http://a.test:8080/whoami?q=1", "host": ["a.test:8080"]}


def test_h2_host_alone_names_the_host(whoami: Server) -> None:
    status, body = h2_get(whoami, authority=None, extra=[("host", "h.test")])
    assert status == 200, body
    assert body == {"url": "http://h.test/whoami?q=1", "host": ["h.test"]}


def test_h2_authority_and_host_that_agree_are_one_host(whoami: Server) -> None:
    status, body = h2_get(whoami, authority="a.test", extra=[("host", "A.TEST")])
    assert status == 200, body
    assert body["host"] == ["a.test"]


@pytest.mark.parametrize(
    ("authority", "extra"),
    [
        (None, []),
        ("a.test", [("host", "b.test")]),
        (None, [("host", "a.test"), ("host", "a.test")]),
        ("a.test", [("host", "a.test"), ("host", "a.test")]),
        (None, [("host", "")]),
        ("u@a.test", []),
    ],
    ids=["neither", "disagreeing", "two-hosts", "authority-two-hosts", "empty-host", "userinfo"],
)
def test_h2_request_without_one_clear_host_gets_400(
    whoami: Server, authority: str | None, extra: list[tuple[str, str]]
) -> None:
    with H2Client(whoami.host, whoami.port) as client:
        stream = client.response(client.request("/whoami", authority=authority, extra=extra))
    # 400 from the host, or the stream refused by the HTTP/2 layer itself: never served.
    if stream.status is not None:
        assert stream.status == 400, bytes(stream.body)
        assert "detail" in json.loads(stream.body)
    else:
        assert stream.reset is not None, f"neither a response nor a reset: {stream}"
