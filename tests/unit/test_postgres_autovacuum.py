"""The PostgreSQL store warns once, at connect, when the server does not vacuum on its own."""

from __future__ import annotations

import logging
import uuid

import pytest

from tests.conftest import postgres_url, unavailable

asyncpg = pytest.importorskip("asyncpg")

from taskloom.store.postgres import PostgresStore  # noqa: E402 - only once asyncpg is there

WARNING = "autovacuum is off"


async def test_warns_once_when_autovacuum_is_off(caplog: pytest.LogCaptureFixture) -> None:
    url = postgres_url()
    if not url:
        unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
        raise AssertionError
    admin = await asyncpg.connect(url)
    try:
        off = await admin.fetchval("SELECT current_setting('autovacuum') = 'off'")
    finally:
        await admin.close()
    schema = "vac" + uuid.uuid4().hex[:10]
    store = PostgresStore(f"{url}{'&' if '?' in url else '?'}schema={schema}")
    caplog.set_level(logging.WARNING, logger="taskloom.store.postgres")
    try:
        await store.connect()
        await store.close()
        await store.connect()  # a reconnect of the same store does not repeat it
    finally:
        await store.drop()
        await store.close()
    warnings = [r for r in caplog.records if WARNING in r.getMessage()]
    # this machine's server runs with autovacuum off; a server with it on must stay quiet
    assert len(warnings) == (1 if off else 0), [r.getMessage() for r in warnings]
    if off:
        assert warnings[0].levelno == logging.WARNING
        assert schema in warnings[0].getMessage()


async def test_heartbeats_are_hot_updates() -> None:
    """A heartbeat (lease extension and progress) changes no indexed column of `runs`, so
    PostgreSQL updates the row in place on its page (HOT) and adds no index entries: counted by
    the server's own per-transaction statistics around the store's heartbeat statement."""
    from taskloom import TaskManager, task
    from taskloom.store.postgres import queries

    url = postgres_url()
    if not url:
        unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
        raise AssertionError

    @task()
    async def beat_me() -> None:
        """Only queued and claimed here."""

    schema = "hot" + uuid.uuid4().hex[:10]
    manager = TaskManager(f"{url}{'&' if '?' in url else '?'}schema={schema}", tasks=[beat_me])
    store = manager.store
    await store.connect()
    admin = await asyncpg.connect(url)
    try:
        # two runs: every version made in the one transaction below still fits their page
        await manager.queue_many(beat_me, [{}] * 2)
        leases = await store.claim("w", None, 2, 30.0, manager.clock())
        assert len(leases) == 2
        async with admin.transaction():
            await admin.execute(f'SET LOCAL search_path = "{schema}"')
            for progress in (None, 0.5):
                got = await admin.fetch(
                    queries()["heartbeat"],
                    [lease.run.id for lease in leases],
                    [lease.token for lease in leases],
                    [progress is not None] * 2,
                    [progress] * 2,
                    ["half"] * 2,
                    manager.clock() + 60,
                )
                assert len(got) == 2
            updated, hot = await admin.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables"
                " WHERE schemaname = $1 AND relname = 'runs'",
                schema,
            )
        assert updated == 4
        assert hot == updated
    finally:
        await admin.close()
        await store.drop()
        await store.close()
