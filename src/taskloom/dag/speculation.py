"""Speculative execution: a partition that runs long next to its siblings is launched again.

Each partition is a `Race` of one or two copies (each its own run); the first copy to succeed
wins and the other is cancelled (its run ends `aborted`). A copy that fails for good does not
end the race while another copy is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..run import TaskRun, TaskState

LOST_RACE = "lost a speculative race"  # the cancel message a losing copy records


@dataclass(frozen=True)
class SpeculationPolicy:
    """When to launch a copy: past `quantile` of finished siblings' times and `min_seconds`."""

    quantile: float = 0.75
    min_seconds: float = 1.0
    interval: float = 0.5

    def threshold(self, durations: Sequence[float]) -> float | None:
        """Run time past which a partition is a straggler; None until a sibling finished."""
        if not durations:
            return None
        ordered = sorted(durations)
        rank = min(len(ordered) - 1, max(0, math.ceil(self.quantile * len(ordered)) - 1))
        return max(ordered[rank], self.min_seconds)


class Race:
    """One partition: its copies, when it started and finished, and the winning run."""

    def __init__(
        self,
        partition: int,
        launch: Callable[[int], Awaitable[TaskRun]],
        clock: Callable[[], float],
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.partition = partition
        self.clock = clock
        self.started = clock()
        self.finished: float | None = None
        self._on_done = on_done
        self.winner: TaskRun | None = None
        self.winner_copy: int | None = None
        self.copies: list[asyncio.Task[TaskRun]] = []
        self.done = asyncio.Event()
        self._launch = launch

    @property
    def speculated(self) -> bool:
        """True once a second copy was launched."""
        return len(self.copies) > 1

    def launch(self) -> None:
        """Start another copy of the partition."""
        copy = len(self.copies)
        task = asyncio.ensure_future(self._launch(copy))
        task.add_done_callback(self._copy_done)
        self.copies.append(task)

    def _copy_done(self, task: asyncio.Task[TaskRun]) -> None:
        if self.done.is_set():
            return
        if not task.cancelled() and task.exception() is None:
            run = task.result()
            if run.state is TaskState.success:
                self.winner, self.winner_copy = run, self.copies.index(task)
                self._finish()
                return
        if all(c.done() for c in self.copies):
            self._finish()

    def _finish(self) -> None:
        self.finished = self.clock()
        self.done.set()
        if self._on_done is not None:
            self._on_done()
        for other in self.copies:
            if not other.done():
                other.cancel(LOST_RACE)

    def cancel(self, reason: str) -> None:
        """Cancel every copy still running."""
        for copy in self.copies:
            if not copy.done():
                copy.cancel(reason)

    async def settle(self) -> TaskRun:
        """Wait for the race to end; return the winner, else the last copy's failed run.

        Raises what a copy raised if no copy produced a run (bad params, store errors).
        """
        await self.done.wait()
        await asyncio.gather(*self.copies, return_exceptions=True)  # losers record their abort
        if self.winner is not None:
            return self.winner
        errors: list[BaseException] = []
        for copy in reversed(self.copies):
            if copy.cancelled():
                continue
            exc = copy.exception()
            if exc is None:
                return copy.result()
            errors.append(exc)
        if errors:
            raise errors[0]
        raise asyncio.CancelledError(f"every copy of partition {self.partition} was cancelled")


async def watch(
    races: Sequence[Race],
    policy: SpeculationPolicy,
    clock: Callable[[], float],
    changed: asyncio.Event,
) -> None:
    """Launch a copy of each straggler; returns once every race is done.

    Wakes when a race ends (`changed`) and every `policy.interval` seconds, the named
    interval that lets a straggler be noticed while nothing else happens.
    """
    while not all(r.done.is_set() for r in races):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), policy.interval)
        changed.clear()
        durations = [
            r.finished - r.started for r in races if r.winner is not None and r.finished is not None
        ]
        threshold = policy.threshold(durations)
        if threshold is None:
            continue
        now = clock()
        for race in races:
            if not race.done.is_set() and not race.speculated and now - race.started > threshold:
                race.launch()
