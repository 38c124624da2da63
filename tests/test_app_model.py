"""The application model over real HTTP: lifespans and application state, start-up and
shutdown hooks, Python middleware and exception handlers."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from tests.harness import Server, ServerFactory, make_config, running_server

LIFESPAN_APP = """
import asyncio
import os
import sqlite3
import threading

from pyhost import Router, host

router = Router()
DB = os.path.join(os.path.dirname(__file__), "app.sqlite3")


@router.lifespan
async def database():
    connection = sqlite3.connect(DB, check_same_thread=False)
    connection.execute("CREATE TABLE IF NOT EXISTS events (what TEXT)")
    connection.execute("INSERT INTO events VALUES ('opened')")
    connection.commit()
    lock = threading.Lock()
    yield {"db": connection, "lock": lock, "loop_thread": threading.get_ident()}
    connection.execute("INSERT INTO events VALUES ('closed')")
    connection.commit()
    connection.close()


@router.on_startup
def plain_startup():
    with open(DB + ".startup", "w") as marker:
        marker.write("started")


@router.on_shutdown
async def async_shutdown():
    await asyncio.sleep(0)
    with open(DB + ".shutdown", "w") as marker:
        marker.write("stopped")


@router.post("/events/{what}")
async def add(request):
    state = request.state
    with state.lock:
        state.db.execute("INSERT INTO events VALUES (?)", (request.path_params["what"],))
        state.db.commit()
    await asyncio.sleep(0.01)
    return {"ok": True}


@router.get("/events")
def events(request):
    with request.state["lock"]:
        rows = request.state.db.execute("SELECT what FROM events").fetchall()
    return {"events": [row[0] for row in rows]}


@router.get("/thread")
async def thread(request):
    # Async handlers run on the event loop's thread.
    return {"lifespan": request.state.loop_thread, "handler": threading.get_ident()}
"""


def test_a_lifespan_opens_a_database_the_handlers_share_and_shutdown_closes_it(
    server_factory: ServerFactory,
) -> None:
    config_path = server_factory.write_app({"app.py": LIFESPAN_APP})
    database = config_path.parent / "app.sqlite3"
    with running_server(server_factory.binary, config_path, cwd=server_factory.cwd) as server:
        # Start-up ran before the first request was served.
        assert (config_path.parent / "app.sqlite3.startup").read_text() == "started"
        with server.client() as http:
            with ThreadPoolExecutor(8) as pool:
                statuses = list(
                    pool.map(lambda i: http.post(f"/events/e{i}").status_code, range(40))
                )
            assert statuses == [200] * 40
            payload = http.get("/events").json()
            # The code before `yield` ran on the host's event loop thread.
            thread = http.get("/thread").json()
        assert thread["lifespan"] == thread["handler"]
        assert payload["events"][0] == "opened"
        assert sorted(payload["events"][1:]) == sorted(f"e{i}" for i in range(40))
        assert not (config_path.parent / "app.sqlite3.shutdown").exists()
        assert server.stop() == 0
    rows = [row[0] for row in sqlite3.connect(database).execute("SELECT what FROM events")]
    assert rows[-1] == "closed", rows
    assert rows.count("closed") == 1
    assert (config_path.parent / "app.sqlite3.shutdown").read_text() == "stopped"


def test_shutdown_hooks_run_once_on_sigterm_under_load(server_factory: ServerFactory) -> None:
    app = """
    import asyncio, os
    from pyhost import Router
    router = Router()
    MARK = os.path.join(os.path.dirname(__file__), "shutdowns")

    @router.lifespan
    async def life():
        yield
        with open(MARK, "a") as f:
            f.write("x")

    @router.get("/slow")
    async def slow(request):
        await asyncio.sleep(0.3)
        return {"ok": True}
    """
    config_path = server_factory.write_app({"app.py": app})
    with running_server(server_factory.binary, config_path, cwd=server_factory.cwd) as server:
        with server.client() as http, ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(http.get, "/slow") for _ in range(8)]
            time.sleep(0.15)
            server.proc.send_signal(15)
            statuses = [future.result().status_code for future in futures]
        assert server.proc.wait(15) == 0
    assert statuses == [200] * 8
    assert (config_path.parent / "shutdowns").read_text() == "x"


def test_a_start_up_hook_that_raises_ends_serve_naming_it(server_factory: ServerFactory) -> None:
    app = """
    from pyhost import Router
    router = Router()

    @router.lifespan
    async def connect_to_database():
        raise ConnectionRefusedError("database at db:5432 refused the connection")
        yield
    """
    config_path = server_factory.write_app({"app.py": app})
    result = server_factory.run("serve", "--config", str(config_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1, result.describe()
    assert "start-up hook app.connect_to_database" in result.stderr, result.stderr
    assert "ConnectionRefusedError: database at db:5432 refused" in result.stderr
    assert "Traceback" in result.stderr
    assert "listening on" not in result.stdout


def test_a_start_up_hook_past_the_timeout_ends_serve(server_factory: ServerFactory) -> None:
    app = """
    import asyncio
    from pyhost import Router
    router = Router()

    @router.on_startup
    async def warm_cache():
        await asyncio.sleep(60)
    """
    config_path = server_factory.write_app(
        {"app.py": app}, make_config(server="startup_timeout = 0.5")
    )
    started = time.monotonic()
    result = server_factory.run("serve", "--config", str(config_path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1, result.describe()
    assert time.monotonic() - started < 15
    assert "start-up hook app.warm_cache" in result.stderr, result.stderr
    assert "server.startup_timeout (0.5s)" in result.stderr


def test_a_failing_shutdown_hook_is_logged_and_not_fatal(server_factory: ServerFactory) -> None:
    app = """
    from pyhost import Router
    router = Router()

    @router.on_shutdown
    def flush():
        raise RuntimeError("could not flush the metrics")

    @router.on_shutdown
    def second():
        print("second shutdown hook ran", flush=True)

    @router.get("/")
    async def index(request):
        return "ok"
    """
    with server_factory.serve({"app.py": app}) as server:
        assert server.stop() == 0
    log = server.stderr_text()
    assert "shutdown hook app.flush" in log, log
    assert "RuntimeError: could not flush the metrics" in log
    assert "second shutdown hook ran" in server.stdout_text()


PLUGINS_APP = {
    "app.py": """
