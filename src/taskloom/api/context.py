"""What every route needs: the manager, its metrics hooks, and the bounds of cheap queries."""

from __future__ import annotations

from dataclasses import dataclass

from ..manager import TaskManager
from ..metrics import PrometheusHooks
from ..store.base import Store

MAX_STATS_WINDOW = 10_000  # the most runs a bounded read (the series) decodes
CHILDREN_PAGE = 100


@dataclass(frozen=True)
class ApiContext:
    """Shared by the routers of one app."""

    manager: TaskManager
    metrics: PrometheusHooks

    async def store(self) -> Store:
        """The manager's store, connected (a mounted app gets no lifespan of its own)."""
        return (await self.manager.connect()).store
