"""The bare-Redis floor's worker: `python -m bench.apps.floor_worker REDIS_URL [--burst]`.

One blocking loop: BRPOP an item, run the no-op, then one pipelined round trip that counts
it and, if the producer waits, LPUSHes the result to its reply list.
"""

from __future__ import annotations

import sys

import orjson
import redis

QUEUE, DONE = "floor:q", "floor:done"
BURST_IDLE = 0.5  # seconds of empty queue after which a burst worker exits


def main(url: str, burst: bool) -> None:
    """Serve until killed (or, in burst mode, until the queue stays empty)."""
    client = redis.Redis.from_url(url)
    while True:
        got = client.brpop([QUEUE], BURST_IDLE if burst else 0)
        if got is None:
            return
        item = orjson.loads(got[1])
        result = item["i"]  # the no-op returns its input
        pipe = client.pipeline(transaction=False)
        pipe.incr(DONE)
        if "r" in item:
            pipe.lpush(item["r"], orjson.dumps(result))
        pipe.execute()


if __name__ == "__main__":
    main(sys.argv[1], "--burst" in sys.argv[2:])
