"""Forms (`await request.form()`, `form=` routes), over real sockets against the binary.

The handler package is `tests/apps/uploads`; the server runs with small form limits
(`LIMITS`) and a temporary directory of its own, where the tests watch spooled files come and
go. A file over the spool threshold (1 MiB, the default) goes to disk as it arrives, so a
64 MiB upload grows the server's memory by less than `FORM_RSS_BOUND`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import PeakRss, Server, parse_response, wait_until
from tests.uploads import connect, head, read_response, spooled, uploads_server

MIB = 1024 * 1024
LIMITS = """
body_timeout = 5
form_max_parts = 20
form_max_field_size = "16 KiB"
form_max_file_size = "80 MiB"
"""
FORM_RSS_BOUND = 16 * MIB
"""How much the server's memory may grow while a 64 MiB file is uploaded to a form route:
the file is written to disk as it arrives, a chunk at a time (a few chunks in flight, and the
2 MiB buffer of the file being written)."""


@pytest.fixture(scope="module")
def served_with_spool(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    with uploads_server(pyhost_bin, tmp_path_factory, LIMITS) as running:
        yield running


@pytest.fixture
def served(served_with_spool: tuple[Server, Path]) -> Server:
    return served_with_spool[0]


@pytest.fixture
def spool(served_with_spool: tuple[Server, Path]) -> Path:
    return served_with_spool[1]


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    with server.client(timeout=120) as http:
        return http.post(path, **kwargs)


def multipart(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (name, filename, data) parts."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
        out += b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def test_fields_and_several_files_are_parsed(served: Server, spool: Path) -> None:
    small = os.urandom(1000)
    medium = os.urandom(200_000)
    answered = post(
        served,
        "/form",
        data={"title": "holiday", "tags": ["a", "b"]},
        files=[
            ("photo", ("beach.jpg", small, "image/jpeg")),
            ("photo", ("sunset.png", medium, "image/png")),
            ("notes", ("notes.txt", b"", "text/plain")),
        ],
    )
    assert answered.status_code == 200, answered.text
    fields = answered.json()["fields"]
    texts = [[name, value] for name, value in fields if isinstance(value, str)]
    assert texts == [["title", "holiday"], ["tags", "a"], ["tags", "b"]]
    files = {value["filename"]: value for name, value in fields if isinstance(value, dict)}
    assert [name for name, value in fields if isinstance(value, dict)] == [
        "photo",
        "photo",
        "notes",
    ]
    assert files["beach.jpg"]["content_type"] == "image/jpeg"
    assert files["beach.jpg"]["size"] == files["beach.jpg"]["read"] == 1000
    assert files["beach.jpg"]["sha256"] == hashlib.sha256(small).hexdigest()
    assert files["sunset.png"]["sha256"] == hashlib.sha256(medium).hexdigest()
    assert files["notes.txt"]["size"] == 0
    assert all(file["in_memory"] for file in files.values())
    assert spooled(spool) == []


def test_a_large_file_is_spooled_to_disk_and_removed_after_the_request(
    served: Server, spool: Path
) -> None:
    data = os.urandom(3 * MIB)
    answered = post(served, "/form", files={"upload": ("big.bin", data, "application/x-raw")})
    assert answered.status_code == 200, answered.text
    ((name, file),) = answered.json()["fields"]
    assert name == "upload"
    assert file["size"] == file["read"] == 3 * MIB
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert not file["in_memory"]
    assert file["on_disk"]
    assert Path(file["path"]).parent == spool
    assert wait_until(lambda: not Path(file["path"]).exists(), 5)
    assert spooled(spool) == []


def test_a_large_file_upload_keeps_memory_bounded(served: Server, spool: Path) -> None:
    size = 64 * MIB
    block = os.urandom(MIB)
    boundary = "bounded-memory-boundary"
    prefix = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    suffix = f"\r\n--{boundary}--\r\n".encode()
    length = len(prefix) + size + len(suffix)

    def body() -> Iterator[bytes]:
        yield prefix
        for _ in range(size // MIB):
            yield block
        yield suffix

    assert post(served, "/form", files={"warm": ("w", block * 2)}).status_code == 200
    time.sleep(0.3)
    with PeakRss(served) as memory:
        answered = post(
            served,
            "/form?read=false",
            content=body(),
            headers={
                "content-type": f"multipart/form-data; boundary={boundary}",
                "content-length": str(length),
            },
        )
    assert answered.status_code == 200, answered.text
    ((_, file),) = answered.json()["fields"]
    assert file["size"] == size
    assert not file["in_memory"]
    grew = memory.peak - memory.baseline
    assert grew < FORM_RSS_BOUND, f"RSS grew by {grew / MIB:.1f} MiB during a 64 MiB upload"
    assert wait_until(lambda: spooled(spool) == [], 5)


def test_urlencoded_forms_are_parsed(served: Server) -> None:
    for path in ("/form", "/lazy-form"):
        answered = post(served, path, data={"q": "fish & chips", "n": ["1", "2"]})
        assert answered.status_code == 200, answered.text
        assert answered.json() == {"fields": [["q", "fish & chips"], ["n", "1"], ["n", "2"]]}


def test_a_form_on_an_undeclared_route_is_parsed_on_demand(served: Server) -> None:
    data = os.urandom(2 * MIB // 3)
    answered = post(
        served, "/lazy-form", data={"a": "1"}, files={"f": ("f.bin", data, "application/x-raw")}
    )
    assert answered.status_code == 200, answered.text
    (field, (name, file)) = answered.json()["fields"]
    assert field == ["a", "1"]
    assert name == "f"
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["in_memory"]
    assert post(served, "/lazy-form").json() == {"fields": []}


def test_too_many_parts_are_refused(served: Server) -> None:
    fields = {f"f{index}": "x" for index in range(21)}
    for path in ("/form", "/lazy-form"):
        answered = post(served, path, data=fields)
        assert answered.status_code == 413
        assert answered.json()["detail"] == "Too many form parts: the limit is 20"
    answered = post(served, "/form", files=[("f", (f"{i}.txt", b"x")) for i in range(21)])
    assert answered.status_code == 413


def test_an_oversize_field_is_refused(served: Server) -> None:
    answered = post(served, "/form", files={"note": (None, b"n" * (16 * 1024 + 1))})
    assert answered.status_code == 413
    assert answered.json()["detail"] == 'Form field "note" too large: the limit is 16384 bytes'
    answered = post(served, "/form", data={"note": "n" * (16 * 1024 + 1)})
    assert answered.status_code == 413
    assert post(served, "/form", data={"note": "n" * (16 * 1024)}).status_code == 200


def test_an_oversize_file_is_refused_and_its_spool_removed(served: Server, spool: Path) -> None:
    answered = post(served, "/form", files={"f": ("f.bin", b"f" * (80 * MIB + 1))})
    assert answered.status_code == 413
    assert answered.json()["detail"] == 'File "f" too large: the limit is 83886080 bytes'
    assert wait_until(lambda: spooled(spool) == [], 5)


def test_declared_form_fields_are_validated_before_the_handler(served: Server) -> None:
    good = post(served, "/declared", data={"name": "Ada", "age": "36", "tags": ["x", "y"]})
    assert good.status_code == 200, good.text
    assert good.json() == {
        "params": {"name": "Ada", "age": 36, "tags": ["x", "y"]},
        "page": 1,
        "keys": ["name", "age", "tags"],
    }
    multipart_good = post(served, "/declared", files={"name": (None, b"Bob"), "age": (None, b"0")})
    assert multipart_good.json()["params"] == {"name": "Bob", "age": 0, "tags": []}

    bad = post(served, "/declared", data={"name": "A", "age": "-1"})
    assert bad.status_code == 422
    locs = sorted(tuple(entry["loc"]) for entry in bad.json()["detail"])
    assert locs == [("form", "age"), ("form", "name")]
    missing = post(served, "/declared", data={"age": "1"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["form", "name"]
    assert missing.json()["detail"][0]["type"] == "missing"
    as_file = post(served, "/declared", files={"name": ("n.txt", b"Ada"), "age": (None, b"1")})
    assert as_file.status_code == 422
    assert as_file.json()["detail"][0]["msg"] == "Expected a text field, got a file"
    bad_query = post(served, "/declared?page=x", data={"name": "Ada", "age": "1"})
    assert bad_query.status_code == 422
    assert bad_query.json()["detail"][0]["loc"] == ["query", "page"]


def test_a_body_that_is_not_a_form_is_refused(served: Server) -> None:
    answered = post(served, "/form", json={"a": 1})
    assert answered.status_code == 415
    assert "expects a form" in answered.json()["detail"]
    answered = post(served, "/lazy-form", json={"a": 1})
    assert answered.status_code == 415


def test_malformed_multipart_is_a_400(served: Server, spool: Path) -> None:
    body = multipart("right", ("a", None, b"1"), ("f", "f.bin", b"x" * 5000))
    cases = {
        "a boundary the body does not use": ("multipart/form-data; boundary=wrong", body),
        "no boundary": ("multipart/form-data", body),
        "a truncated body": ("multipart/form-data; boundary=right", body[: len(body) // 2]),
        "no closing boundary": ("multipart/form-data; boundary=right", body[:-10]),
        "a part without a name": (
            "multipart/form-data; boundary=right",
            b"--right\r\nContent-Disposition: form-data\r\n\r\nx\r\n--right--\r\n",
        ),
        "garbage headers": (
            "multipart/form-data; boundary=right",
            b"--right\r\n\x00\x01\x02 nonsense\r\n\r\nx\r\n--right--\r\n",
        ),
    }
    for what, (content_type, content) in cases.items():
        for path in ("/form", "/lazy-form"):
            answered = post(served, path, content=content, headers={"content-type": content_type})
            assert answered.status_code == 400, (what, path, answered.text)
            assert answered.json()["detail"].startswith("Malformed form"), (what, answered.text)
    assert spooled(spool) == []


def test_spooled_files_are_removed_when_the_handler_raises(served: Server, spool: Path) -> None:
    answered = post(served, "/form-raises", files={"f": ("f.bin", b"r" * (2 * MIB))})
    assert answered.status_code == 500
    with served.client() as http:
        (path,) = http.get("/progress").json()["paths"]
    assert path is not None
    assert wait_until(lambda: spooled(spool) == [], 5)


def test_spooled_files_are_removed_when_the_client_leaves_mid_upload(
    served: Server, spool: Path
) -> None:
    boundary = "leaving"
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="f.bin"\r\n\r\n'
    ).encode()
    sock = connect(served)
    try:
        sock.sendall(
            head(
                served,
                "POST",
                "/form",
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(64 * MIB),
                },
            )
        )
        sock.sendall(start + b"l" * (4 * MIB))
        # The file is past the spool threshold: it is on disk, half-written.
        assert wait_until(lambda: len(spooled(spool)) == 1, 10)
    finally:
        sock.close()
    assert wait_until(lambda: spooled(spool) == [], 10)


def test_spooled_files_are_removed_when_the_client_leaves_a_waiting_handler(
    served: Server, spool: Path
) -> None:
    with served.client() as http:
        http.post("/reset")
    boundary = "waiting"
    body = multipart(boundary, ("f", "f.bin", b"w" * (2 * MIB)))
    sock = connect(served)
    try:
        sock.sendall(
            head(
                served,
                "POST",
                "/form-waits",
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(body)),
                },
            )
            + body
        )

        def handler_has_the_file() -> bool:
            with served.client() as http:
                return bool(http.get("/progress").json().get("paths"))

        assert wait_until(handler_has_the_file, 10)
        assert len(spooled(spool)) == 1
    finally:
        sock.close()
    assert wait_until(lambda: spooled(spool) == [], 10)


def test_a_declared_length_over_the_limit_is_refused_at_once(served: Server) -> None:
    sock = connect(served)
    try:
        sock.sendall(
            head(
                served,
                "POST",
                "/form-raises",
                {
                    "Content-Type": "multipart/form-data; boundary=x",
                    "Content-Length": str(65 * MIB),
                },
            )
        )
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert response.status == 413
    assert response.json()["detail"] == "Request body too large: the limit is 67108864 bytes"


def test_endless_part_headers_are_cut_off(served: Server) -> None:
    # Headers that never end (no blank line): the parser would buffer them whole, up to the
    # route's 256 MiB; the host stops after about 1 MiB.
    boundary = "endless"
    sock = connect(served)
    try:
        sock.sendall(
            head(
                served,
                "POST",
                "/form",
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(200 * MIB),
                },
            )
        )
        sock.sendall(f'--{boundary}\r\nContent-Disposition: form-data; name="a"\r\n'.encode())
        line = b"X-Padding: " + b"p" * 1000 + b"\r\n"
        sent = 0
        try:
            while sent < 50 * MIB:
                sock.sendall(line * 64)
                sent += len(line) * 64
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = parse_response(read_response(sock))
    finally:
        sock.close()
    assert sent < 50 * MIB
    assert response.status == 400
    assert "within 1048576 bytes" in response.json()["detail"]


def test_small_files_past_the_memory_budget_are_spooled(served: Server, spool: Path) -> None:
    # 20 files of 900 KiB, each under the spool threshold: 17.6 MiB together, past the 16 MiB
    # a form may keep in memory, so the last ones go to disk all the same.
    files = [("f", (f"{index}.bin", b"s" * (900 * 1024))) for index in range(20)]
    answered = post(served, "/form?read=false", files=files)
    assert answered.status_code == 200, answered.text
    in_memory = [value["in_memory"] for _, value in answered.json()["fields"]]
    assert in_memory[0] is True
    assert in_memory[-1] is False
    assert in_memory.count(True) == 18
    assert wait_until(lambda: spooled(spool) == [], 5)


def test_text_fields_past_the_memory_budget_are_refused(
    pyhost_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with uploads_server(pyhost_bin, tmp_path_factory, "") as (server, _spool):
        fields = [(f"t{index}", (None, b"t" * MIB)) for index in range(17)]
        answered = post(server, "/form", files=fields)
    assert answered.status_code == 413
    assert answered.json()["detail"] == (
        "Form fields too large together: the limit is 16777216 bytes of text"
    )


def test_spooled_files_are_removed_when_the_handler_times_out(served: Server, spool: Path) -> None:
    with served.client() as http:
        http.post("/reset")
    answered = post(served, "/form-times-out", files={"f": ("f.bin", b"t" * (2 * MIB))})
    assert answered.status_code == 504
    with served.client() as http:
        (path,) = http.get("/progress").json()["paths"]
    assert Path(path).parent == spool
    assert wait_until(lambda: spooled(spool) == [], 5)