from pyhost import Router
router = Router()

@router.lifespan
async def life():
    yield {"name": "app-state"}

@router.get("/state")
async def state(request):
    return {"name": request.state.name, "keys": sorted(request.state)}
""",
    "billing.py": """
from pyhost import Router
router = Router()
inner = Router()

@inner.lifespan
async def inner_life():
    yield {"inner": True}

@inner.get("/state")
async def state(request):
    return {"keys": sorted(request.state), "inner": request.state["inner"]}

router.include(inner, prefix="/v1")
""",
}


def test_each_plugin_has_its_own_state_and_included_routers_bring_their_hooks(
    server_factory: ServerFactory,
) -> None:
    config = make_config() + '\n[plugins.billing]\nmodule = "billing"\nprefix = "/billing"\n'
    with server_factory.serve(PLUGINS_APP, config) as server, server.client() as http:
        assert http.get("/state").json() == {"name": "app-state", "keys": ["name"]}
        assert http.get("/billing/v1/state").json() == {"keys": ["inner"], "inner": True}


MIDDLEWARE_APP = """
import asyncio
import contextvars
import time

from pyhost import HTTPError, JSONResponse, Router

user = contextvars.ContextVar("user", default=None)
router = Router()
admin = Router()
order = []


class PaymentRequired(Exception):
    pass


class CardDeclined(PaymentRequired):
    pass


