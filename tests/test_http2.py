"""HTTP/2 with prior knowledge (h2c) is served beside HTTP/1.1 on the same port."""

import socket
import struct
import time

import pytest

from tests.harness import Server

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
