"""The handler package of `tests/test_request_streams.py` and `tests/test_forms.py`: routes
that stream their request bodies and routes that read forms, each reporting what it saw."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from pyhost import Form, HTTPError, Query, Router, UploadFile

router = Router()

# What the handlers saw, for the tests to ask about (one server per test module).
seen: dict[str, Any] = {"started": 0, "chunks": 0}
release = asyncio.Event()


@router.post("/upload", stream=True, body_limit="256 MiB", timeout=600)
async def upload(request: Any) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = chunks = largest = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
        largest = max(largest, len(chunk))
    return {"size": size, "sha256": digest.hexdigest(), "chunks": chunks, "largest": largest}


@router.post("/held", stream=True, body_limit="256 MiB", timeout=600)
async def held(request: Any) -> dict[str, Any]:
    """Reads one chunk, then waits for `/release` before reading the rest."""
    seen["started"] += 1
    release.clear()
    stream = request.stream()
    size = 0
    async for chunk in stream:
        size += len(chunk)
        seen["chunks"] += 1
        if seen["chunks"] == 1:
            await release.wait()
    return {"size": size}


@router.get("/progress")
async def progress(request: Any) -> dict[str, Any]:
    return dict(seen)


@router.post("/release")
async def release_held(request: Any) -> dict[str, Any]:
    release.set()
    return {"released": True}


@router.post("/reset")
async def reset(request: Any) -> dict[str, Any]:
    seen.clear()
    seen.update({"started": 0, "chunks": 0})
    return {}


@router.post("/limited", stream=True, body_limit="1 MiB")
async def limited(request: Any) -> dict[str, Any]:
    seen["started"] += 1
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"size": size}


@router.post("/small", body_limit=1000)
async def small(request: Any) -> dict[str, Any]:
    return {"size": len(request.body)}


@router.post("/early", stream=True, body_limit="256 MiB")
async def early(request: Any) -> dict[str, Any]:
    async for chunk in request.stream():
        return {"first": len(chunk)}
    return {"first": 0}


@router.post("/raises", stream=True, body_limit="256 MiB")
async def raises(request: Any) -> dict[str, Any]:
    async for _chunk in request.stream():
        raise RuntimeError("the handler gave up mid-stream")
    return {}


@router.post("/whole", stream=True)
async def whole(request: Any) -> dict[str, Any]:
    if request.headers.get("content-type") == "application/json":
        return {"json": await request.json()}
    return {"size": len(await request.body())}


@router.post("/stream-form", stream=True)
async def stream_form(request: Any) -> dict[str, Any]:
    return await describe(await request.form())


async def describe(form: Any, read: bool = True) -> dict[str, Any]:
    fields: list[list[Any]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read() if read else b""
            on_disk = value.path is not None and os.path.exists(value.path)
            fields.append(
                [
                    name,
                    {
                        "filename": value.filename,
                        "content_type": value.content_type,
                        "size": value.size,
                        "read": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "in_memory": value.in_memory,
                        "on_disk": on_disk,
                        "path": value.path,
                        "header": value.headers.get("x-part"),
                    },
                ]
            )
            await value.close()
        else:
            fields.append([name, value])
    return {"fields": fields}


@router.post(
    "/form", form={}, body_limit="256 MiB", timeout=600, query={"read": Query(bool, default=True)}
)
async def parsed_form(request: Any) -> dict[str, Any]:
    return await describe(await request.form(), request.query["read"])


@router.post("/lazy-form")
async def lazy_form(request: Any) -> dict[str, Any]:
    return await describe(await request.form())


@router.post(
    "/declared",
    query={"page": Query(int, default=1)},
    form={
        "name": Form(str, min_length=2),
        "age": Form(int, ge=0),
        "tags": Form(str, multiple=True, default=[]),
    },
)
async def declared(request: Any) -> dict[str, Any]:
    form = await request.form()
    return {"params": request.form_params, "page": request.query["page"], "keys": list(form)}


@router.post("/form-raises", form={}, body_limit="64 MiB")
async def form_raises(request: Any) -> dict[str, Any]:
    form = await request.form()
    seen["paths"] = [upload.path for _, upload in form.files()]
    raise RuntimeError("the handler failed after the upload")


@router.post("/form-waits", form={}, body_limit="64 MiB", timeout=600)
async def form_waits(request: Any) -> dict[str, Any]:
    form = await request.form()
    seen["paths"] = [upload.path for _, upload in form.files()]
    await asyncio.sleep(3600)
    return {}


@router.post("/form-times-out", form={}, body_limit="64 MiB", timeout=1)
async def form_times_out(request: Any) -> dict[str, Any]:
    form = await request.form()
    seen["paths"] = [upload.path for _, upload in form.files()]
    await asyncio.sleep(3600)
    return {}


@router.post("/recorded", stream=True, body_limit="256 MiB", timeout=600)
async def recorded(request: Any) -> dict[str, Any]:
    """Records how its stream ended: completely, or with which error."""
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
    except HTTPError as error:
        seen["outcome"] = [error.status, error.detail]
        raise
    seen["outcome"] = ["complete", size]
    return {"size": size}
