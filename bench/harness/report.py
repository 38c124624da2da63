"""Collecting the figures of every round and rendering them as Markdown tables."""

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from .scenarios import Scenario

PYHOST = "pyhost"


@dataclass(frozen=True)
class Measurement:
    """The figures of one cell (one server, one scenario, one round)."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    rss_mib: float
    errors: float


# (attribute, column header, formatter) of the main table, in column order.
COLUMNS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("rps", "req/s", lambda v: f"{v:,.0f}"),
    ("p50_ms", "p50 ms", lambda v: f"{v:.2f}"),
    ("p99_ms", "p99 ms", lambda v: f"{v:.2f}"),
    ("cpu_us_per_req", "CPU µs/req", lambda v: f"{v:.1f}"),
    ("rss_mib", "worker peak RSS MiB", lambda v: f"{v:.1f}"),
    ("errors", "errors", lambda v: f"{v:,.0f}"),
)


@dataclass
class Results:
    """Everything measured in a run, keyed by (scenario, server)."""

    cells: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pyhost_stats: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    startup_s: dict[str, list[float]] = field(default_factory=dict)

    def add(self, scenario: str, server: str, measurement: Measurement) -> None:
        """Record one cell's figures."""
        self.cells.setdefault((scenario, server), []).append(measurement)

    def median(self, scenario: str, server: str) -> Measurement | None:
        """Field-wise median over the rounds of one cell, or None if it never succeeded."""
        runs = self.cells.get((scenario, server))
        if not runs:
            return None
        values = {
            f.name: statistics.median(getattr(m, f.name) for m in runs) for f in fields(runs[0])
        }
        return Measurement(**values)


def _ratio(pyhost: float, peer: float) -> str:
    """``pyhost / peer`` as ``1.32x``; empty for 0/0, ``inf`` for x/0."""
    if peer == 0:
        return "" if pyhost == 0 else "inf"
    return f"{pyhost / peer:.2f}x"


def _number(value: float) -> str:
    """A figure of the stats table: no decimals when it is whole."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _row(cells: Iterable[str]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _header(names: list[str], right_from: int) -> list[str]:
    """Markdown header and alignment rows; columns from ``right_from`` on are right-aligned."""
    align = ["---" if i < right_from else "---:" for i in range(len(names))]
    return [_row(names), _row(align)]


def main_table(results: Results, scenarios: list[Scenario], servers: list[str]) -> list[str]:
    """One row per (scenario, server), medians over rounds; peer cells carry pyhost/peer."""
    lines = _header(["scenario", "server", *(c[1] for c in COLUMNS)], right_from=2)
    for scenario in scenarios:
        reference = results.median(scenario.name, PYHOST)
        for server in servers:
            median = results.median(scenario.name, server)
            if median is None:
                lines.append(_row([scenario.name, server, *(["FAILED"] * len(COLUMNS))]))
                continue
            cells = []
            for attr, _, fmt in COLUMNS:
                text = fmt(getattr(median, attr))
                if server != PYHOST and reference is not None:
                    ratio = _ratio(getattr(reference, attr), getattr(median, attr))
                    text += f" ({ratio})" if ratio else ""
                cells.append(text)
            lines.append(_row([scenario.name, server, *cells]))
    return lines


def startup_table(results: Results, servers: list[str]) -> list[str]:
    """Median time from exec to the first 200 on /hello, per server, with pyhost/peer."""
    lines = _header(["server", "runs", "start-up ms (median)", "pyhost/peer"], right_from=1)
    reference = results.startup_s.get(PYHOST)
    for server in servers:
        samples = results.startup_s.get(server)
        if not samples:
            lines.append(_row([server, "0", "FAILED", ""]))
            continue
        median = statistics.median(samples)
        ratio = (
            ""
            if server == PYHOST or not reference
            else _ratio(statistics.median(reference), median)
        )
        lines.append(_row([server, str(len(samples)), f"{median * 1000:.1f}", ratio]))
    return lines


def pyhost_stats_table(results: Results) -> list[str]:
    """Medians of the ``pyhost stats:`` figures per scenario; a note when pyhost printed none."""
    keys: list[str] = []
    for runs in results.pyhost_stats.values():
        for stats in runs:
            keys.extend(key for key in stats if key not in keys)
    if not keys:
        return ["pyhost printed no `pyhost stats:` line at shutdown: no figures from the host."]
    lines = _header(["scenario", "runs", *keys], right_from=1)
    for label, runs in results.pyhost_stats.items():
        cells = []
        for key in keys:
            values = [stats[key] for stats in runs if key in stats]
            cells.append(_number(statistics.median(values)) if values else "n/a")
        lines.append(_row([label, str(len(runs)), *cells]))
    return lines
