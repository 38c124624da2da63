import json
import re

import pytest

from pyhost import Headers, HTMLResponse, HTTPError, JSONResponse, PlainTextResponse, Response


def test_default_response_is_empty_bytes():
    response = Response()
    assert response.status == 200
    assert response.body == b""
    assert response.headers == []
    assert response.media_type == "application/octet-stream"


@pytest.mark.parametrize(
    ("body", "rendered", "media_type"),
    [
        ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
        (b"\x00\x01", b"\x00\x01", "application/octet-stream"),
        (bytearray(b"ab"), b"ab", "application/octet-stream"),
        (memoryview(b"cd"), b"cd", "application/octet-stream"),
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}', "application/json"),
        ([1, "é"], '[1,"é"]'.encode(), "application/json"),
        (3.5, b"3.5", "application/json"),
        (None, b"null", "application/json"),
    ],
)
def test_body_is_rendered_by_type(body, rendered, media_type):
    response = Response(body)
    assert response.body == rendered
    assert isinstance(response.body, bytes)
    assert response.media_type == media_type


def test_explicit_media_type_wins():
    response = Response({"type": "about:blank"}, media_type="application/problem+json")
    assert response.media_type == "application/problem+json"
    assert json.loads(response.body) == {"type": "about:blank"}
    assert Response("<p/>", media_type="text/html").media_type == "text/html"


def test_unserialisable_body_fails_at_construction():
    with pytest.raises(TypeError):
        Response({"when": object()})


def test_headers_are_normalised_to_pairs():
    assert Response(headers={"X-A": "1", "x-b": "2"}).headers == [("X-A", "1"), ("x-b", "2")]
    assert Response(headers=[("set-cookie", "a=1"), ("set-cookie", "b=2")]).headers == [
        ("set-cookie", "a=1"),
        ("set-cookie", "b=2"),
    ]
    assert Response(headers=(["x", "y"],)).headers == [("x", "y")]
    assert Response(headers=Headers([("A", "1"), ("a", "2")])).headers == [("a", "1"), ("a", "2")]


@pytest.mark.parametrize("headers", [[("x", 1)], [("x",)], {"x": None}])
def test_bad_headers_are_rejected(headers):
    with pytest.raises(TypeError, match=r"\(str, str\) pairs"):
        Response(headers=headers)


@pytest.mark.parametrize(
    ("status", "error"),
    [(99, ValueError), (600, ValueError), ("200", TypeError), (True, TypeError)],
)
def test_bad_status_is_rejected(status, error):
    with pytest.raises(error, match="status must be"):
        Response(status=status)


def test_json_response_always_encodes_json():
    response = JSONResponse("text", status=201, headers={"x-a": "1"})
    assert response.body == b'"text"'
    assert response.media_type == "application/json"
    assert response.status == 201
    assert response.headers == [("x-a", "1")]
    assert JSONResponse({"k": "ü"}).body == '{"k":"ü"}'.encode()
    with pytest.raises(TypeError):
        JSONResponse(b"bytes")


def test_json_is_spelled_as_the_host_spells_it():
    # Outside the host the SDK's own encoder stands in for the host's: the same bytes.
    assert JSONResponse([1e16, 1e-05, 100.0, -0.0]).body == b"[1e+16,1e-05,100.0,-0.0]"
    assert JSONResponse({1: 2**64 - 1, 2.5: -(2**63)}).body == (
        b'{"1":18446744073709551615,"2.5":-9223372036854775808}'
    )


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        (float("nan"), ValueError, "out of range float values are not JSON compliant: nan"),
        ({"x": [float("-inf")]}, ValueError, "not JSON compliant: -inf"),
        ({float("inf"): 1}, ValueError, "not JSON compliant: inf"),
        ([2**64], ValueError, "the integer 18446744073709551616 does not fit in 64 bits"),
        ({"n": -(2**63) - 1}, ValueError, "the integer -9223372036854775809 does not fit"),
        ({(1, 2): 1}, TypeError, "keys must be str, int, float, bool or None, not tuple"),
        ({"when": {1, 2}}, TypeError, "object of type set is not JSON serializable"),
    ],
)
def test_json_response_refuses_what_the_host_refuses(content, error, message):
    with pytest.raises(error, match=re.escape(message)):
        JSONResponse(content)


def test_json_nesting_is_limited_as_in_the_host():
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ValueError, match="nesting deeper than 256 levels"):
        JSONResponse(deep)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="reference cycle"):
        JSONResponse(cycle)


