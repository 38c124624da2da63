from collections.abc import Mapping

import pytest

from pyhost import Headers, QueryParams

RAW_HEADERS = [
    ("Content-Type", "application/json"),
    ("Accept", "text/html"),
    ("X-Trace", "a"),
    ("x-trace", "b"),
]


def test_headers_lookup_is_case_insensitive_and_takes_the_first_value():
    headers = Headers(RAW_HEADERS)
    assert isinstance(headers, Mapping)
    assert headers["content-type"] == "application/json"
    assert headers["CONTENT-TYPE"] == "application/json"
    assert headers["x-trace"] == "a"
    assert headers.get("X-TRACE") == "a"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    with pytest.raises(KeyError):
        headers["missing"]


def test_headers_getlist_and_views_keep_duplicates():
    headers = Headers(RAW_HEADERS)
    assert headers.getlist("X-Trace") == ["a", "b"]
    assert headers.getlist("missing") == []
    assert headers.items() == [
        ("content-type", "application/json"),
        ("accept", "text/html"),
        ("x-trace", "a"),
        ("x-trace", "b"),
    ]
    assert headers.keys() == ["content-type", "accept", "x-trace", "x-trace"]
    assert headers.values() == ["application/json", "text/html", "a", "b"]
    assert list(headers) == headers.keys()
    assert len(headers) == 4


def test_headers_contains():
    headers = Headers(RAW_HEADERS)
    assert "Accept" in headers
    assert "accept" in headers
    assert "authorization" not in headers
    assert 1 not in headers


def test_headers_equality():
    headers = Headers(RAW_HEADERS)
    reordered = Headers(
        [
            ("x-trace", "a"),
            ("accept", "text/html"),
            ("X-TRACE", "b"),
            ("Content-Type", "application/json"),
        ]
    )
    assert headers == reordered
    assert headers != Headers(list(reversed(RAW_HEADERS)))  # x-trace values swapped
    assert headers != Headers(RAW_HEADERS[:2])
    assert headers != dict(headers)
    assert Headers() == Headers([])


def test_headers_repr_and_mapping_input():
    headers = Headers({"Host": "example.com"})
    assert repr(headers) == "Headers([('host', 'example.com')])"
    assert dict(headers) == {"host": "example.com"}


def test_headers_are_read_only():
    headers = Headers(RAW_HEADERS)
    with pytest.raises(TypeError):
        headers["x"] = "y"  # type: ignore[index]


def test_headers_reject_non_string_pairs():
    with pytest.raises(TypeError, match=r"\(str, str\) pairs"):
        Headers([("x", b"y")])  # type: ignore[list-item]


RAW_QUERY = [("tag", "a"), ("page", "2"), ("tag", "b"), ("empty", "")]


def test_query_params_take_the_last_value():
    params = QueryParams(RAW_QUERY)
    assert isinstance(params, Mapping)
    assert params["tag"] == "b"
    assert params["page"] == "2"
    assert params["empty"] == ""
    assert params.get("tag") == "b"
    assert params.get("missing") is None
    with pytest.raises(KeyError):
        params["missing"]


def test_query_params_keys_in_first_seen_order():
    params = QueryParams(RAW_QUERY)
    assert list(params) == ["tag", "page", "empty"]
    assert list(params.keys()) == ["tag", "page", "empty"]
    assert list(params.values()) == ["b", "2", ""]
    assert list(params.items()) == [("tag", "b"), ("page", "2"), ("empty", "")]
    assert len(params) == 3


def test_query_params_getlist_and_multi_items():
    params = QueryParams(RAW_QUERY)
    assert params.getlist("tag") == ["a", "b"]
    assert params.getlist("missing") == []
    assert params.multi_items() == RAW_QUERY
    assert "page" in params
    assert "Page" not in params


def test_query_params_equality_and_repr():
    params = QueryParams(RAW_QUERY)
    assert params == QueryParams([("page", "2"), ("tag", "a"), ("empty", ""), ("tag", "b")])
    assert params != QueryParams([("page", "2"), ("tag", "b"), ("empty", ""), ("tag", "a")])
    assert QueryParams({"a": "1"}) == QueryParams([("a", "1")])
    assert repr(QueryParams([("a", "1")])) == "QueryParams([('a', '1')])"


def test_query_params_are_case_sensitive_and_read_only():
    params = QueryParams([("Key", "v")])
    assert "key" not in params
    with pytest.raises(TypeError):
        params["Key"] = "w"  # type: ignore[index]
