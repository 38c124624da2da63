"""Collecting the figures of every round and rendering them as Markdown tables."""

import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from .scenarios import Scenario
from .servers import implements

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
    # Share of the machine's CPU time that went to processes other than the server, wrk and
    # the driver during the measured run (not a column: a warning when high).
    others: float = 0.0


@dataclass(frozen=True)
class SupervisorSample:
    """pyhost's supervisor in one cell (its own process only, not its workers)."""

    idle_cpu_us_per_s: float  # CPU over an idle window after start-up, per second
    load_cpu_us_per_s: float  # CPU over the measured run, per second
    load_cpu_share: float  # of the whole server tree's CPU over the measured run
    rss_before_mib: float  # VmRSS before the load (warm-up included)
    rss_after_mib: float  # VmRSS after the measured run


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
    """Everything measured in a run, keyed by (scenario, server, worker count)."""

    cells: dict[tuple[str, str, int], list[Measurement]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pyhost_stats: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    startup_s: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    supervisor: dict[tuple[str, str, int], list[SupervisorSample]] = field(default_factory=dict)
    # The SSE scenario's figures by server: each round's result and the worker's peak RSS (MiB).
    sse: dict[str, list[tuple[Any, float]]] = field(default_factory=dict)

    def add(self, scenario: str, server: str, measurement: Measurement, workers: int = 1) -> None:
        """Record one cell's figures."""
        self.cells.setdefault((scenario, server, workers), []).append(measurement)

    def median(self, scenario: str, server: str, workers: int = 1) -> Measurement | None:
        """Field-wise median over the rounds of one cell, or None if it never succeeded."""
        runs = self.cells.get((scenario, server, workers))
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


def server_label(server: str, workers: int, counts: list[int]) -> str:
    """How a server is named in tables: as itself when every server runs one worker."""
    return server if counts == [1] else f"{server} x{workers}"


def main_table(
    results: Results,
    scenarios: list[Scenario],
    servers: list[str],
    counts: list[int],
    ran: set[tuple[str, int]] | None = None,
) -> list[str]:
    """One row per (scenario, worker count, server), medians over rounds.

    Peer cells carry pyhost/peer, pyhost with as many workers. A ``workers`` column appears
    when some server runs more than one. ``ran``: the (server, workers) measured, if not all.
    A server has no row for a scenario its app does not implement.
    """
    multi = counts != [1]
    head = ["scenario", "server", *(["workers"] if multi else []), *(c[1] for c in COLUMNS)]
    lines = _header(head, right_from=2)
    for scenario, workers, server, reference, median in _cells(
        results, scenarios, servers, counts, ran
    ):
        first = [scenario.name, server, *([str(workers)] if multi else [])]
        if median is None:
            lines.append(_row([*first, *(["FAILED"] * len(COLUMNS))]))
            continue
        cells = []
        for attr, _, fmt in COLUMNS:
            text = fmt(getattr(median, attr))
            if server != PYHOST and reference is not None:
                ratio = _ratio(getattr(reference, attr), getattr(median, attr))
                text += f" ({ratio})" if ratio else ""
            cells.append(text)
        lines.append(_row([*first, *cells]))
    return lines


def _cells(
    results: Results,
    scenarios: list[Scenario],
    servers: list[str],
    counts: list[int],
    ran: set[tuple[str, int]] | None,
) -> Iterator[tuple[Scenario, int, str, Measurement | None, Measurement | None]]:
    """Every (scenario, workers, server) cell a table shows, in table order, with pyhost's
    median for the same scenario and workers (the reference) and the cell's own (None: it
    failed). Servers not measured (``ran``) or whose app lacks the scenario are left out."""
    for scenario in scenarios:
        for workers in counts:
            reference = results.median(scenario.name, PYHOST, workers)
            for server in servers:
                if ran is not None and (server, workers) not in ran:
                    continue
                if not implements(server, scenario.name):
                    continue
                median = results.median(scenario.name, server, workers)
                yield scenario, workers, server, reference, median


def scaling_table(
    results: Results, scenarios: list[Scenario], servers: list[str], workers: int
) -> list[str]:
    """Each server with ``workers`` workers against itself with one, from the same run."""
    lines = _header(
        [
            "scenario",
            "server",
            "req/s x1",
            f"req/s x{workers}",
            f"req/s x{workers}/x1",
            f"efficiency (x{workers}/x1 / {workers})",
            f"CPU µs/req x{workers}/x1",
            f"p99 x{workers}/x1",
        ],
        right_from=2,
    )
    for scenario in scenarios:
        for server in servers:
            if not implements(server, scenario.name):
                continue
            one = results.median(scenario.name, server, 1)
            many = results.median(scenario.name, server, workers)
            if one is None or many is None:
                lines.append(_row([scenario.name, server, *(["FAILED"] * 6)]))
                continue
            speedup = many.rps / one.rps if one.rps else 0.0
            lines.append(
                _row(
                    [
                        scenario.name,
                        server,
                        f"{one.rps:,.0f}",
                        f"{many.rps:,.0f}",
                        f"{speedup:.2f}x",
                        f"{speedup / workers:.2f}",
                        _ratio(many.cpu_us_per_req, one.cpu_us_per_req),
                        _ratio(many.p99_ms, one.p99_ms),
                    ]
                )
            )
    return lines


def middleware_table(
    results: Results,
    servers: list[str],
    counts: list[int],
    ran: set[tuple[str, int]] | None = None,
    *,
    bare: str = "hello",
    wrapped: str = "mw",
) -> list[str]:
    """Each server's ``wrapped`` scenario (behind one middleware) against its own ``bare`` one.

    Empty when no server ran both.
    """
    multi = counts != [1]
    head = [
        "server",
        *(["workers"] if multi else []),
        f"req/s {bare}",
        f"req/s {wrapped}",
        f"req/s {wrapped}/{bare}",
        f"CPU µs/req {bare}",
        f"CPU µs/req {wrapped}",
        "middleware CPU µs/req",
        f"p99 ms {bare}",
        f"p99 ms {wrapped}",
        f"p99 {wrapped}/{bare}",
    ]
    rows: list[str] = []
    for workers in counts:
        for server in servers:
            if ran is not None and (server, workers) not in ran:
                continue
            if not (implements(server, bare) and implements(server, wrapped)):
                continue
            plain = results.median(bare, server, workers)
            through = results.median(wrapped, server, workers)
            if plain is None or through is None:
                continue
            rows.append(
                _row(
                    [
                        server,
                        *([str(workers)] if multi else []),
                        f"{plain.rps:,.0f}",
                        f"{through.rps:,.0f}",
                        _ratio(through.rps, plain.rps),
                        f"{plain.cpu_us_per_req:.1f}",
                        f"{through.cpu_us_per_req:.1f}",
                        f"{through.cpu_us_per_req - plain.cpu_us_per_req:+.1f}",
                        f"{plain.p99_ms:.2f}",
                        f"{through.p99_ms:.2f}",
                        _ratio(through.p99_ms, plain.p99_ms),
                    ]
                )
            )
    return [*_header(head, right_from=2 if multi else 1), *rows] if rows else []


def files_table(
    results: Results,
    scenarios: list[Scenario],
    servers: list[str],
    counts: list[int],
    ran: set[tuple[str, int]] | None = None,
) -> list[str]:
    """The download scenarios as throughput (MiB/s) and CPU per GiB sent, peers with
    pyhost/peer in brackets (above 1x pyhost is ahead for MiB/s, below 1x for CPU). Empty
    when the run had no download."""
    multi = counts != [1]
    head = ["scenario", "server", *(["workers"] if multi else [])]
    head += ["MiB/s", "CPU ms/GiB", "core busy"]
    rows: list[str] = []
    downloads = [scenario for scenario in scenarios if scenario.file_size]
    for scenario, workers, server, reference, median in _cells(
        results, downloads, servers, counts, ran
    ):
        if median is None:
            continue
        per_gib = (1 << 30) / scenario.file_size
        mib_s = median.rps * scenario.file_size / (1 << 20)
        cpu_ms_gib = median.cpu_us_per_req * per_gib / 1000
        busy = median.rps * median.cpu_us_per_req / 1e6
        cells = [f"{mib_s:,.0f}", f"{cpu_ms_gib:,.0f}", f"{busy:.0%}"]
        if server != PYHOST and reference is not None:
            cells[0] += f" ({_ratio(reference.rps, median.rps)})"
            ratio = _ratio(reference.cpu_us_per_req, median.cpu_us_per_req)
            cells[1] += f" ({ratio})"
        first = [scenario.name, server, *([str(workers)] if multi else [])]
        rows.append(_row([*first, *cells]))
    return [*_header(head, right_from=2), *rows] if rows else []


def supervisor_table(results: Results, scenarios: list[Scenario]) -> list[str]:
    """Medians of pyhost's supervisor's own CPU and memory, per cell kind."""
    if not results.supervisor:
        return ["No pyhost server ran with more than one worker."]
    lines = _header(
        [
            "scenario",
            "server",
            "workers",
            "runs",
            "idle CPU µs/s",
            "CPU under load µs/s",
            "share of the tree's CPU",
            "VmRSS before load MiB",
            "VmRSS after load MiB",
        ],
        right_from=2,
    )
    order = {scenario.name: index for index, scenario in enumerate(scenarios)}
    for key in sorted(results.supervisor, key=lambda k: (order.get(k[0], -1), k[1], k[2])):
        samples = results.supervisor[key]

        def med(attr: str, samples: list[SupervisorSample] = samples) -> float:
            return float(statistics.median(getattr(sample, attr) for sample in samples))

        lines.append(
            _row(
                [
                    key[0],
                    key[1],
                    str(key[2]),
                    str(len(samples)),
                    f"{med('idle_cpu_us_per_s'):,.0f}",
                    f"{med('load_cpu_us_per_s'):,.0f}",
                    f"{med('load_cpu_share'):.2%}",
                    f"{med('rss_before_mib'):.1f}",
                    f"{med('rss_after_mib'):.1f}",
                ]
            )
        )
    return lines


def startup_table(
    results: Results,
    servers: list[str],
    counts: list[int],
    ran: set[tuple[str, int]] | None = None,
) -> list[str]:
    """Median time from exec to the first 200 on /hello, per server, with pyhost/peer."""
    lines = _header(["server", "runs", "start-up ms (median)", "pyhost/peer"], right_from=1)
    for workers in counts:
        reference = results.startup_s.get((PYHOST, workers))
        for server in servers:
            if ran is not None and (server, workers) not in ran:
                continue
            label = server_label(server, workers, counts)
            samples = results.startup_s.get((server, workers))
            if not samples:
                lines.append(_row([label, "0", "FAILED", ""]))
                continue
            median = statistics.median(samples)
            ratio = (
                ""
                if server == PYHOST or not reference
                else _ratio(statistics.median(reference), median)
            )
            lines.append(_row([label, str(len(samples)), f"{median * 1000:.1f}", ratio]))
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
