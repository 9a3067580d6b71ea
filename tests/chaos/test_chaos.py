"""Chaos over SQLite, Redis and PostgreSQL with real worker processes.

Each case is bounded (a fixed number of runs and faults, one deadline) and stops every
process it started. Each asserts 0 lost, 0 stuck, 0 completed twice and prints its counts
(`pytest tests/chaos -s`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from taskloom import TaskState
from tests.raw_records import damage_record

from .harness import KINDS, Chaos

pytestmark = pytest.mark.parametrize("kind", KINDS)

KILL_RUNS = 240
KILLS = 3
CUT_RUNS = 160
CUTS = 3


async def _queue_work(chaos: Chaos, n: int, pause: float = 0.02) -> list[str]:
    runs = await chaos.manager.queue_many("work", [{"i": i, "pause": pause} for i in range(n)])
    return [run.id for run in runs]


async def test_kill_9_loop(kind: str, tmp_path: Path) -> None:
    async with Chaos(kind, tmp_path, "kill -9 loop") as chaos:
        ids = await _queue_work(chaos, KILL_RUNS, pause=0.1)
        chaos.spawn()
        chaos.spawn()
        for k in range(KILLS):
            # let the fleet get a stretch further, then kill its oldest worker mid-run
            await chaos.manager.wait(ids[(k + 1) * KILL_RUNS // (KILLS + 2)], timeout=60)
            await chaos.kill9(chaos.alive()[0])
            chaos.spawn()
        counts = await chaos.settle(dict.fromkeys(ids, TaskState.success))
    counts.assert_clean()
    assert counts.faults == KILLS and counts.in_flight_at_faults > 0


async def test_connection_cuts(kind: str, tmp_path: Path) -> None:
    async with Chaos(kind, tmp_path, "connection cuts") as chaos:
        ids = await _queue_work(chaos, CUT_RUNS, pause=0.25)
        chaos.spawn()
        chaos.spawn()
        cuts = 1 if kind == "sqlite" else CUTS  # a SQLite lock-out lasts seconds
        for k in range(cuts):
            await chaos.manager.wait(ids[(k + 1) * CUT_RUNS // (cuts + 2)], timeout=60)
            await chaos.cut()
        counts = await chaos.settle(dict.fromkeys(ids, TaskState.success))
        assert len(chaos.alive()) == 2  # the workers rode the outage out
    counts.assert_clean()
    assert counts.in_flight_at_faults > 0


async def test_poison_runs(kind: str, tmp_path: Path) -> None:
    async with Chaos(kind, tmp_path, "poison runs") as chaos:
        m = chaos.manager
        expected: dict[str, TaskState] = {}
        bad: list[str] = []
        for name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "Poison"):
            for task in ("poison", "sync_poison"):
                bad.append((await m.queue(task, kind=name)).id)
        for code in (0, 3):
            bad.append((await m.queue("exits", code=code)).id)
        expected.update(dict.fromkeys(bad, TaskState.failure))
        chaos.faults = len(bad)
        expected.update(dict.fromkeys(await _queue_work(chaos, 40), TaskState.success))
        worker = chaos.spawn()
        counts = await chaos.settle(expected)
        assert worker.poll() is None  # the one worker served everything and lives on
        types = {(await m.get_run(i)).error["type"] for i in bad}  # type: ignore[index]
    assert types == {
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
        "Poison",
        "ProcessDiedError",
    }
    counts.assert_clean()


async def test_corrupt_records(kind: str, tmp_path: Path) -> None:
    async with Chaos(kind, tmp_path, "corrupt records") as chaos:
        ids = await _queue_work(chaos, 60)
        broken = ids[5::10]
        for n, run_id in enumerate(broken):
            await damage_record(chaos.manager.store, run_id, "broken" if n % 2 else "wrong_shape")
        chaos.faults = len(broken)
        expected = dict.fromkeys(ids, TaskState.success)
        expected.update(dict.fromkeys(broken, TaskState.failure))
        worker = chaos.spawn()
        counts = await chaos.settle(expected)
        assert worker.poll() is None
        for run_id in broken:
            error = (await chaos.manager.get_run(run_id)).error or {}
            assert error.get("type") == "CorruptRecordError"
    counts.assert_clean()


EXECUTE_RUNS = 8


async def test_a_process_that_dies_during_execute(kind: str, tmp_path: Path) -> None:
    async with Chaos(kind, tmp_path, "process dies during execute") as chaos:
        caller = chaos.spawn_caller(EXECUTE_RUNS)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(set(chaos.log.read_text().split())) < EXECUTE_RUNS:  # all started
            if caller.poll() is not None:
                raise AssertionError(chaos.caller_errors())
            assert loop.time() < deadline, "the runs did not start"
            await asyncio.sleep(0.05)
        ids = sorted(set(chaos.log.read_text().split()))
        await chaos.kill9(caller)
        chaos.spawn()
        counts = await chaos.settle(dict.fromkeys(ids, TaskState.success))
    counts.assert_clean()
    assert counts.reclaimed == EXECUTE_RUNS
