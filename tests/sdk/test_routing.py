import dataclasses
import functools
import json
import uuid

import pytest

from pyhost import Form, Query, Route, Router


async def get_user(request):
    return {"id": request.path_params["user_id"]}


def list_users(request):
    return []


class Handlers:
    async def method(self, request):
        return None


class AsyncCallable:
    async def __call__(self, request):
        return None


class SyncCallable:
    def __call__(self, request):
        return None


async def two_args(prefix, request):
    return prefix


@dataclasses.dataclass
class UserIn:
    name: str
    age: int = 0


def test_decorators_record_routes_in_order_and_return_the_handler():
    router = Router()
    assert router.get("/users/{user_id:int}")(get_user) is get_user
    router.post("/users")(list_users)
    router.put("/users/{user_id:int}")(get_user)
    router.patch("/users/{user_id:int}")(get_user)
    router.delete("/users/{user_id:int}")(get_user)

    assert [(r.methods, r.path) for r in router.routes] == [
        (("GET",), "/users/{user_id:int}"),
        (("POST",), "/users"),
        (("PUT",), "/users/{user_id:int}"),
        (("PATCH",), "/users/{user_id:int}"),
        (("DELETE",), "/users/{user_id:int}"),
    ]
    assert all(isinstance(r, Route) for r in router.routes)


def test_routes_property_is_a_copy():
    router = Router()
    router.get("/")(list_users)
    router.routes.clear()
    assert len(router.routes) == 1


def test_route_is_frozen():
    router = Router()
    router.get("/")(list_users)
    with pytest.raises(dataclasses.FrozenInstanceError):
        router.routes[0].path = "/other"  # type: ignore[misc]


def test_route_methods_are_upper_cased_and_deduplicated():
    router = Router()
    router.route("/multi", methods=["get", "POST", "Get", "options"])(list_users)
    assert router.routes[0].methods == ("GET", "POST", "OPTIONS")


@pytest.mark.parametrize(
    ("methods", "error", "message"),
    [
        (["HEAD"], ValueError, "HEAD"),
        (["TRACE"], ValueError, "unsupported HTTP method 'TRACE'"),
        ([], ValueError, "at least one HTTP method"),
        ("GET", TypeError, "list of method names"),
        ([1], TypeError, "must be a str"),
    ],
)
def test_bad_methods_are_rejected(methods, error, message):
    with pytest.raises(error, match=message):
        Router().route("/x", methods=methods)


def test_route_name_is_module_and_qualname():
    router = Router()
    router.get("/a")(get_user)
    router.get("/b")(Handlers().method)
    router.get("/c")(AsyncCallable())
    router.get("/d")(functools.partial(two_args, "p"))
    names = [r.name for r in router.routes]
    assert names == [
        f"{__name__}.get_user",
        f"{__name__}.Handlers.method",
        f"{__name__}.AsyncCallable",
        f"{__name__}.two_args",
    ]


@pytest.mark.parametrize(
    ("handler", "is_async"),
    [
        (get_user, True),
        (list_users, False),
        (Handlers().method, True),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (functools.partial(two_args, "p"), True),
        (functools.partial(functools.partial(two_args, "p")), True),
        (lambda request: None, False),
    ],
)
def test_is_async(handler, is_async):
    router = Router()
    router.get("/")(handler)
    assert router.routes[0].is_async is is_async


def test_handler_must_take_one_argument():
    router = Router()
    with pytest.raises(TypeError, match=r"two_args must accept one positional argument"):
        router.get("/")(two_args)
    with pytest.raises(TypeError, match="must be callable"):
        router.get("/")("not a function")
    assert router.routes == []


def test_handler_with_optional_extra_arguments_is_accepted():
    def handler(request, extra=None, *args, **kwargs):
        return None

    router = Router()
    router.get("/")(handler)
    assert router.routes[0].handler is handler


