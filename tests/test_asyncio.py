"""asyncio semantics inside handlers, and concurrency of async and blocking handlers."""

import threading
import time
from typing import Any

import httpx

from tests.harness import Server, fetch_concurrently


def test_current_task_exists_and_is_distinct_per_request(example_server: Server) -> None:
    responses = fetch_concurrently(example_server.url, ["/concurrency/task?delay=0.3"] * 10)
    payloads = [response.json() for response in responses]
    assert all(response.status == 200 for response in responses)
    assert all(p["has_task"] is True and p["same_task_after_await"] is True for p in payloads)
    assert len({p["task_id"] for p in payloads}) == 10, payloads


def test_context_variables_are_isolated_between_concurrent_requests(
    example_server: Server,
) -> None:
    labels = [f"request-{i}" for i in range(20)]
    responses = fetch_concurrently(
        example_server.url, [f"/concurrency/context?label={label}&delay=0.2" for label in labels]
    )
    for label, response in zip(labels, responses, strict=True):
        assert response.status == 200, response.body
        assert response.json() == {
            "before": None,
            "label": label,
            "after_await": label,
            "in_child_task": label,
        }


def test_context_variable_does_not_leak_into_the_next_request(client: httpx.Client) -> None:
    for label in ("first", "second", "third"):
        payload = client.get("/concurrency/context", params={"label": label, "delay": 0}).json()
        assert payload["before"] is None
        assert payload["after_await"] == label


def test_asyncio_timeout(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.get("/concurrency/timeout", params={"work": 5, "limit": 0.1})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json() == {"detail": "gave up after 0.1s"}
    assert elapsed < 3, f"the timeout did not cut the 5 s sleep short ({elapsed:.2f}s)"

    response = client.get("/concurrency/timeout", params={"work": 0, "limit": 2})
    assert response.status_code == 200
    assert response.json() == {"work": 0.0, "limit": 2.0, "finished": True}


def test_asyncio_gather_runs_concurrently(client: httpx.Client) -> None:
    response = client.get("/concurrency/gather", params={"n": 10, "delay": 0.2})
    assert response.status_code == 200
    payload = response.json()
    assert payload["results"] == [i * i for i in range(10)]
    assert payload["elapsed"] < 1.0, f"gather looks sequential: {payload}"


def test_many_concurrent_sleeping_requests(example_server: Server) -> None:
    fetch_concurrently(example_server.url, ["/concurrency/sleep?seconds=0"] * 5)  # warm up
    started = time.monotonic()
    responses = fetch_concurrently(example_server.url, ["/concurrency/sleep?seconds=0.2"] * 200)
    elapsed = time.monotonic() - started
    assert [response.status for response in responses] == [200] * 200
    assert all(response.json() == {"slept": 0.2} for response in responses)
    assert elapsed < 2.0, f"200 requests sleeping 0.2 s took {elapsed:.2f}s"


def test_blocking_sync_handler_does_not_stall_async_requests(
    example_server: Server, client: httpx.Client
) -> None:
    result: dict[str, Any] = {}

    def block() -> None:
        with example_server.client(timeout=30.0) as http:
            started = time.monotonic()
            response = http.get("/concurrency/blocking", params={"seconds": 1.0})
            result["elapsed"] = time.monotonic() - started
            result["response"] = response

    thread = threading.Thread(target=block)
    thread.start()
    try:
        time.sleep(0.2)  # let the blocking request reach its handler
        started = time.monotonic()
        response = client.get("/concurrency/sleep", params={"seconds": 0})
        elapsed = time.monotonic() - started
    finally:
        thread.join(30)
    assert response.status_code == 200
    assert elapsed < 0.5, f"an async request waited {elapsed:.2f}s behind a blocking handler"
    blocked = result["response"]
    assert blocked.status_code == 200
    assert blocked.json()["slept"] == 1.0
    assert blocked.json()["in_event_loop"] is False
    assert result["elapsed"] >= 1.0


def test_blocking_sync_handlers_run_in_parallel_threads(example_server: Server) -> None:
    started = time.monotonic()
    responses = fetch_concurrently(example_server.url, ["/concurrency/blocking?seconds=0.5"] * 6)
    elapsed = time.monotonic() - started
    assert all(response.status == 200 for response in responses)
    # Serially this would take 3 s; the example has 16 worker threads.
    assert elapsed < 2.0, f"6 blocking handlers of 0.5 s took {elapsed:.2f}s"
