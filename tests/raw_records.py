"""Test-only: damage a stored run record in place, below the store's API, on each backend.

`broken` is JSON that does not parse. PostgreSQL keeps records as JSONB and refuses text
that is not JSON, so there `broken` is a JSON scalar where an object belongs. `wrong_shape`
is valid JSON whose fields have the wrong types. The fields claims and queries use (state,
queue, task) stay readable, so the run is still claimed and listed.
"""

from __future__ import annotations

from typing import Any, Literal

from taskloom.store import Store

Damage = Literal["broken", "wrong_shape"]

WRONG_SHAPE = {"retry_attempt": '"many"', "attempts": '{"not": "a list"}'}


async def damage_record(store: Store, run_id: str, how: Damage) -> None:
    """Overwrite the stored record of `run_id` with bytes no TaskRun decodes."""
    kind = type(store).__name__
    if kind == "SQLiteStore":
        await _sqlite(store, run_id, how)
    elif kind in ("RedisStore", "RedisClusterStore"):
        await _redis(store, run_id, how)
    elif kind == "RedisShardedStore":  # the slice that holds the run
        for piece in store._slices:  # type: ignore[attr-defined]
            if await piece._redis.exists(f"{piece.prefix}run:{run_id}"):
                await _redis(piece, run_id, how)
    elif kind == "PostgresStore":
        await _postgres(store, run_id, how)
    else:
        raise TypeError(f"{kind} keeps no record bytes to damage")


async def _sqlite(store: Any, run_id: str, how: Damage) -> None:
    def work(conn: Any) -> None:
        if how == "broken":
            conn.execute("UPDATE runs SET data = substr(data, 1, 40) WHERE id = ?", (run_id,))
            return
        for field, value in WRONG_SHAPE.items():
            conn.execute(
                f"UPDATE runs SET data = json_set(data, '$.{field}', json(?)) WHERE id = ?",
                (value, run_id),
            )

    await store._run(work)  # autocommit connection: each statement is its own transaction


async def _redis(store: Any, run_id: str, how: Damage) -> None:
    key = f"{store.prefix}run:{run_id}"
    fields = {"params": '{"x": [1, 2'} if how == "broken" else WRONG_SHAPE
    await store._redis.hset(key, mapping=fields)


async def _postgres(store: Any, run_id: str, how: Damage) -> None:
    async def op(conn: Any) -> None:
        if how == "broken":
            await conn.execute(
                "UPDATE runs SET data = to_jsonb('not a record'::text) WHERE id = $1", run_id
            )
            return
        for field, value in WRONG_SHAPE.items():
            await conn.execute(
                "UPDATE runs SET data = jsonb_set(data, $2::text[], $3::jsonb) WHERE id = $1",
                run_id,
                [field],
                value,
            )

    await store._run(op)
