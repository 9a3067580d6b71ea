"""Every listing and count the CLI, API and dashboard make is served by an index.

The plans are read from the databases themselves, on a store filled with 20,000 runs of mixed
tasks, states, queues, tags, parents and times:
- SQLite: `EXPLAIN QUERY PLAN` of the statements the store runs, without ANALYZE statistics
  (the store never gathers any), must not contain a bare `SCAN runs`;
- PostgreSQL: `EXPLAIN` after ANALYZE, with the planner's normal settings (sequential scans
  allowed), must not contain a `Seq Scan on runs`: with this many rows the planner itself
  prefers the indexes, so this is the plan production gets, not one forced by the test.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from taskloom.run import TaskState
from taskloom.store.base import RunQuery
from taskloom.store.sqlite import apply_migrations, query_sql
from tests.conftest import postgres_url, unavailable

ROWS = 20_000
CURSOR = f"{ROWS // 2:032x}"
SINCE = datetime.fromtimestamp(ROWS - 500, UTC)

# (name, query): one per filter the listings offer, alone and paged with a cursor.
LISTINGS: list[tuple[str, RunQuery]] = [
    ("newest", RunQuery()),
    ("newest, cursor", RunQuery(cursor=CURSOR)),
    ("state", RunQuery(state=TaskState.failure)),
    ("state, cursor", RunQuery(state=TaskState.failure, cursor=CURSOR)),
    ("task", RunQuery(task="t3")),
    ("task, cursor", RunQuery(task="t3", cursor=CURSOR)),
    ("queue", RunQuery(queue="q2")),
    ("queue, cursor", RunQuery(queue="q2", cursor=CURSOR)),
    ("tags", RunQuery(tags=("tag7",))),
    ("since", RunQuery(since=SINCE)),
    ("before", RunQuery(before=SINCE)),
    ("window", RunQuery(since=datetime.fromtimestamp(100, UTC), before=SINCE)),
    ("parent", RunQuery(parent_id=f"{7:032x}")),
    ("root", RunQuery(root_run_id=f"{7:032x}")),
    ("task and state", RunQuery(task="t3", state=TaskState.success)),
]
# Like a real store: mostly successes; failures, queued and running runs and each tag rare.
STATE_SQL = """CASE i % 50 WHEN 0 THEN 'failure' WHEN 1 THEN 'queued' WHEN 2 THEN 'running'
    WHEN 3 THEN 'aborted' ELSE 'success' END"""

# The same rows on both stores: id i is time-ordered hex, created = i seconds.


def _fill_sqlite(conn: sqlite3.Connection) -> None:
    conn.execute(
        f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
        INSERT INTO runs (id, task, state, queue, priority_rank, due, parent_id, root_run_id,
                          created, data)
        SELECT printf('%032x', i), 't' || (i % 10), {STATE_SQL}, 'q' || (i % 4),
               i % 3, i, CASE WHEN i % 20 = 0 THEN printf('%032x', i / 100) END,
               printf('%032x', i / 100), i, json_object('tags', json_array('tag' || (i % 500)))
        FROM n"""
    )


@pytest.fixture
def sqlite_conn(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "plans.db", isolation_level=None)
    apply_migrations(conn)
    _fill_sqlite(conn)
    return conn


def _sqlite_plan(conn: sqlite3.Connection, sql: str, params: Any = ()) -> str:
    return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def _full_scan(plan: str) -> bool:
    """A `SCAN runs` that walks the table itself, not one of its indexes."""
    return any(
        line.strip().startswith("SCAN runs") and "INDEX" not in line for line in plan.splitlines()
    )


@pytest.mark.parametrize(("name", "q"), LISTINGS, ids=[n for n, _ in LISTINGS])
def test_sqlite_listing_uses_an_index(
    sqlite_conn: sqlite3.Connection, name: str, q: RunQuery
) -> None:
    sql, params = query_sql(q)
    plan = _sqlite_plan(sqlite_conn, sql, params)
    assert not _full_scan(plan), f"{name}: {plan}"
    assert "INDEX" in plan, f"{name}: {plan}"
    bounded = q.since is not None and q.before is not None
    if q.tags:  # the tag's rows of run_tags lead, newest first
        assert "SEARCH t USING PRIMARY KEY (tag=?" in plan, f"{name}: {plan}"
    elif q.state or q.task or q.queue or q.parent_id or q.root_run_id or q.cursor or bounded:
        assert "SEARCH runs USING INDEX" in plan, f"{name} seeks no index: {plan}"


