"""CPU pinning: the server on its cores, the load generator (and this driver) on another.

With one worker the server gets the first core and wrk the second. A server of N workers gets
the first N cores and wrk the next one; when the machine has no core left over (2 workers on
2 cores), the server may use every core and wrk shares them: the load generator then competes
with the workers, and the report says so.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Pinning:
    """The cores used, or None for both when the machine has a single core (no pinning)."""

    server_cores: tuple[int, ...] | None
    load_cores: tuple[int, ...] | None
    workers: int = 1

    @classmethod
    def detect(cls, workers: int = 1) -> "Pinning":
        """Pin to the cores this process may use; no pinning on a single core."""
        cores = sorted(os.sched_getaffinity(0))
        return cls.for_cores(cores, workers)

    @classmethod
    def for_cores(cls, cores: list[int], workers: int = 1) -> "Pinning":
        """The pinning of a server of ``workers`` workers on ``cores``."""
        if len(cores) < 2:
            return cls(None, None, workers)
        if len(cores) > workers:
            return cls(tuple(cores[:workers]), (cores[workers],), workers)
        return cls(tuple(cores), tuple(cores), workers)

    @property
    def enabled(self) -> bool:
        """Whether processes are pinned at all."""
        return self.server_cores is not None

    @property
    def shared(self) -> bool:
        """Whether wrk and the driver run on the server's cores."""
        return self.enabled and self.server_cores == self.load_cores

    @staticmethod
    def _prefix(cores: tuple[int, ...] | None) -> list[str]:
        return [] if cores is None else ["taskset", "-c", ",".join(map(str, cores))]

    def server_prefix(self) -> list[str]:
        """``taskset`` prefix for a server command (empty without pinning)."""
        return self._prefix(self.server_cores)

    def load_prefix(self) -> list[str]:
        """``taskset`` prefix for the load generator (empty without pinning)."""
        return self._prefix(self.load_cores)

    def pin_driver(self) -> None:
        """Move this driver to the load generator's core(s), off the server's."""
        if self.load_cores is not None:
            os.sched_setaffinity(0, set(self.load_cores))

    def describe(self) -> str:
        """One line for the report."""
        if not self.enabled:
            return "single core: NOT pinned (server and wrk share the core; figures are rougher)"
        assert self.server_cores is not None and self.load_cores is not None
        server = ",".join(map(str, self.server_cores))
        if self.workers == 1:
            return f"server pinned to core {server}, wrk and driver to core {self.load_cores[0]}"
        if self.shared:
            return (
                f"{self.workers} workers: server allowed cores {server}, and wrk and driver "
                f"SHARE them (no core left over: the load generator competes with the workers)"
            )
        return (
            f"{self.workers} workers: server allowed cores {server}, wrk and driver pinned to "
            f"core {self.load_cores[0]}"
        )