@router.middleware
async def timing(request, call_next):
    started = time.perf_counter()
    order.append("timing")
    response = await call_next(request)
    response.headers["x-elapsed-ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
    response.headers["x-order"] = ",".join(order)
    order.clear()
    return response


@router.middleware
async def auth(request, call_next):
    order.append("auth")
    token = request.headers.get("authorization")
    if token is None:
        return JSONResponse({"detail": "sign in first"}, status=401)
    user.set(token.removeprefix("Bearer "))
    try:
        return await call_next(request)
    except ZeroDivisionError:
        return JSONResponse({"detail": "caught by the middleware"}, status=418)


@router.exception_handler(PaymentRequired)
async def payment_required(request, exc):
    return {"detail": f"payment required: {type(exc).__name__}"}, 402


@router.get("/me")
async def me(request):
    return {"user": user.get()}


@router.get("/plain")
def plain(request):
    return {"user": user.get(), "kind": "def"}


@router.get("/none")
async def nothing(request):
    return None


@router.get("/missing")
async def missing(request):
    raise HTTPError(404, "no such thing")


@router.get("/divide")
async def divide(request):
    return 1 / 0


@router.get("/declined")
async def declined(request):
    raise CardDeclined()


@router.get("/crash")
async def crash(request):
    raise KeyError("secret-internal-detail")


@router.get("/slow", timeout=0.3)
async def slow(request):
    await asyncio.sleep(5)


@admin.middleware
async def admin_only(request, call_next):
    order.append("admin")
    response = await call_next(request)
    response.headers["x-admin"] = "yes"
    return response


@admin.get("/panel")
async def panel(request):
    return {"panel": True, "user": user.get()}


router.include(admin, prefix="/admin")


@router.get("/late")
async def late(request):
    return {"declared": "after the middleware"}
"""

NO_MIDDLEWARE_APP = """
from pyhost import Router
router = Router()
other = Router()

@other.middleware
async def tag(request, call_next):
    response = await call_next(request)
    response.headers["x-tag"] = "other"
    return response

@router.get("/bare")
async def bare(request):
    return {"bare": True}
"""

AUTH = {"authorization": "Bearer ada"}


def test_middleware_wraps_routes_outermost_first_and_can_answer_early(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": MIDDLEWARE_APP}) as server, server.client() as http:
        early = http.get("/me")
        assert early.status_code == 401
        assert early.json() == {"detail": "sign in first"}
        # The outer middleware still wrapped the early answer.
        assert early.headers["x-order"] == "timing,auth"
        response = http.get("/me", headers=AUTH)
        assert response.status_code == 200
        # A context variable the middleware set is visible in the handler.
        assert response.json() == {"user": "ada"}
        assert float(response.headers["x-elapsed-ms"]) >= 0
        # Included routers' routes get the includer's middleware around their own.
        panel = http.get("/admin/panel", headers=AUTH)
        assert panel.json() == {"panel": True, "user": "ada"}
        assert panel.headers["x-admin"] == "yes"
        assert panel.headers["x-order"] == "timing,auth,admin"
        # Declared after the middleware: covered all the same.
        assert http.get("/late", headers=AUTH).headers["x-order"] == "timing,auth"
        # A plain def handler, run on a thread, sees the context too.
        assert http.get("/plain", headers=AUTH).json() == {"user": "ada", "kind": "def"}


def test_call_next_gives_a_response_whatever_the_handler_did(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": MIDDLEWARE_APP}) as server, server.client() as http:
        empty = http.get("/none", headers=AUTH)
        assert empty.status_code == 204
        assert "x-elapsed-ms" in empty.headers
        assert "content-type" not in empty.headers
        missing = http.get("/missing", headers=AUTH)
        assert missing.status_code == 404
        assert missing.json() == {"detail": "no such thing"}
        assert "x-elapsed-ms" in missing.headers
        caught = http.get("/divide", headers=AUTH)
        assert caught.status_code == 418
        assert caught.json() == {"detail": "caught by the middleware"}


def test_exception_handlers_take_subclasses_and_others_stay_a_sanitised_500(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": MIDDLEWARE_APP}) as server, server.client() as http:
        declined = http.get("/declined", headers=AUTH)
        assert declined.status_code == 402
        assert declined.json() == {"detail": "payment required: CardDeclined"}
        crash = http.get("/crash", headers=AUTH)
        assert crash.status_code == 500
        assert "secret-internal-detail" not in crash.text
        # The traceback is in the log, through the middleware's frames.
        log = server.wait_for_stderr("secret-internal-detail")
        assert "Traceback" in log and "in crash" in log, log


def test_the_handler_timeout_still_applies_under_middleware(server_factory: ServerFactory) -> None:
    with server_factory.serve({"app.py": MIDDLEWARE_APP}) as server, server.client() as http:
        started = time.monotonic()
        response = http.get("/slow", headers=AUTH)
        assert response.status_code == 504
        assert time.monotonic() - started < 3


def test_routes_without_middleware_get_their_handler_as_it_is(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": NO_MIDDLEWARE_APP}) as server, server.client() as http:
        response = http.get("/bare")
        assert response.json() == {"bare": True}
        # Another router's middleware does not apply to routes it does not hold.
        assert "x-tag" not in response.headers


def test_middleware_must_be_async(server_factory: ServerFactory) -> None:
    app = """
    from pyhost import Router
    router = Router()

    @router.middleware
    def sync_middleware(request, call_next):
        return call_next(request)
    """
    config_path = server_factory.write_app({"app.py": app})
    result = server_factory.run("check", "--config", str(config_path))
    assert result.returncode == 1
    assert "middleware app.sync_middleware must be an async def" in result.stderr, result.stderr


def test_with_several_workers_each_runs_the_lifespan(server_factory: ServerFactory) -> None:
    app = """
    import os
    from pyhost import Router
    router = Router()
    LOG = os.path.join(os.path.dirname(__file__), "lifespans")

    @router.lifespan
    async def life():
        with open(LOG, "a") as f:
            f.write(f"start {os.getpid()}\\n")
        yield {"pid": os.getpid()}
        with open(LOG, "a") as f:
            f.write(f"stop {os.getpid()}\\n")

    @router.get("/pid")
    async def pid(request):
        return {"state": request.state.pid, "pid": os.getpid()}
    """
    config_path = server_factory.write_app({"app.py": app}, make_config(server="workers = 2"))
    with running_server(server_factory.binary, config_path, cwd=server_factory.cwd) as server:
        with server.client() as http:
            payload = http.get("/pid").json()
        assert payload["state"] == payload["pid"]
        assert server.stop() == 0
    lines = (config_path.parent / "lifespans").read_text().split()
    starts = {pid for word, pid in zip(lines[::2], lines[1::2], strict=True) if word == "start"}
    stops = {pid for word, pid in zip(lines[::2], lines[1::2], strict=True) if word == "stop"}
    assert len(starts) == 2
    assert starts == stops


PARAMS_APP = """
import asyncio
import os

from pyhost import Cookie, Header, Response, Router

router = Router()
DONE = os.path.join(os.path.dirname(__file__), "background")


@router.get(
    "/account",
    headers={
        "X-API-Key": Header(str, min_length=16),
        "x-page-size": Header(int, default=20, le=100),
    },
    cookies={
        "session": Cookie(str),
        "theme": Cookie(str, default="light", choices=["light", "dark"]),
    },
)
async def account(request):
    return {"headers": request.header_params, "cookies": request.cookies}


@router.post("/login")
async def login(request):
    response = Response({"ok": True})
    response.set_cookie("session", "s3;cr3t", max_age=3600, httponly=True, secure=True)
    response.set_cookie("theme", "dark", samesite="strict")
    response.delete_cookie("legacy")
    return response


async def record_async():
    await asyncio.sleep(0.05)
    with open(DONE, "a") as f:
        f.write("async\\n")


def record_sync():
    with open(DONE, "a") as f:
        f.write("sync\\n")


def explode():
    raise RuntimeError("the background task broke")


@router.post("/signup")
async def signup(request):
    kind = request.query_params.get("kind", "async")
    task = {"async": record_async, "sync": record_sync, "explode": explode}[kind]
    return Response({"queued": kind}, status=202, background=task)
"""

KEY = "k" * 16


def test_declared_headers_and_cookies_are_checked_in_rust_and_typed(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": PARAMS_APP}) as server, server.client() as http:
        ok = http.get(
            "/account",
            headers={"x-api-key": KEY, "X-Page-Size": "50", "cookie": "session=abc; theme=dark"},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {
            "headers": {"x-api-key": KEY, "x-page-size": 50},
            "cookies": {"session": "abc", "theme": "dark"},
        }
        defaults = http.get("/account", headers={"X-API-KEY": KEY, "cookie": "session=abc"})
        assert defaults.json() == {
            "headers": {"x-api-key": KEY, "x-page-size": 20},
            "cookies": {"session": "abc", "theme": "light"},
        }
        bad = http.get(
            "/account",
            headers={"x-api-key": "short", "x-page-size": "500", "cookie": "theme=blue"},
        )
        assert bad.status_code == 422
        locs = sorted(tuple(entry["loc"]) for entry in bad.json()["detail"])
        assert locs == [
            ("cookie", "session"),
            ("cookie", "theme"),
            ("header", "x-api-key"),
            ("header", "x-page-size"),
        ]
        missing = http.get("/account")
        assert {tuple(e["loc"]) for e in missing.json()["detail"]} == {
            ("header", "x-api-key"),
            ("cookie", "session"),
        }


def test_set_cookie_writes_one_header_per_cookie(server_factory: ServerFactory) -> None:
    with server_factory.serve({"app.py": PARAMS_APP}) as server, server.client() as http:
        response = http.post("/login")
        cookies = response.headers.get_list("set-cookie")
        assert len(cookies) == 3, cookies
        session, theme, legacy = cookies
        # A value with a character a cookie may not hold bare is quoted and escaped.
        assert session.startswith('session="s3\\073cr3t"'), session
        assert "HttpOnly" in session and "Secure" in session and "Max-Age=3600" in session
        assert "SameSite=strict" in theme
        assert legacy.startswith('legacy=""') and "Max-Age=0" in legacy
        assert "expires=Thu, 01 Jan 1970 00:00:00 GMT" in legacy


def test_a_background_task_runs_after_the_response_and_its_errors_are_logged(
    server_factory: ServerFactory,
) -> None:
    with server_factory.serve({"app.py": PARAMS_APP}) as server, server.client() as http:
        done = server.config.parent / "background"
        started = time.monotonic()
        response = http.post("/signup")
        assert response.status_code == 202
        assert response.json() == {"queued": "async"}
        # The response did not wait for the task's 50 ms.
        assert not done.exists() or "async" not in done.read_text()
        assert time.monotonic() - started < 5
        http.post("/signup", params={"kind": "sync"})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            not done.exists() or sorted(done.read_text().split()) != ["async", "sync"]
        ):
            time.sleep(0.02)
        assert sorted(done.read_text().split()) == ["async", "sync"]
        failing = http.post("/signup", params={"kind": "explode"})
        assert failing.status_code == 202
        request_id = failing.headers["x-request-id"]
        log = server.wait_for_stderr("the background task broke")
        assert f"request {request_id}: background task explode failed" in log, log
        assert "Traceback" in log


def test_the_example_app_signs_in_with_a_cookie_and_guards_its_account_routes(
    example_server: Server,
) -> None:
    # A client of its own: the shared one must not keep this test's cookies.
    with example_server.client() as client:
        assert client.get("/account/me").status_code == 401
        # Declared parameters are checked before any Python, the middleware included.
        short = client.post("/account/logout", headers={"cookie": "session=short"})
        assert short.status_code == 422
        signed_in = client.post("/account/login", json={"name": "ada"})
        assert signed_in.json() == {"signed_in": "ada"}
        token = signed_in.cookies["session"]
        client.cookies.clear()
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        session = {"cookie": f"session={token}"}
        me = client.get("/account/me", headers=session)
        assert me.json() == {"name": "ada"}
        assert me.headers["x-user"] == "ada"
        keyed = client.get("/account/keys", headers={"x-api-key": "0123456789abcdef"})
        assert keyed.json() == {"key_prefix": "0123"}
        too_short = client.get("/account/keys", headers={"x-api-key": "0123"})
        assert too_short.status_code == 422
        assert too_short.json()["detail"][0]["loc"] == ["header", "x-api-key"]
        out = client.post("/account/logout", headers=session)
        assert "Max-Age=0" in out.headers["set-cookie"]
        client.cookies.clear()
        assert client.get("/account/me", headers=session).status_code == 401