@pytest.mark.parametrize(
    "template",
    [
        "/",
        "/users",
        "/users/",
        "/users/{user_id}",
        "/users/{user_id:int}/posts/{post_id:uuid}",
        "/price/{amount:float}",
        "/files/{rest:path}",
        "/static/{dir}/{rest:path}",
        "/a/{name:str}",
        "/{_private1}",
    ],
)
def test_valid_templates(template):
    router = Router()
    router.get(template)(list_users)
    assert router.routes[0].path == template


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("users", "must start with '/'"),
        ("", "must start with '/'"),
        ("/users/{id:integer}", "unknown converter 'integer'"),
        ("/users/{id:}", "unknown converter ''"),
        ("/users/{id}/{id:int}", "duplicate parameter name 'id'"),
        ("/files/{rest:path}/meta", "path converter in '{rest:path}' must be in the last segment"),
        ("/files/{rest:path}/", "must be in the last segment"),
        ("/users/id-{id}", "must fill a whole segment"),
        ("/users/{id}.json", "must fill a whole segment"),
        ("/users/{a}{b}", "must fill a whole segment"),
        ("/users/{id", "must fill a whole segment"),
        ("/users/id}", "must fill a whole segment"),
        ("/users/{}", "empty parameter name"),
        ("/users/{:int}", "empty parameter name"),
        ("/users/{user-id}", "'user-id' is not a valid identifier"),
        ("/users/{1st}", "'1st' is not a valid identifier"),
    ],
)
def test_invalid_templates_name_the_template_and_the_problem(template, problem):
    with pytest.raises(ValueError) as excinfo:
        Router().get(template)
    message = str(excinfo.value)
    assert f"invalid path template {template!r}" in message
    assert problem in message


def test_template_must_be_a_string():
    with pytest.raises(TypeError, match="path template must be a str"):
        Router().get(b"/users")  # type: ignore[arg-type]


def test_same_method_and_path_twice_is_recorded_for_the_host_to_report():
    router = Router()
    router.get("/dup")(get_user)
    router.get("/dup")(list_users)
    assert [r.name for r in router.routes] == [f"{__name__}.get_user", f"{__name__}.list_users"]


def test_spec_is_plain_json_data():
    router = Router()
    router.get(
        "/users/{user_id:int}",
        query={"limit": Query(int, default=10, ge=1, le=100), "q": Query()},
    )(get_user)
    router.post("/users", body=UserIn)(list_users)

    get_spec, post_spec = (r.spec() for r in router.routes)
    assert json.loads(json.dumps(get_spec)) == get_spec
    assert get_spec == {
        "methods": ["GET"],
        "path": "/users/{user_id:int}",
        "name": f"{__name__}.get_user",
        "is_async": True,
        "query": {
            "limit": Query(int, default=10, ge=1, le=100).spec(),
            "q": Query().spec(),
        },
        "headers": {},
        "cookies": {},
        "body_schema": None,
        "timeout": None,
        "stream": False,
        "body_limit": None,
        "form": None,
    }
    assert list(get_spec["query"]) == ["limit", "q"]
    assert post_spec["is_async"] is False
    assert post_spec["body_schema"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
        "additionalProperties": False,
    }


def test_query_mapping_is_read_only_and_detached():
    declared = {"limit": Query(int, default=10)}
    router = Router()
    router.get("/", query=declared)(list_users)
    declared["other"] = Query()
    route = router.routes[0]
    assert list(route.query) == ["limit"]
    with pytest.raises(TypeError):
        route.query["x"] = Query()  # type: ignore[index]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": int}, r"query\['limit'\] must be a Query"),
        ({"": Query()}, "non-empty strings"),
        ([("limit", Query())], "must be a mapping"),
    ],
)
def test_bad_query_declarations(query, message):
    with pytest.raises(TypeError, match=message):
        Router().get("/", query=query)


def test_body_dict_is_taken_as_json_schema_and_copied():
    schema = {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}}}
    router = Router()
    router.post("/", body=schema)(list_users)
    schema["properties"] = {}
    assert router.routes[0].body_schema == {
        "type": "object",
        "properties": {"id": {"type": "string", "format": "uuid"}},
    }


def test_body_dict_must_be_json_data():
    with pytest.raises(TypeError, match="not plain JSON data"):
        Router().post("/", body={"default": uuid.uuid4()})


