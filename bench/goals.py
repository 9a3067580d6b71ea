"""The performance goals, each computed from a report's medians.

A goal is a ratio against a peer measured in the same run (or an absolute latency or rate
where the goal is one); a missing measurement leaves the row empty, never guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .results import Report

FLOOR = "redis-floor"


@dataclass(frozen=True)
class Goal:
    """One row: what is measured, how to compute it, the bar and its direction."""

    what: str
    value: Callable[[Report], float | None]
    bar: float
    unit: str
    higher_is_better: bool = True

    def met(self, value: float) -> bool:
        """True if `value` reaches the bar."""
        return value >= self.bar if self.higher_is_better else value <= self.bar


def median(report: Report, phase: str, store: str, system: str, metric: str) -> float | None:
    """The median of one measurement, or None if it was not taken."""
    for m in report.measurements:
        if (m.phase, m.store, m.system, m.metric) == (phase, store, system, metric):
            return m.median if m.samples else None
    return None


def _ratio(
    phase: str, metric: str, store: str, peer: str, peer_store: str | None = None
) -> Callable[[Report], float | None]:
    def compute(report: Report) -> float | None:
        mine = median(report, phase, store, "taskloom", metric)
        theirs = median(report, phase, peer_store or store, peer, metric)
        return None if mine is None or not theirs else mine / theirs

    return compute


def _own(phase: str, store: str, metric: str) -> Callable[[Report], float | None]:
    return lambda report: median(report, phase, store, "taskloom", metric)


GOALS = (
    Goal("Redis sequential enqueue / huey", _ratio("a", "enqueue", "redis", "huey"), 1.0, "x"),
    Goal("Redis end to end (per-call producer) / huey", _ratio("c", "runs", "redis", "huey"),
         2.0, "x"),
    Goal("Redis enqueue→result p50", _own("d", "redis", "p50"), 0.5, "ms", False),
    Goal("Redis enqueue→result p99", _own("d", "redis", "p99"), 2.0, "ms", False),
    Goal("SQLite end to end / huey on Redis", _ratio("c", "runs", "sqlite", "huey", "redis"),
         1.0, "x"),
    Goal("PostgreSQL end to end / procrastinate",
         _ratio("c", "runs", "postgres", "procrastinate"), 5.0, "x"),
    Goal("inline child overhead, SQLite", _own("f", "sqlite", "overhead per child"), 100.0,
         "µs", False),
    Goal("inline child overhead, Redis", _own("f", "redis", "overhead per child"), 100.0,
         "µs", False),
    Goal("bulk enqueue, SQLite", _own("b", "sqlite", "bulk enqueue"), 50_000.0, "runs/s"),
    Goal("bulk enqueue, Redis", _own("b", "redis", "bulk enqueue"), 50_000.0, "runs/s"),
    Goal("bulk enqueue, PostgreSQL", _own("b", "postgres", "bulk enqueue"), 50_000.0, "runs/s"),
)  # fmt: skip

#: The bare-Redis floor printed beside the goals: (label, phase, metric).
FLOOR_ROWS = (
    ("enqueue", "a", "enqueue"),
    ("end to end", "c", "runs"),
    ("p50", "d", "p50"),
)