def test_sqlite_counts_use_an_index(sqlite_conn: sqlite3.Connection) -> None:
    from taskloom.store import sqlite, sqlite_control

    # queue depth per queue and rank: the counters, then one seek of the claim index each
    plan = _sqlite_plan(sqlite_conn, sqlite_control._STATS, ())
    assert "SCAN runs" not in plan and "SEARCH runs USING" in plan, plan
    # every count and queue_length: the counters alone, never the runs table
    plan = _sqlite_plan(sqlite_conn, sqlite._COUNTS, ())
    assert "runs " not in plan.replace("run_counts", ""), plan


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
async def pg() -> AsyncIterator[Any]:
    """A migrated schema of its own holding ROWS runs, analysed; dropped afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    from taskloom.store.postgres import PostgresStore

    url = postgres_url()
    if not url:
        unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
        raise AssertionError
    schema = "plans" + uuid.uuid4().hex[:10]
    store = PostgresStore(f"{url}{'&' if '?' in url else '?'}schema={schema}")
    await store.migrate()
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'SET search_path = "{schema}"')
        await conn.execute(
            f"""INSERT INTO runs (id, task, state, queue, priority_rank, due, parent_id,
                                  root_run_id, created, tags, data)
            SELECT lpad(to_hex(i), 32, '0'), 't' || (i % 10), {STATE_SQL},
                   'q' || (i % 4), i % 3, i,
                   CASE WHEN i % 20 = 0 THEN lpad(to_hex(i / 100), 32, '0') END,
                   lpad(to_hex(i / 100), 32, '0'), i, ARRAY['tag' || (i % 500)], '{{}}'::jsonb
            FROM generate_series(1, {ROWS}) AS i"""
        )
        await conn.execute("ANALYZE runs")
        yield conn
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _pg_plan(conn: Any, sql: str, *args: Any) -> str:
    return "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))


# Selective listings must seek their own index, not walk the primary key and filter.
PG_INDEX = {
    "state": "runs_state_idx",
    "state, cursor": "runs_state_idx",
    "tags": "runs_tags_idx",
    "parent": "runs_parent_idx",
    "root": "runs_root_idx",
}


async def test_postgres_listings_use_an_index(pg: Any) -> None:
    from taskloom.store.postgres import _query_sql

    for name, q in LISTINGS:
        sql, args = _query_sql(q)
        plan = await _pg_plan(pg, sql, *args)
        assert "Seq Scan on runs" not in plan, f"{name}:\n{plan}"
        assert PG_INDEX.get(name, "") in plan, f"{name}:\n{plan}"


async def test_postgres_counts_and_claim_use_an_index(pg: Any) -> None:
    from taskloom.store.postgres import queries as read_queries

    queries = read_queries()
    checks: list[tuple[str, str, tuple[Any, ...]]] = [
        ("counts", queries["counts"], ()),
        ("queue_stats", queries["queue_stats"], ()),
        ("reclaim", queries["reclaim"], (1.0, "x", "ch")),
        ("purge", queries["purge"], (1e12, None, [], None, 100)),
    ]
    for name, sql, args in checks:
        plan = await _pg_plan(pg, sql, *args)
        assert "Seq Scan on runs" not in plan, f"{name}:\n{plan}"
        if name == "purge":  # oldest first by end, each root's family by its root alone
            assert "runs_ended_idx" in plan and "runs_root_idx" in plan, plan
            assert "runs_state_idx" not in plan, plan
    # the claim's candidate scan (inside claim_runs) walks the partial index of queued runs
    plan = await _pg_plan(
        pg,
        "SELECT r.id FROM runs AS r WHERE r.state = 'queued'"
        " AND (r.execute_after IS NULL OR r.execute_after <= $1)"
        " ORDER BY r.priority_rank, r.due, r.id LIMIT 10 FOR UPDATE SKIP LOCKED",
        1e12,
    )
    assert "runs_claim_idx" in plan, plan
