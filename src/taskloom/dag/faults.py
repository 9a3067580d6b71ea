"""Seeded fault injection (smallpond's `inject_fault`): fail attempts on purpose, reproducibly."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import TaskloomError
from ..run import current_run

INJECTED = "InjectedFaultError"


class InjectedFaultError(TaskloomError):
    """An attempt failed on purpose (`dag.run(fail_prob=...)`); retries recover from it."""


@dataclass(frozen=True)
class FaultInjector:
    """Decides, per attempt, whether to fail it.

    Each decision is drawn from an RNG seeded by (seed, node, partition, copy, attempt), so it
    does not depend on the order concurrent runs happen to start in: one seed, one outcome.
    """

    fail_prob: float
    seed: int

    def should_fail(self, node: str, partition: int, copy: int, attempt: int) -> bool:
        """True if this attempt is to fail."""
        if self.fail_prob <= 0.0:
            return False
        rng = random.Random(f"{self.seed}|{node}|{partition}|{copy}|{attempt}")
        return rng.random() < self.fail_prob


@dataclass(frozen=True)
class FaultingPre:
    """A task `pre` hook that injects the fault, then calls the task's own `pre`.

    It runs inside the attempt, so the runner records the failure and the retry policy
    applies exactly as for a real one. A module-level dataclass so process executors can
    pickle it.
    """

    injector: FaultInjector
    node: str
    partition: int
    copy: int
    inner: Callable[..., Any] | None = None

    def __call__(self, **kwargs: Any) -> Any:
        run = current_run()
        attempt = run.retry_attempt if run is not None else 0
        if self.injector.should_fail(self.node, self.partition, self.copy, attempt):
            raise InjectedFaultError(
                f"injected fault: node {self.node!r} partition {self.partition} copy "
                f"{self.copy} attempt {attempt} (seed {self.injector.seed})"
            )
        return self.inner(**kwargs) if self.inner is not None else kwargs
