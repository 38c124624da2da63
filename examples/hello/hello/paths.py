"""Typed path segments, included under ``/paths``.

``{name}`` (or ``{name:str}``) matches one segment as a string; ``{name:int}``, ``{name:float}``
and ``{name:uuid}`` convert it, answering 422 when the segment does not parse; ``{name:path}``
takes the rest of the path, slashes included, and must come last.
"""

import uuid
from typing import Any

from pyhost import Request, Router

router = Router()


def _describe(value: Any) -> dict[str, Any]:
    shown = str(value) if isinstance(value, uuid.UUID) else value
    return {"value": shown, "type": type(value).__name__}


@router.get("/int/{value:int}")
async def int_segment(request: Request) -> dict[str, Any]:
    return _describe(request.path_params["value"])


@router.get("/float/{value:float}")
async def float_segment(request: Request) -> dict[str, Any]:
    return _describe(request.path_params["value"])


@router.get("/str/{value}")
async def str_segment(request: Request) -> dict[str, Any]:
    return _describe(request.path_params["value"])


@router.get("/uuid/{value:uuid}")
async def uuid_segment(request: Request) -> dict[str, Any]:
    return _describe(request.path_params["value"])  # a uuid.UUID instance


@router.get("/files/{rest:path}")
async def file_path(request: Request) -> dict[str, Any]:
    """``/paths/files/docs/guide/intro.md`` gives ``rest == "docs/guide/intro.md"``."""
    return _describe(request.path_params["rest"])


@router.get("/users/{user_id:int}/posts/{slug:str}")
async def user_post(request: Request) -> dict[str, Any]:
    """Several parameters in one template; ``request.route`` is the template that matched."""
    return {"path_params": request.path_params, "route": request.route}
