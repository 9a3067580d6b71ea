"""dramatiq's side of the benchmark: `dramatiq bench.apps.dramatiq_app`.

The broker is built at import from `BENCH_REDIS_URL`, with the Results middleware on the same
Redis db so the latency phase can block on a run's result.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends.redis import RedisBackend

NAP_SECONDS = 0.1

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
broker = RedisBroker(url=URL)  # type: ignore[no-untyped-call]
broker.add_middleware(Results(backend=RedisBackend(url=URL)))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", store_results=True, max_retries=0)
def noop(i: int) -> int:
    """Do nothing."""
    return i


@dramatiq.actor(actor_name="nap", store_results=True, max_retries=0)
def nap(i: int) -> int:
    """Sleep 0.1 s on the worker thread."""
    time.sleep(NAP_SECONDS)
    return i