def test_text_and_html_responses():
    text = PlainTextResponse("ok", status=202)
    assert (text.body, text.media_type, text.status) == (b"ok", "text/plain; charset=utf-8", 202)
    html = HTMLResponse("<h1>é</h1>")
    assert html.body == "<h1>é</h1>".encode()
    assert html.media_type == "text/html; charset=utf-8"
    assert HTMLResponse(b"<p>").body == b"<p>"
    with pytest.raises(TypeError, match="PlainTextResponse content must be str or bytes"):
        PlainTextResponse({"a": 1})  # type: ignore[arg-type]


def test_responses_are_responses():
    assert all(issubclass(cls, Response) for cls in (JSONResponse, PlainTextResponse, HTMLResponse))


def test_http_error_defaults_detail_to_reason_phrase():
    error = HTTPError(404)
    assert isinstance(error, Exception)
    assert error.status == 404
    assert error.detail == "Not Found"
    assert error.headers == []
    assert str(error) == "404 Not Found"


def test_http_error_with_detail_and_headers():
    error = HTTPError(401, {"reason": "expired"}, headers={"WWW-Authenticate": "Bearer"})
    assert error.detail == {"reason": "expired"}
    assert error.headers == [("WWW-Authenticate", "Bearer")]
    assert str(error) == "401 Unauthorized: {'reason': 'expired'}"
    assert repr(error) == "HTTPError(status=401, detail={'reason': 'expired'})"

    error = HTTPError(429, "slow down", headers=[("retry-after", "5")])
    assert str(error) == "429 Too Many Requests: slow down"
    assert error.headers == [("retry-after", "5")]


def test_http_error_can_be_raised_and_caught():
    with pytest.raises(HTTPError) as excinfo:
        raise HTTPError(409, "conflict")
    assert excinfo.value.status == 409


def test_http_error_with_unregistered_status():
    assert HTTPError(499).detail == "HTTP 499"
    with pytest.raises(ValueError):
        HTTPError(700)


def test_file_response_names_the_file_and_leaves_the_bytes_to_the_host(tmp_path):
    from pyhost import FileResponse

    response = FileResponse(tmp_path / "a.txt")
    assert response.path == str(tmp_path / "a.txt")
    assert response.body == b""
    assert response.media_type is None  # the host guesses it from the extension
    assert response.headers == []
    assert isinstance(response, Response)


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ("a b.txt", 'attachment; filename="a b.txt"'),
        ("naïve.txt", "attachment; filename=\"na_ve.txt\"; filename*=UTF-8''na%C3%AFve.txt"),
        ('q"uo\\te', "attachment; filename=\"q_uo_te\"; filename*=UTF-8''q%22uo%5Cte"),
        ("line\r\nbreak", "attachment; filename=\"line__break\"; filename*=UTF-8''line%0D%0Abreak"),
        ("日本.txt", "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
    ],
)
def test_file_response_content_disposition(filename, header):
    from pyhost import FileResponse

    assert FileResponse("x", filename=filename).headers["content-disposition"] == header


def test_file_response_disposition_type_and_own_header():
    from pyhost import FileResponse

    inline = FileResponse("x", filename="a.txt", content_disposition_type="inline")
    assert inline.headers["content-disposition"] == 'inline; filename="a.txt"'
    own = FileResponse("x", filename="a.txt", headers={"content-disposition": "inline"})
    assert own.headers.getlist("content-disposition") == ["inline"]
    with pytest.raises(ValueError, match="content_disposition_type"):
        FileResponse("x", filename="a", content_disposition_type="attachment; x=1")
    with pytest.raises(TypeError, match="path"):
        FileResponse(b"bytes-path")  # type: ignore[arg-type]


def test_file_response_takes_the_current_requests_conditional_headers():
    from pyhost import FileResponse, _context

    class FakeRequest:
        request_id = "r1"
        method = "HEAD"
        headers = Headers(
            [("range", "bytes=0-1"), ("if-none-match", '"x"'), ("If-None-Match", '"y"')]
        )

    outside = FileResponse("x")
    assert outside._conditions == (None,) * 6
    token = _context.current.set(FakeRequest())
    try:
        inside = FileResponse("x")
    finally:
        _context.current.reset(token)
    assert inside._method == "HEAD"
    assert inside._conditions == (None, '"x", "y"', None, None, "bytes=0-1", None)
