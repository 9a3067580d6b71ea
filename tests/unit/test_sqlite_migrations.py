"""SQLite store: migrations agree with schema.sql; bad files and URLs fail clearly."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sqlite3
import threading
from pathlib import Path

import pytest

from taskloom.errors import ConfigError, StoreUnavailableError
from taskloom.run import TaskRun, TaskState
from taskloom.store.base import ACTIVE_STATES, dt
from taskloom.store.sqlite import SQLiteStore, apply_migrations, load_migrations, load_schema

T0 = 1_800_000_000.0


def _objects(conn: sqlite3.Connection) -> set[tuple[str, str, str, str]]:
    """sqlite_master without comments and whitespace differences (autoindexes have no sql)."""
    out = set()
    for kind, name, table, sql in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master"
    ):
        text = " ".join(re.sub(r"--[^\n]*", "", sql or "").split())
        # ALTER TABLE ADD COLUMN leaves "x NOT NULL , y" in the stored CREATE statement
        text = text.replace("( ", "(").replace(" )", ")").replace(" ,", ",")
        out.add((kind, name, table, text))
    return out


def test_migrations_yield_schema_sql(tmp_path: Path) -> None:
    migrated = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    assert apply_migrations(migrated) == [m.version for m in load_migrations()]
    reference = sqlite3.connect(tmp_path / "reference.db", isolation_level=None)
    reference.executescript(load_schema())
    assert _objects(migrated) == _objects(reference)
    for (table,) in reference.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        columns = f"PRAGMA table_xinfo({table})"
        assert migrated.execute(columns).fetchall() == reference.execute(columns).fetchall()


def test_migrations_are_numbered_and_recorded_once(tmp_path: Path) -> None:
    steps = load_migrations()
    assert [m.version for m in steps] == list(range(1, len(steps) + 1))
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    apply_migrations(conn)
    assert apply_migrations(conn) == []
    recorded = conn.execute("SELECT version, name FROM schema_version ORDER BY version")
    assert recorded.fetchall() == [(m.version, m.name) for m in steps]


def test_two_connections_migrating_at_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    barrier = threading.Barrier(2)
    results: list[list[int]] = []

    def migrate() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        barrier.wait()
        results.append(apply_migrations(conn))
        conn.close()

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [m.version for m in load_migrations()]]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    apply_migrations(conn)
    conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    with pytest.raises(ConfigError, match="999"):
        apply_migrations(conn)


def test_dedup_index_covers_exactly_the_active_states() -> None:
    [index] = [s for s in load_schema().split(";") if "INDEX runs_dedup" in s]
    assert set(re.findall(r"'(\w+)'", index)) == {s.value for s in ACTIVE_STATES}


async def test_corrupt_file_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database, just some text\n" * 200)
    store = SQLiteStore(f"sqlite:///{path}")
    with pytest.raises(StoreUnavailableError) as info:
        await store.connect()
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    with pytest.raises(StoreUnavailableError, match="not connected"):
        await store.get("x")


async def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "t.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.connect()
    try:
        await store.ping()
        assert path.exists()
    finally:
        await store.drop()
    assert not path.exists()


async def test_parent_that_is_a_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    path = tmp_path / "plain" / "t.db"
    with pytest.raises(StoreUnavailableError, match=re.escape(str(path))):
        await SQLiteStore(f"sqlite:///{path}").connect()


async def test_relative_and_memory_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStore("sqlite:///data/rel.db")
    await relative.connect()
    await relative.close()
    assert (tmp_path / "data" / "rel.db").exists()
    for url in ("sqlite://:memory:", "sqlite:///:memory:"):
        store = SQLiteStore(url)
        await store.connect()
        run = TaskRun(task="t", state=TaskState.queued, queued=dt(T0))
        await store.enqueue([run])
        got = await store.get(run.id)
        assert got is not None and got.id == run.id
        await store.drop()
    assert not (tmp_path / ":memory:").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "redis://x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(url)


def _claim_all(url: str, worker: str, out: multiprocessing.Queue[list[str]]) -> None:
    async def main() -> list[str]:
        store = SQLiteStore(url)
        await store.connect()
        ids: list[str] = []
        while leases := await store.claim(worker, None, 7, 30, T0):
            ids += [lease.run.id for lease in leases]
        await store.close()
        return ids

    out.put(asyncio.run(main()))


async def test_two_processes_never_share_a_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = SQLiteStore(url)
    await store.connect()
    runs = [TaskRun(task="t", state=TaskState.queued, queued=dt(T0)) for _ in range(300)]
    await store.enqueue(runs)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[str]] = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(url, f"w{i}", out)) for i in range(3)]
    for proc in procs:
        proc.start()
    batches = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
    for proc in procs:
        proc.join(10)
    ids = [run_id for batch in batches for run_id in batch]
    assert len(ids) == len(set(ids)) == len(runs)
    await store.drop()
