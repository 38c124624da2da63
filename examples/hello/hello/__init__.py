"""hello: the pyhost example app.

pyhost imports this package (``[app] module = "hello"`` in ``pyhost.toml``) and serves the
routes of its ``router`` attribute. Each submodule has a router of its own, included below under
a prefix, so the full route table is::

    /                     index: a dict becomes a JSON response
    /hello/{name}         a str becomes a text/plain response
    /echo                 one handler for several methods, reflecting the request back
    /api/...              items.py: CRUD, query parameters, JSON bodies
    /paths/...            paths.py: typed path segments
    /responses/...        responses.py: every value a handler may return
    /errors/...           errors.py: HTTPError and unhandled exceptions
    /concurrency/...      concurrency.py: asyncio, context variables, blocking handlers
    /account/...          account.py: lifespan and state, auth middleware, headers, cookies

``pyhost routes --config examples/hello/pyhost.toml`` prints it with every parameter.
"""

from typing import Any

from pyhost import Request, Router

from . import account, concurrency, errors, items, paths, responses

router = Router()


@router.get("/")
async def index(request: Request) -> dict[str, Any]:
    """The simplest handler: an ``async def`` taking the request and returning a dict (JSON)."""
    return {
        "app": "hello",
        "sections": ["/api/items", "/paths", "/responses", "/errors", "/concurrency", "/echo"],
    }


@router.get("/hello/{name}")
async def hello(request: Request) -> str:
    """Path parameters are in ``request.path_params``; a returned str is sent as plain text."""
    return f"Hello, {request.path_params['name']}!"


@router.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(request: Request) -> dict[str, Any]:
    """One handler for several methods: a tour of the request object.

    Every attribute can also be read dict-style: ``request["method"]``, ``request.get("body")``.
    """
    return {
        "method": request.method,
        "path": request.path,
        "url": request.url,
        "query_string": request.query_string,
        # query_params keeps repeated keys: ?tag=a&tag=b gives [["tag", "a"], ["tag", "b"]].
        "query_params": [[key, value] for key, value in request.query_params.multi_items()],
        # Header names are lower-cased; lookups such as request.headers["User-Agent"] are not.
        "headers": [[name, value] for name, value in request.headers.items()],
        "user_agent": request.headers.get("User-Agent"),
        "body": request.body.decode("utf-8", errors="replace"),
        "client": list(request.client) if request.client is not None else None,
        "request_id": request["request_id"],
        "route": request.get("route"),
    }


router.include(items.router, prefix="/api")
router.include(paths.router, prefix="/paths")
router.include(responses.router, prefix="/responses")
router.include(errors.router, prefix="/errors")
router.include(concurrency.router, prefix="/concurrency")
router.include(account.router, prefix="/account")
