"""Every kind of value a handler may return, included under ``/responses``.

- ``dict``, ``list``, ``int``, ``float``, ``bool``: JSON (``application/json``)
- ``str``: UTF-8 text (``text/plain; charset=utf-8``)
- ``bytes``, ``bytearray``, ``memoryview``: as they are (``application/octet-stream``)
- ``None``: 204 No Content
- ``(body, status)`` and ``(body, status, headers)``: the body converted as above
- ``Response`` (and ``JSONResponse``, ``PlainTextResponse``, ``HTMLResponse``): exactly as built

Anything else is a bug in the handler and answered with 500.
"""

from typing import Any

from pyhost import HTMLResponse, JSONResponse, PlainTextResponse, Request, Response, Router

router = Router()


@router.get("/dict")
async def as_dict(request: Request) -> dict[str, Any]:
    return {"kind": "dict", "nested": {"ok": True, "n": [1, 2, 3]}, "nothing": None}


@router.get("/list")
async def as_list(request: Request) -> list[Any]:
    return [1, "two", 3.0, None, {"four": 4}]


@router.get("/str")
async def as_str(request: Request) -> str:
    return "plain text, UTF-8 encoded: héllo ✓"


@router.get("/bytes")
async def as_bytes(request: Request) -> bytes:
    return b"\x00\x01\x02binary\xff"


@router.get("/bytearray")
async def as_bytearray(request: Request) -> bytearray:
    return bytearray(b"from a bytearray")


@router.get("/memoryview")
async def as_memoryview(request: Request) -> memoryview:
    return memoryview(b"from a memoryview")


@router.get("/none")
async def as_none(request: Request) -> None:
    """Nothing to say: 204 No Content."""


@router.get("/int")
async def as_int(request: Request) -> int:
    return 42


@router.get("/float")
async def as_float(request: Request) -> float:
    return 2.5


@router.get("/bool")
async def as_bool(request: Request) -> bool:
    return True


@router.get("/tuple")
async def as_tuple(request: Request) -> tuple[dict[str, Any], int]:
    """``(body, status)``: the body is converted like a plain return value."""
    return {"created": True}, 201


@router.get("/tuple-headers")
async def as_tuple_with_headers(request: Request) -> tuple[str, int, dict[str, str]]:
    return "accepted for later", 202, {"Retry-After": "30", "X-Queue": "slow"}


@router.get("/response")
async def as_response(request: Request) -> Response:
    """Full control: status, headers and an explicit media type."""
    return Response(
        "id,name\n1,hammer\n",
        status=200,
        headers={"Content-Disposition": 'attachment; filename="items.csv"'},
        media_type="text/csv",
    )


@router.get("/response-json")
async def as_response_with_json_body(request: Request) -> Response:
    """A ``Response`` body that is neither str nor bytes is encoded as JSON."""
    return Response({"via": "Response"}, status=203)


@router.get("/cookies")
async def with_repeated_headers(request: Request) -> Response:
    """Headers as a list of pairs may repeat a name."""
    return Response(
        b"",
        status=200,
        headers=[("Set-Cookie", "theme=dark; Path=/"), ("Set-Cookie", "lang=en; Path=/")],
    )


@router.get("/json")
async def as_json_response(request: Request) -> JSONResponse:
    """JSONResponse always encodes JSON, even a string."""
    return JSONResponse("a JSON string", status=200, headers={"Cache-Control": "no-store"})


@router.get("/text")
async def as_text_response(request: Request) -> PlainTextResponse:
    return PlainTextResponse("nothing to see here", status=404)


@router.get("/html")
async def as_html_response(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><h1>Hello from pyhost</h1>")
