"""GPUs of this host handed out to DAG node runs: whole devices, one run per device."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator, Sequence

from ..errors import ConfigError

ENV = "CUDA_VISIBLE_DEVICES"


def visible_devices() -> list[str]:
    """The device ids in `CUDA_VISIBLE_DEVICES` (none when it is unset or empty)."""
    raw = os.environ.get(ENV, "")
    return [d.strip() for d in raw.split(",") if d.strip() and d.strip() != "-1"]


def gpus_needed(gpu_limit: float | None) -> int:
    """Whole devices a run with `gpu_limit` gets: a fraction still takes one of its own."""
    return math.ceil(gpu_limit) if gpu_limit and gpu_limit > 0 else 0


class GpuPool:
    """The devices one DAG run may hand out (`DAG.run(gpus=...)`).

    `gpus` is a count (devices `0..n-1`), a list of device ids, or None for the ids in
    `CUDA_VISIBLE_DEVICES`. A run waits until enough devices are free; a device is never
    lent to two runs at once.
    """

    def __init__(self, gpus: int | Sequence[str | int] | None = None) -> None:
        if gpus is None:
            self.devices = visible_devices()
        elif isinstance(gpus, int):
            if isinstance(gpus, bool) or gpus < 0:
                raise ConfigError(
                    f"gpus must be a count >= 0 or a list of device ids, got {gpus!r}"
                )
            self.devices = [str(i) for i in range(gpus)]
        else:
            self.devices = [str(d) for d in gpus]
            if len(set(self.devices)) != len(self.devices):
                raise ConfigError(f"gpus lists a device twice: {self.devices}")
        self._free = set(range(len(self.devices)))
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self.devices)

    def check(self, node: str, count: int) -> None:
        """ConfigError if a run of `node` needing `count` devices could never get them."""
        if count > len(self.devices):
            raise ConfigError(
                f"node {node!r} needs {count} GPU(s) but this DAG run has {len(self.devices)} "
                f"(pass DAG.run(gpus=...) or set {ENV})"
            )

    @contextlib.asynccontextmanager
    async def lease(self, count: int) -> AsyncIterator[tuple[int, ...]]:
        """Hold `count` free devices (their ranks, lowest first) for the block."""
        if count <= 0:
            yield ()
            return
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._free) >= count)
            ranks = tuple(sorted(self._free)[:count])
            self._free -= set(ranks)
        try:
            yield ranks
        finally:
            async with self._changed:
                self._free |= set(ranks)
                self._changed.notify_all()
