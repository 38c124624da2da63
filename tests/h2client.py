"""A bare HTTP/2 (h2c, prior knowledge) client over a plain socket, built on the `h2` package.

For the tests that need what an HTTP client library would not do: requests without
`:authority` or with two `Host` headers, a flow-control window left at zero, watching for a
GOAWAY and its last stream id.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame


@dataclass
class Stream:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None


class H2Client:
    """One h2c connection. `window` sets SETTINGS_INITIAL_WINDOW_SIZE (0: the server may send
    no DATA at all); received DATA is acknowledged only when `acknowledge` is set."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        window: int | None = None,
        acknowledge: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.authority = f"{host}:{port}"
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding="utf-8",
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.acknowledge = acknowledge
        self.streams: dict[int, Stream] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.goaway_frames: list[tuple[int, int]] = []
        """Every GOAWAY, as (last stream id, error code): a graceful shutdown sends two."""
        self._buffer = bytearray()
        self.closed_for_writing = False
        self.closed = False
        self.max_concurrent_streams: int | None = None
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._send(data)

    def _send(self, data: bytes) -> None:
        # A server that has closed may still have frames in our buffer to read: a failed
        # write must not stop the reading.
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed_for_writing = True

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        authority: str | None = "",
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> int:
        """Send a request; `authority=""` means this connection's own, `None` none at all."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":path", path)]
        if authority is not None:
            headers.append((":authority", authority or self.authority))
        headers += list(extra)
        self.conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.streams[stream_id] = Stream()
        self.flush()
        return stream_id

    def receive(self, timeout: float) -> bool:
        """Read once (up to `timeout`) and handle the events; False when the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                break
            raw = bytes(self._buffer[: 9 + length])
            del self._buffer[: 9 + length]
            if self.goaway is None:
                for event in self.conn.receive_data(raw):
                    self._handle(event)
            else:
                # The h2 package takes nothing after a GOAWAY, but a server's graceful
                # shutdown goes on: its PING is to be answered, the streams it kept finish,
                # and a second GOAWAY names the last one.
                self._after_goaway(raw)
        self.flush()
        return True

    def _after_goaway(self, raw: bytes) -> None:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9 : 9 + length]))
        stream = self.streams.setdefault(frame.stream_id, Stream()) if frame.stream_id else None
        if isinstance(frame, hyperframe.frame.PingFrame) and "ACK" not in frame.flags:
            ack = hyperframe.frame.PingFrame(0, frame.opaque_data)
            ack.flags.add("ACK")
            self._send(ack.serialize())
        elif isinstance(frame, hyperframe.frame.GoAwayFrame):
            self.goaway_frames.append((frame.last_stream_id, frame.error_code))
        elif isinstance(frame, hyperframe.frame.HeadersFrame) and stream is not None:
            for name, value in self.conn.decoder.decode(frame.data):
                name, value = (
                    name.decode() if isinstance(name, bytes) else name,
                    value.decode() if isinstance(value, bytes) else value,
                )
                if name == ":status":
                    stream.status = int(value)
                else:
                    stream.headers.append((name, value))
            stream.ended = stream.ended or "END_STREAM" in frame.flags
        elif isinstance(frame, hyperframe.frame.DataFrame) and stream is not None:
            stream.body += frame.data
            stream.ended = stream.ended or "END_STREAM" in frame.flags
            if self.acknowledge and length:
                for stream_id in (0, frame.stream_id):
                    update = hyperframe.frame.WindowUpdateFrame(stream_id, length)
                    self._send(update.serialize())
        elif isinstance(frame, hyperframe.frame.RstStreamFrame) and stream is not None:
            stream.reset = frame.error_code

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.setdefault(event.stream_id, Stream())
            for name, value in event.headers:
                if name == ":status":
                    stream.status = int(value)
                else:
                    stream.headers.append((name, value))
        elif isinstance(event, h2.events.DataReceived):
            self.streams.setdefault(event.stream_id, Stream()).body += event.data
            if self.acknowledge:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.streams.setdefault(event.stream_id, Stream()).ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.streams.setdefault(event.stream_id, Stream()).reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
            self.goaway_frames.append((event.last_stream_id, event.error_code))
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            setting = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
            if setting is not None:
                self.max_concurrent_streams = setting.new_value

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Handle events until `predicate()` holds, the server closes, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return predicate()
            self.receive(min(remaining, 0.5))
        return True

    def response(self, stream_id: int, timeout: float = 10.0) -> Stream:
        stream = self.streams[stream_id]
        self.wait(lambda: stream.ended or stream.reset is not None, timeout)
        return stream

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
