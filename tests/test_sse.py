"""Server-sent events: the wire format (unit tests of `ServerSentEvent`), and real streams read
with `httpx-sse`, a real SSE client: events as they are produced, `Last-Event-ID`, pings while
the producer is idle, and a reconnecting client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from pyhost import EventSourceResponse, ServerSentEvent
from pyhost.sse import encode_event
from tests.harness import Server, ServerFactory, make_config, wait_until


def parse(stream: bytes) -> list[dict[str, str]]:
    """The events a client builds from `stream`, by the HTML standard's algorithm."""
    events: list[dict[str, str]] = []
    data: list[str] = []
    event = ""
    text = stream.decode()
    assert "\r" not in text
    for line in text.split("\n"):
        if not line:
            if data:
                events.append({"event": event or "message", "data": "\n".join(data)})
            data, event = [], ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    return events


@pytest.mark.parametrize(
    "data",
    ["plain", "two\nlines", "cr\rcr", "crlf\r\ncrlf", "mixed\r\n\r\n\n\rend", "", "trailing\n"],
)
def test_data_with_any_line_break_round_trips(data: str) -> None:
    wire = ServerSentEvent(data).encode()
    assert b"\r" not in wire
    assert wire.endswith(b"\n\n")
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse(wire) == [{"event": "message", "data": expected}]


def test_multi_line_data_is_several_data_lines() -> None:
    wire = ServerSentEvent("a\nb\r\nc", event="update", id="42", retry=3000).encode()
    assert wire == b"event: update\ndata: a\ndata: b\ndata: c\nid: 42\nretry: 3000\n\n"


def test_other_line_separators_stay_in_the_data() -> None:
    # Only CR and LF end lines in an event stream; U+2028 or a form feed are data.
    data = "a\u2028b\x0cc\x85d"
    assert parse(ServerSentEvent(data).encode()) == [{"event": "message", "data": data}]


def test_comments_and_data_that_is_not_text() -> None:
    assert ServerSentEvent(comment="one\ntwo").encode() == b": one\n: two\n\n"
    assert ServerSentEvent({"n": [1, 2]}).encode() == b'data: {"n":[1,2]}\n\n'
    assert encode_event("x\ny") == b"data: x\ndata: y\n\n"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"id": "a\nb"}, ValueError),
        ({"id": "a\rb"}, ValueError),
        ({"id": "a\0b"}, ValueError),
        ({"event": "x\ny"}, ValueError),
        ({"retry": -1}, ValueError),
        ({"retry": 1.5}, TypeError),
        ({"retry": True}, TypeError),
        ({"id": 7}, TypeError),
    ],
)
def test_fields_that_would_break_the_stream_are_refused(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        ServerSentEvent("data", **kwargs)  # type: ignore[arg-type]


def test_items_that_are_not_events_are_refused() -> None:
    with pytest.raises(TypeError, match="ServerSentEvent or str"):
        encode_event(42)


def test_the_response_head() -> None:
    response = EventSourceResponse(iter(()), ping=None, headers={"cache-control": "no-store"})
    assert response.media_type == "text/event-stream"
    assert response.headers["cache-control"] == "no-store"
    assert response._keepalive is None
    with pytest.raises(ValueError, match="ping"):
        EventSourceResponse(iter(()), ping=-1)


APP = {
    "app.py": """
        import asyncio

        from pyhost import EventSourceResponse, Router, ServerSentEvent

        router = Router()
        GATES = {}
        LOG = []


        def gate(name):
            return GATES.setdefault(name, asyncio.Event())


        @router.post("/release/{name}")
        async def release(request):
            gate(request.path_params["name"]).set()
            return {"ok": True}


        @router.get("/log")
        async def log(request):
            return LOG


        @router.get("/events")
        async def events(request):
            start = int(request.last_event_id or 0)
            LOG.append(f"last-event-id {request.last_event_id}")

            async def produce():
                for n in range(start + 1, start + 4):
                    yield ServerSentEvent(f"line one\\nline {n}", event="tick", id=str(n))
                yield "bye"

            return EventSourceResponse(produce())


        @router.get("/gated/{name}")
        async def gated(request):
            name = request.path_params["name"]

            async def produce():
                try:
                    yield ServerSentEvent("first", id="1")
                    await gate(name).wait()
                    yield ServerSentEvent("second", id="2")
                finally:
                    LOG.append(f"finally {name}")

            return EventSourceResponse(produce(), ping=0.2)


        @router.get("/quiet")
        async def quiet(request):
            async def produce():
                yield ServerSentEvent(comment="start")
                await asyncio.sleep(3600)

            return EventSourceResponse(produce(), ping=None)


        @router.get("/retry")
        async def retry(request):
            return EventSourceResponse([ServerSentEvent(retry=10), "x"])
    """,
}


@pytest.fixture(scope="module")
def server(pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    factory = ServerFactory(pyhost_bin, tmp_path_factory)
    with factory.serve(APP, make_config(server="stream_idle_timeout = 1")) as running:
        yield running


def log(server: Server) -> list[str]:
    with server.client() as client:
        entries: list[str] = client.get("/log").json()
        return entries


def test_a_real_sse_client_reads_the_events(server: Server) -> None:
    with server.client() as client, connect_sse(client, "GET", "/events") as source:
        assert source.response.headers["content-type"] == "text/event-stream"
        assert source.response.headers["cache-control"] == "no-cache"
        events = list(source.iter_sse())
    assert [(e.event, e.data, e.id) for e in events] == [
        ("tick", "line one\nline 1", "1"),
        ("tick", "line one\nline 2", "2"),
        ("tick", "line one\nline 3", "3"),
        ("message", "bye", "3"),
    ]
    assert "last-event-id None" in log(server)


def test_last_event_id_reaches_the_handler(server: Server) -> None:
    with (
        server.client() as client,
        connect_sse(client, "GET", "/events", headers={"Last-Event-ID": "41"}) as source,
    ):
        events = list(source.iter_sse())
    assert [e.id for e in events] == ["42", "43", "44", "44"]
    assert "last-event-id 41" in log(server)


def test_events_arrive_as_produced_with_pings_while_idle(server: Server) -> None:
    with server.client() as client, client.stream("GET", "/gated/pings") as response:
        lines = response.iter_lines()
        assert next(lines) == "data: first"
        assert next(lines) == "id: 1"
        assert next(lines) == ""
        # The producer waits on the gate; the host keeps the stream alive meanwhile, past the
        # server's stream_idle_timeout (1 s), which a stream with pings is exempt from.
        pings = 0
        for line in lines:
            if line == ": ping":
                pings += 1
                if pings == 8:
                    break
        assert "finally pings" not in log(server)
        with server.client() as other:
            other.post("/release/pings")
        rest = list(lines)
    assert "data: second" in rest
    assert wait_until(lambda: "finally pings" in log(server), 5)


def test_a_stream_without_pings_is_subject_to_the_idle_timeout(server: Server) -> None:
    with (
        server.client() as client,
        client.stream("GET", "/quiet") as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for _ in response.iter_raw():
            pass


def test_a_sync_iterable_of_events(server: Server) -> None:
    with server.client() as client, connect_sse(client, "GET", "/retry") as source:
        events = list(source.iter_sse())
    assert [(e.data, e.retry) for e in events] == [("", 10), ("x", None)]


def test_a_client_that_leaves_stops_the_producer(server: Server) -> None:
    with server.client() as client, connect_sse(client, "GET", "/gated/leaver") as source:
        first = next(source.iter_sse())
        assert first.data == "first"
    assert wait_until(lambda: "finally leaver" in log(server), 5)
