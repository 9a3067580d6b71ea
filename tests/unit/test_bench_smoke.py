"""The benchmark harness runs end to end at tiny sizes and its output is well formed.

Structure only: no assertion here depends on how fast anything is.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from bench.__main__ import main
from bench.peers import installed
from bench.phases import PHASES, Settings
from bench.report import render
from bench.results import Report
from bench.runner import Plan, run
from rich.console import Console

TINY = Settings(n=20, reps=1, batch=8, latency_runs=5, sleep_runs=10, sleep_concurrency=10)


async def test_every_phase_on_sqlite(tmp_path: Path) -> None:
    systems = ["taskloom"] + (["huey"] if installed("huey") else [])
    settings = Settings(**{**TINY.__dict__, "workdir": tmp_path})
    report = await run(Plan(["sqlite"], systems, settings))

    assert report.notes == []
    assert set(report.phases()) == {p.key for p in PHASES} | {"f"}
    for phase in PHASES:
        for system in systems:
            rows = [m for m in report.measurements if (m.phase, m.system) == (phase.key, system)]
            assert {m.metric for m in rows} == {metric.name for metric in phase.metrics}
            assert all(len(m.samples) == 1 and m.median > 0 for m in rows)
    fan_out = {(m.system, m.metric): m for m in report.measurements if m.phase == "f"}
    assert fan_out["taskloom", "children"].median > 0
    assert fan_out["asyncio", "children"].median > 0
    assert math.isfinite(fan_out["taskloom", "overhead per child"].median)
    if "huey" in systems:
        huey = next(m for m in report.measurements if m.system == "huey" and m.phase == "a")
        assert report.ratio(huey) is not None

    console = Console(record=True, width=160)
    console.print(render(report))
    text = console.export_text()
    for title in report.titles.values():
        assert title[:30] in text
    assert "taskloom/peer" in text

    path = report.write(tmp_path / "results" / "smoke.json")
    data = json.loads(path.read_text())
    assert len(data["measurements"]) == len(report.measurements)
    assert {row["store"] for row in data["measurements"]} == {"sqlite", "memory"}
    assert all(row["samples"] for row in data["measurements"])


def test_ratio_is_taskloom_over_peer() -> None:
    report = Report()
    report.add("a", "sqlite", "taskloom", "enqueue", 300.0, unit="runs/s", higher_is_better=True)
    report.add("a", "sqlite", "huey", "enqueue", 100.0, unit="runs/s", higher_is_better=True)
    report.add("a", "sqlite", "huey", "enqueue", 200.0, unit="runs/s", higher_is_better=True)
    report.add("a", "sqlite", "huey", "enqueue", 150.0, unit="runs/s", higher_is_better=True)
    taskloom, huey = report.measurements
    assert huey.samples == [100.0, 200.0, 150.0]
    assert (huey.median, huey.low, huey.high) == (150.0, 100.0, 200.0)
    assert report.ratio(huey) == 2.0
    assert report.ratio(taskloom) is None


def test_unavailable_store_becomes_a_note(tmp_path: Path) -> None:
    import asyncio

    settings = Settings(**{**TINY.__dict__, "workdir": tmp_path})
    plan = Plan(["redis"], ["taskloom"], settings, ["a"], redis_base="redis://127.0.0.1:1")
    report = asyncio.run(run(plan))
    assert report.measurements == []
    assert report.notes and report.notes[0].startswith("redis skipped")


def test_an_unknown_store_peer_or_phase_is_named_before_anything_runs() -> None:
    for argv, name in (
        (["--stores", "mysql"], "unknown store mysql"),
        (["--peers", "huey,nope"], "unknown peer nope"),
        (["--phases", "a,z"], "unknown phase z"),
    ):
        with pytest.raises(SystemExit, match=name):
            main(argv)


async def test_spread_prints_a_row_per_layout_and_worker_count(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.spread import main as spread
    from bench.spread import queue_names

    from taskloom.store.redis_shards import shard_of
    from tests.conftest import redis_cluster_url, unavailable

    assert sorted(shard_of(q, 3) for q in queue_names(6, 3)) == [0, 0, 1, 1, 2, 2]
    url = redis_cluster_url()
    if not url:
        unavailable("no TASKLOOM_TEST_REDIS_CLUSTER_URL and no redis-server binary on PATH")
    args = ["--cluster", str(url), "--n", "60", "--queues", "3", "--shards", "3"]
    assert await spread([*args, "--workers", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    layouts = [row for row in rows if row and row[0] in ("one", "shards=3")]
    assert [row[0] for row in layouts] == ["one", "shards=3"]
    for row in layouts:
        assert float(row[-3].replace(",", "")) > 0  # drain runs/s