def test_body_type_goes_through_json_schema():
    router = Router()
    router.post("/", body=list[int])(list_users)
    assert router.routes[0].body_schema == {"type": "array", "items": {"type": "integer"}}
    with pytest.raises(TypeError, match="unsupported type bytes"):
        router.post("/", body=bytes)


def test_include_copies_routes_under_a_prefix():
    users = Router()
    users.get("/users/{user_id:int}", query={"full": Query(bool, default=False)})(get_user)
    users.post("/", body=UserIn)(list_users)

    app = Router()
    app.get("/health")(list_users)
    app.include(users, prefix="/api")

    assert [(r.methods, r.path) for r in app.routes] == [
        (("GET",), "/health"),
        (("GET",), "/api/users/{user_id:int}"),
        (("POST",), "/api/"),
    ]
    included = app.routes[1]
    original = users.routes[0]
    assert included.handler is original.handler
    assert included.name == original.name
    assert included.query == original.query
    assert included.is_async is original.is_async
    assert app.routes[2].body_schema == users.routes[1].body_schema
    assert original.path == "/users/{user_id:int}"


def test_include_is_a_copy_and_allows_no_prefix():
    other = Router()
    other.get("/a")(list_users)
    app = Router()
    app.include(other)
    other.get("/b")(list_users)
    assert [r.path for r in app.routes] == ["/a"]


def test_include_into_itself_copies_once():
    router = Router()
    router.get("/a")(list_users)
    router.include(router, prefix="/v2")
    assert [r.path for r in router.routes] == ["/a", "/v2/a"]


@pytest.mark.parametrize("prefix", ["api", "/api/", "/"])
def test_include_rejects_bad_prefixes(prefix):
    other = Router()
    other.get("/a")(list_users)
    with pytest.raises(ValueError, match="must start with '/' and not end with '/'"):
        Router().include(other, prefix=prefix)


def test_include_checks_the_joined_template():
    other = Router()
    other.get("/{id}")(list_users)
    with pytest.raises(ValueError, match="duplicate parameter name 'id'"):
        Router().include(other, prefix="/tenants/{id}")


def test_include_requires_a_router():
    with pytest.raises(TypeError, match="expects a Router"):
        Router().include([], prefix="/api")  # type: ignore[arg-type]


def test_timeout_is_declared_per_route() -> None:
    router = Router()

    @router.get("/slow", timeout=2)
    async def slow(request: object) -> None:
        return None

    assert router.routes[0].timeout == 2.0
    assert router.routes[0].spec()["timeout"] == 2.0
    with pytest.raises(ValueError, match="positive"):
        router.get("/x", timeout=0)
    with pytest.raises(TypeError, match="seconds"):
        router.get("/x", timeout="1s")  # type: ignore[arg-type]


async def _streaming(request):
    return {}


def test_body_options_are_in_the_spec():
    router = Router()
    router.post("/up", stream=True, body_limit="64 MiB")(_streaming)
    router.post("/form", body_limit=1000, form={"name": Form(str, max_length=5)})(_streaming)
    router.post("/any-form", form={})(_streaming)
    up, form, any_form = (route.spec() for route in router.routes)
    assert (up["stream"], up["body_limit"], up["form"]) == (True, "64 MiB", None)
    assert form["body_limit"] == 1000
    assert form["form"] == {"name": Form(str, max_length=5).spec()}
    assert any_form["form"] == {}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stream": "yes"}, TypeError),
        ({"body_limit": 0}, ValueError),
        ({"body_limit": True}, TypeError),
        ({"body_limit": 1.5}, TypeError),
        ({"body_limit": " "}, ValueError),
        ({"stream": True, "form": {}}, ValueError),
        ({"form": {}, "body": {"type": "object"}}, ValueError),
        ({"form": {"a": Query(str)}}, TypeError),
    ],
)
def test_bad_body_options_are_refused(kwargs, error):
    with pytest.raises(error):
        Router().post("/x", **kwargs)(_streaming)


def test_a_streamed_route_needs_an_async_handler():
    def plain(request):
        return {}

    with pytest.raises(TypeError, match="must be an async def"):
        Router().post("/x", stream=True)(plain)
