"""pyhost: the Python side of the pyhost server.

A handler package declares its routes on a :class:`Router`; the pyhost binary imports the
package, reads the routes and serves them, calling each handler with a :class:`Request`.

>>> from pyhost import Query, Router
>>> router = Router()
>>> @router.get("/hello", query={"name": Query(str, default="world")})
... async def hello(request):
...     return {"message": f"hello {request.query['name']}"}
"""

from .datastructures import Headers, MutableHeaders, QueryParams, State
from .forms import FormData, UploadFile
from .host import CapabilityError, HostError, host, host_logging_handler
from .params import REQUIRED, Cookie, Form, Header, Query
from .requests import Request
from .responses import (
    FileResponse,
    HTMLResponse,
    HTTPError,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from .routing import Route, Router
from .schema import json_schema
from .sse import EventSourceResponse, ServerSentEvent
from .websocket import WebSocket, WebSocketDisconnect

__all__ = [
    "REQUIRED",
    "CapabilityError",
    "Cookie",
    "EventSourceResponse",
    "FileResponse",
    "Form",
    "FormData",
    "HTMLResponse",
    "HTTPError",
    "Header",
    "Headers",
    "HostError",
    "JSONResponse",
    "MutableHeaders",
    "PlainTextResponse",
    "Query",
    "QueryParams",
    "Request",
    "Response",
    "Route",
    "Router",
    "ServerSentEvent",
    "State",
    "StreamingResponse",
    "UploadFile",
    "WebSocket",
    "WebSocketDisconnect",
    "host",
    "host_logging_handler",
    "json_schema",
]
