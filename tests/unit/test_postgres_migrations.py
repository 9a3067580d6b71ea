"""Applying every PostgreSQL migration to an empty schema yields exactly `schema.sql`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import postgres_url, unavailable

asyncpg = pytest.importorskip("asyncpg")

from taskloom.store.postgres import (  # noqa: E402 - only once asyncpg is known to be there
    PostgresStore,
    migrations,
    read_schema_sql,
)


@pytest.fixture
def base_url() -> str:
    url = postgres_url()
    if not url:
        unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
        raise AssertionError
    return url


@pytest.fixture
async def admin(base_url: str) -> AsyncIterator[Any]:
    """A plain connection for catalog queries."""
    conn = await asyncpg.connect(base_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def fresh_schema(admin: Any) -> AsyncIterator[Any]:
    """Makes unused schema names; drops whatever was created under them afterwards."""
    made: list[str] = []

    def make() -> str:
        made.append("m" + uuid.uuid4().hex[:12])
        return made[-1]

    yield make
    for schema in made:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def catalog(conn: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a migration can get wrong, with the schema name normalised away."""

    def norm(rows: list[Any]) -> list[tuple[Any, ...]]:
        return sorted(
            tuple(
                str(v)
                .replace(f'"{schema}".', "")
                .replace(f"{schema}.", "")
                # functions made with `SET search_path FROM CURRENT` name their schema
                .replace(schema, "<schema>")
                for v in r
            )
            for r in rows
        )

    return {
        "tables": norm(
            await conn.fetch(
                "SELECT table_name, table_type FROM information_schema.tables"
                " WHERE table_schema = $1",
                schema,
            )
        ),
        "columns": norm(
            await conn.fetch(
                "SELECT table_name, column_name, data_type, udt_name, is_nullable,"
                " column_default, character_maximum_length, numeric_precision"
                " FROM information_schema.columns WHERE table_schema = $1",
                schema,
            )
        ),
        "indexes": norm(
            await conn.fetch(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1",
                schema,
            )
        ),
        "constraints": norm(
            await conn.fetch(
                "SELECT c.conrelid::regclass::text, c.conname, c.contype,"
                " pg_get_constraintdef(c.oid)"
                " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
                " WHERE n.nspname = $1",
                schema,
            )
        ),
        "table_options": norm(
            await conn.fetch(
                "SELECT c.relname, c.relkind, c.reloptions FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
                schema,
            )
        ),
        "functions": norm(
            await conn.fetch(
                "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p"
                " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1",
                schema,
            )
        ),
        "triggers": norm(
            await conn.fetch(
                "SELECT event_object_table, trigger_name, action_statement"
                " FROM information_schema.triggers WHERE trigger_schema = $1",
                schema,
            )
        ),
    }


async def test_migrations_yield_schema_sql(base_url: str, admin: Any, fresh_schema: Any) -> None:
    migrated, declared = fresh_schema(), fresh_schema()

    store = PostgresStore(with_schema(base_url, migrated))
    try:
        applied = await store.migrate()
    finally:
        await store.close()
    assert applied == [name for _version, name, _sql in migrations()]

    await admin.execute(f'CREATE SCHEMA "{declared}"')
    async with admin.transaction():
        await admin.execute(f'SET LOCAL search_path = "{declared}"')
        await admin.execute(read_schema_sql())

    got, want = await catalog(admin, migrated), await catalog(admin, declared)
    assert got["tables"], "the migrations created nothing"
    for part in want:
        assert got[part] == want[part], f"migrations and schema.sql differ in {part}"


async def test_migrations_are_numbered_and_recorded(
    base_url: str, admin: Any, fresh_schema: Any
) -> None:
    found = migrations()
    assert [version for version, _name, _sql in found] == list(range(1, len(found) + 1))
    schema = fresh_schema()
    store = PostgresStore(with_schema(base_url, schema))
    try:
        await store.migrate()
        assert await store.migrate() == []  # nothing pending the second time
    finally:
        await store.close()
    rows = await admin.fetch(f'SELECT version, name FROM "{schema}".schema_version ORDER BY 1')
    assert [(r["version"], r["name"]) for r in rows] == [(v, n) for v, n, _s in found]


async def test_concurrent_connects_migrate_once(base_url: str, fresh_schema: Any) -> None:
    """Processes starting together: the advisory lock lets exactly one apply each migration."""
    schema = fresh_schema()
    stores = [PostgresStore(with_schema(base_url, schema)) for _ in range(4)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert sorted(results, key=len) == [[], [], [], [n for _v, n, _s in migrations()]]


def test_sql_files_ship_inside_the_package() -> None:
    """The wheel carries the SQL because it lives under src/taskloom (read via resources)."""
    assert "CREATE TABLE runs" in read_schema_sql()
    assert migrations(), "no migration found"
