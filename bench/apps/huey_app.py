"""huey's side of the benchmark: `huey_consumer bench.apps.huey_app.huey`.

huey's consumer imports the instance by path, so it is built at import from `BENCH_STORE`
(`sqlite` or `redis`), `BENCH_SQLITE_PATH` and `BENCH_REDIS_URL`. The SQLite storage runs with
`synchronous=NORMAL`, the durability taskloom's SQLite store uses (huey's default is FULL).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from huey import RedisHuey, SqliteHuey  # type: ignore[import-untyped]
from huey.storage import SqliteStorage  # type: ignore[import-untyped]

NAP_SECONDS = 0.1


class NormalSyncSqliteStorage(SqliteStorage):  # type: ignore[misc]
    """huey's SQLite storage with `synchronous=NORMAL` under WAL, as taskloom runs SQLite."""

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn


class NormalSyncSqliteHuey(SqliteHuey):  # type: ignore[misc]
    """`SqliteHuey` on `NormalSyncSqliteStorage`."""

    storage_class = NormalSyncSqliteStorage


def build() -> Any:
    """The huey instance the environment describes."""
    if os.environ.get("BENCH_STORE", "sqlite") == "redis":
        return RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"], notify_result=True)
    return NormalSyncSqliteHuey("bench", filename=os.environ["BENCH_SQLITE_PATH"])


huey = build()


@huey.task(name="noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> int:
    """Do nothing (returns `i` so huey stores a result: it skips None)."""
    return i


@huey.task(name="nap")  # type: ignore[untyped-decorator]
def nap(i: int) -> int:
    """Sleep 0.1 s on the worker thread."""
    time.sleep(NAP_SECONDS)
    return i
