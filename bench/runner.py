"""Runs the phases: per phase and store, repetitions that interleave taskloom and its peers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import fanout
from .peers import load
from .peers.base import System, Target
from .phases import PHASES, Phase, Settings
from .results import Report

log = logging.getLogger("bench")


@dataclass(frozen=True)
class Plan:
    """What to run: stores, systems (taskloom first), phases, sizes and where servers are."""

    stores: Sequence[str]
    systems: Sequence[str]
    settings: Settings
    phases: Sequence[str] = field(default_factory=lambda: [p.key for p in PHASES] + ["f"])
    redis_base: str = "redis://127.0.0.1:6379"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/test"
    redis_cluster: str = ""

    def target(self, store: str, system: str) -> Target:
        """The namespace of `system` on `store`."""
        return Target(
            store, system, self.redis_base, self.postgres_dsn, self.settings.workdir,
            self.redis_cluster,
        )  # fmt: skip


async def store_available(plan: Plan, store: str) -> str | None:
    """None if the store's server answers, else why not (SQLite always is)."""
    try:
        if store == "redis":
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(plan.redis_base, socket_connect_timeout=2)
            try:
                await client.ping()
            finally:
                await client.aclose()
        elif store == "redis-cluster":
            if not plan.redis_cluster:
                return "no cluster: pass --redis-cluster redis+cluster://host:port,..."
            from taskloom.store import open_store

            cluster = open_store(plan.redis_cluster)
            await cluster.ping()
            await cluster.close()
        elif store == "postgres":
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(plan.postgres_dsn, timeout=3)
            await conn.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def sample_timeout(s: Settings) -> float:
    """Seconds after which a sample is abandoned (a hang becomes a note, not a stuck run)."""
    return 180.0 + s.n / 20


def _systems_for(plan: Plan, store: str, phase: str) -> list[System]:
    systems = (load(name) for name in plan.systems)
    return [s for s in systems if store in s.stores and phase not in getattr(s, "skips", ())]


async def _phase(
    plan: Plan, phase: Phase, store: str, report: Report, say: Callable[[str], None]
) -> None:
    systems = _systems_for(plan, store, phase.key)
    failed: set[str] = set()
    for rep in range(plan.settings.reps):
        for system in systems:
            if system.name in failed:
                continue
            say(f"{phase.key} {store} rep {rep + 1}/{plan.settings.reps}: {system.name}")
            try:
                values = await asyncio.wait_for(
                    phase.sample(system, plan.target(store, system.name), plan.settings),
                    sample_timeout(plan.settings),
                )
            except Exception as exc:
                failed.add(system.name)
                note = f"{phase.key}/{store}/{system.name} failed: {type(exc).__name__}: {exc}"
                report.notes.append(note.strip().splitlines()[0][:300])
                log.debug("sample failed", exc_info=True)
                continue
            for metric in phase.metrics:
                report.add(phase.key, store, system.name, metric.name, values[metric.name],
                           unit=metric.unit, higher_is_better=metric.higher_is_better)  # fmt: skip


async def run(plan: Plan, say: Callable[[str], None] = lambda _msg: None) -> Report:
    """Every selected phase on every available store; a failing sample becomes a note."""
    report = Report()
    report.titles.update({p.key: p.title for p in PHASES})
    stores = []
    for store in plan.stores:
        why = await store_available(plan, store)
        if why is None:
            stores.append(store)
        else:
            report.notes.append(f"{store} skipped: server unavailable ({why}); see README")
    for phase in PHASES:
        if phase.key in plan.phases:
            for store in stores:
                await _phase(plan, phase, store, report, say)
    if "f" in plan.phases and "taskloom" in plan.systems:
        for store in ["memory", *stores]:
            for rep in range(plan.settings.reps):
                say(f"f {store} rep {rep + 1}/{plan.settings.reps}: taskloom, asyncio")
                try:
                    await asyncio.wait_for(
                        fanout.sample(report, plan.target(store, "taskloom"), plan.settings),
                        sample_timeout(plan.settings),
                    )
                except Exception as exc:
                    report.notes.append(f"f/{store} failed: {type(exc).__name__}: {exc}"[:300])
                    break
    return report


def run_sync(plan: Plan, say: Callable[[str], None] = lambda _msg: None) -> Report:
    """`run` in a fresh event loop."""
    return asyncio.run(run(plan, say))
