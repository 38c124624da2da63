"""Times host services from inside a handler: ns per call, best of several repeats."""

import time
from collections.abc import Callable

from pyhost import Query, Request, Router, host

router = Router()


def _best_ns(call: Callable[[], object], number: int, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter_ns() - start) / number)
    return best


@router.get("/micro", query={"n": Query(int, default=100_000, ge=1)})
def micro(request: Request) -> dict[str, float]:
    number = request.query["n"]
    host.kv.set("key", b"value")
    binding = host.implementation.binding  # the cffi binding of the C table
    plugin = request.plugin
    empty = _best_ns(lambda: None, number)
    return {
        "empty_loop_ns": empty,
        "call_noop_ns": _best_ns(lambda: host.call("noop"), number) - empty,
        "kv_get_ns": _best_ns(lambda: host.kv.get("key"), number) - empty,
        "log_ns": _best_ns(lambda: host.log("debug", "x"), number) - empty,
        "abi_call_noop_ns": _best_ns(lambda: binding.call(plugin, "noop", b"null"), number) - empty,
        "abi_kv_get_ns": _best_ns(lambda: binding.kv_get(plugin, "key"), number) - empty,
        "abi_log_ns": _best_ns(lambda: binding.log(plugin, 10, "x", "", b"{}"), number) - empty,
    }
