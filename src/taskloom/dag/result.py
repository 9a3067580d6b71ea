"""What a DAG run returns: results by node name, and per-node metrics."""

from __future__ import annotations

import pstats
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..run import TaskRun, TaskState
from .faults import INJECTED


@dataclass
class NodeMetrics:
    """One node's figures for one DAG run.

    `elapsed` is wall time from `initialize` to the end of `cleanup`; `runs` counts every run
    launched (partitions and speculative copies), `attempts` and `failures` their attempts;
    `speculative` the copies launched and `speculative_wins` those that won; `run_seconds`
    sums the winning runs' execution time; `counters` sums what tasks put in `ctx.metrics`.
    `skipped` is True when `skip_when_any_input_empty` skipped the node; `profile` holds the
    cProfile statistics of its winning runs (`Node(perf_profile=True)`), merged.
    """

    elapsed: float = 0.0
    runs: int = 0
    attempts: int = 0
    failures: int = 0
    injected_faults: int = 0
    speculative: int = 0
    speculative_wins: int = 0
    run_seconds: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    profile: pstats.Stats | None = None

    def count_runs(self, launched: Sequence[TaskRun], winners: Sequence[TaskRun]) -> None:
        """Fold the node's runs into the figures."""
        self.runs = len(launched)
        for run in launched:
            self.attempts += len(run.attempts)
            for past in run.attempts:
                if past.state is TaskState.failure:
                    self.failures += 1
                    if past.error and past.error.get("type") == INJECTED:
                        self.injected_faults += 1
        for run in winners:
            for key, value in run.metrics.items():
                if key == "elapsed":
                    self.run_seconds += value
                else:
                    self.counters[key] = self.counters.get(key, 0.0) + value


class DagResult(Mapping[str, Any]):
    """Node name → result (a list, one item per partition, for a partitioned node).

    Also `.results` (the same, as a dict), `.metrics` (node name → `NodeMetrics`), `.runs`
    (node name → the winning run of each partition), `.seed` (the fault-injection seed used:
    pass it back to reproduce a run) and `.dag_id` (tagged `dag:<id>` on every run).
    """

    def __init__(
        self,
        results: dict[str, Any],
        metrics: dict[str, NodeMetrics],
        runs: dict[str, list[TaskRun]],
        seed: int,
        dag_id: str,
    ) -> None:
        self.results = results
        self.metrics = metrics
        self.runs = runs
        self.seed = seed
        self.dag_id = dag_id

    def __getitem__(self, name: str) -> Any:
        return self.results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"DagResult({self.results!r})"
