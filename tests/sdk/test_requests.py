"""`isinstance(obj, pyhost.Request)`: a structural check that never reads an attribute."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest

import pyhost
from pyhost import Headers, QueryParams, Request

ATTRIBUTES = (
    "method",
    "path",
    "url",
    "query_string",
    "path_params",
    "query_params",
    "query",
    "headers",
    "body",
    "json",
    "client",
    "request_id",
    "route",
)


class FakeRequest:
    """A test double with every attribute of a request, as a handler's tests might write one."""

    def __init__(self, **attributes: Any) -> None:
        self.method = "GET"
        self.path = "/users/42"
        self.url = "http://test/users/42?page=2"
        self.query_string = "page=2"
        self.path_params = {"user_id": 42}
        self.query_params = QueryParams([("page", "2")])
        self.query = {"page": 2}
        self.headers = Headers([("accept", "application/json")])
        self.last_event_id: str | None = None
        self.body = b""
        self.json = None
        self.client = ("127.0.0.1", 50000)
        self.request_id = "r-1"
        self.route = "/users/{user_id:int}"
        self.state = pyhost.State()
        self.header_params: dict[str, Any] = {}
        self.cookies: dict[str, Any] = {}
        self.form_params: dict[str, Any] = {}
        vars(self).update(attributes)

    async def _chunks(self) -> AsyncIterator[bytes]:
        yield self.body

    def stream(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def form(self) -> pyhost.FormData:
        return pyhost.FormData()

    def __getitem__(self, key: str) -> Any:
        if key not in ATTRIBUTES:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in ATTRIBUTES else default

    def __contains__(self, key: object) -> bool:
        return key in ATTRIBUTES


class LazyRequest:
    """Like the host's request: a class without `__dict__` whose attributes are computed on
    access; reading `json` fails as it does for a malformed body."""

    __slots__ = ("reads",)

    def __init__(self) -> None:
        self.reads: list[str] = []

    def _read(self, name: str) -> Any:
        self.reads.append(name)
        if name == "json":
            raise pyhost.HTTPError(400, "Malformed JSON body")
        return None

    method = property(lambda self: self._read("method"))
    path = property(lambda self: self._read("path"))
    url = property(lambda self: self._read("url"))
    query_string = property(lambda self: self._read("query_string"))
    path_params = property(lambda self: self._read("path_params"))
    query_params = property(lambda self: self._read("query_params"))
    query = property(lambda self: self._read("query"))
    headers = property(lambda self: self._read("headers"))
    last_event_id = property(lambda self: self._read("last_event_id"))
    body = property(lambda self: self._read("body"))
    json = property(lambda self: self._read("json"))
    client = property(lambda self: self._read("client"))
    request_id = property(lambda self: self._read("request_id"))
    route = property(lambda self: self._read("route"))
    state = property(lambda self: self._read("state"))
    header_params = property(lambda self: self._read("header_params"))
    cookies = property(lambda self: self._read("cookies"))
    form_params = property(lambda self: self._read("form_params"))

    def stream(self) -> Any:
        return self._read("stream")

    def form(self) -> Any:
        return self._read("form")

    def __getitem__(self, key: str) -> Any:
        return self._read(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._read(key)

    def __contains__(self, key: object) -> bool:
        return True


def test_an_object_with_the_attributes_is_a_request():
    assert isinstance(FakeRequest(), Request)
    assert isinstance(FakeRequest(), pyhost.Request)


def test_the_check_never_reads_an_attribute():
    request = LazyRequest()
    assert isinstance(request, Request)
    assert request.reads == []


@pytest.mark.parametrize(
    "value",
    [
        {name: None for name in ATTRIBUTES},
        {},
        None,
        "GET /",
        object(),
        Headers(),
    ],
    ids=["dict-with-the-names", "dict", "none", "str", "object", "headers"],
)
def test_other_objects_are_not_requests(value: object):
    assert not isinstance(value, Request)


@pytest.mark.parametrize("missing", ATTRIBUTES)
def test_an_object_missing_an_attribute_is_not_a_request(missing: str):
    request = FakeRequest()
    delattr(request, missing)
    assert not isinstance(request, Request)


def test_special_methods_count_only_on_the_class():
    # Python never calls `request["x"]` through an instance attribute, so neither may the check.
    namespace = types.SimpleNamespace(
        **{name: None for name in ATTRIBUTES},
        get=lambda key, default=None: default,
        __getitem__=lambda key: None,
        __contains__=lambda key: False,
    )
    assert not isinstance(namespace, Request)


def test_a_method_set_to_none_opts_out():
    # As with typing's check (and `__hash__ = None`): the class says it has no such method.
    class WithoutGet(FakeRequest):
        get = None

    assert not isinstance(WithoutGet(), Request)


def test_a_class_deriving_from_request_is_one():
    class Derived(Request):
        pass

    assert isinstance(Derived(), Request)


def test_a_protocol_extending_request_keeps_typings_check():
    class WithUser(Request, Protocol):
        @property
        def user(self) -> str: ...

    assert isinstance(FakeRequest(user="ada"), WithUser)
    assert not isinstance(FakeRequest(), WithUser)


def test_issubclass_is_still_refused():
    # As for every protocol with attributes: whether a class has them depends on its instances.
    with pytest.raises(TypeError):
        issubclass(FakeRequest, Request)
