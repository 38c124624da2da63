"""CPU pinning: the server on one core, the load generator (and this driver) on another."""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Pinning:
    """The cores used, or None for both when the machine has a single core (no pinning)."""

    server_core: int | None
    load_core: int | None

    @classmethod
    def detect(cls) -> "Pinning":
        """Pin to the first two cores this process may use; no pinning on a single core."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(cores[0], cores[1])

    @property
    def enabled(self) -> bool:
        """Whether processes are pinned at all."""
        return self.server_core is not None

    def server_prefix(self) -> list[str]:
        """``taskset`` prefix for a server command (empty without pinning)."""
        return [] if self.server_core is None else ["taskset", "-c", str(self.server_core)]

    def load_prefix(self) -> list[str]:
        """``taskset`` prefix for the load generator (empty without pinning)."""
        return [] if self.load_core is None else ["taskset", "-c", str(self.load_core)]

    def pin_driver(self) -> None:
        """Move this driver to the load generator's core, off the server's core."""
        if self.load_core is not None:
            os.sched_setaffinity(0, {self.load_core})

    def describe(self) -> str:
        """One line for the report."""
        if not self.enabled:
            return "single core: NOT pinned (server and wrk share the core; figures are rougher)"
        return f"server pinned to core {self.server_core}, wrk and driver to core {self.load_core}"
