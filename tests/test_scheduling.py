"""The CPU scheduling policy of the server's threads (`server.sched_batch`)."""

import pytest

from tests.harness import ServerFactory, make_config

APP = {
    "app/__init__.py": """
import os

from pyhost import Router

router = Router()


def _policy(stat: str) -> int:
    # Field 41 of stat is the policy; index 0 after the command name is field 3.
    return int(stat.rsplit(")", 1)[1].split()[38])


@router.get("/policies")
async def policies(request):
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        with open(f"{base}/comm") as comm, open(f"{base}/stat") as stat:
            threads[f"{comm.read().strip()}-{tid}"] = _policy(stat.read())
    return {"threads": threads, "batch": os.SCHED_BATCH}
""",
}


@pytest.mark.parametrize(("setting", "expect_batch"), [(None, True), ("false", False)])
def test_server_threads_run_under_the_configured_policy(
    server_factory: ServerFactory, setting: str | None, expect_batch: bool
) -> None:
    config = make_config(server="" if setting is None else f"sched_batch = {setting}")
    with server_factory.serve(APP, config) as server, server.client() as http:
        payload = http.get("/policies").json()
    threads: dict[str, int] = payload["threads"]
    names = {name.rsplit("-", 1)[0] for name in threads}
    # The tokio workers and the loop thread are both there to check.
    assert {"pyhost-io", "pyhost-loop"} <= names
    for name, policy in threads.items():
        assert (policy == payload["batch"]) is expect_batch, f"{name}: policy {policy} in {threads}"
