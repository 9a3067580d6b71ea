"""Celery's side of the benchmark: `celery -A bench.apps.celery_app worker`.

The app is built at import from `BENCH_CELERY_BROKER` and `BENCH_CELERY_BACKEND`: Redis (the
results in their own db) or SQLite (kombu's SQLAlchemy transport and the database result
backend, each in its own file).
"""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped]

NAP_SECONDS = 0.1
#: kombu's SQL transport polls its table; 5 ms like every SQLite system here (default 1 s).
SQLITE_POLL = 0.005

broker = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/14")
app = Celery("bench", broker=broker, backend=os.environ.get("BENCH_CELERY_BACKEND"))
app.conf.update(
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_extended=False,
)
if broker.startswith("sqla"):
    # kombu hands every transport option of this transport to `create_engine`, which rejects
    # `polling_interval`: the poll interval can only be set on the transport class.
    from kombu.transport.sqlalchemy import Transport

    Transport.polling_interval = SQLITE_POLL


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(i: int) -> int:
    """Do nothing."""
    return i


@app.task(name="nap")  # type: ignore[untyped-decorator]
def nap(i: int) -> int:
    """Sleep 0.1 s on the worker thread."""
    time.sleep(NAP_SECONDS)
    return i
