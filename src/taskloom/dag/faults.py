"""Seeded fault injection (smallpond's `inject_fault`): fail attempts on purpose, reproducibly."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import TaskloomError

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
