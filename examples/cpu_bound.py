"""cpu_bound tasks: each run executes in a warm pool of child interpreters.

    python examples/cpu_bound.py

Shows a typed result coming back from a child, the task's `env` and `Resources` applied
there, several queued runs spread over the pool by a consumer, and a run past its timeout
whose child is killed (the pool replaces it).
"""

from __future__ import annotations

import asyncio
import os
import time

from taskloom import Resources, TaskConsumer, TaskManager, is_in_cpu_process, task
from taskloom.executors.process import ProcessExecutor


@task(cpu_bound=True, resources=Resources(cpu=1, memory="512Mi"), env={"OMP_NUM_THREADS": "1"})
def count_primes(limit: int) -> dict[str, object]:
    """Count the primes below `limit` with a sieve: plain CPU work, no I/O."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for n in range(2, int(limit**0.5) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, limit, n)))
    return {
        "primes": sum(sieve),
        "pid": os.getpid(),
        "in_cpu_process": is_in_cpu_process(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }


@task(cpu_bound=True, timeout_seconds=1)
def too_slow() -> None:
    """Runs past its timeout: the child running it is killed and replaced."""
    time.sleep(30)


async def main() -> None:
    pool = ProcessExecutor(size=2)
    tasks = [count_primes, too_slow]
    async with TaskManager("memory://", tasks=tasks, executors={"process": pool}) as manager:
        run = await manager.execute("count_primes", limit=10_000)
        info = run.result
        print(f"count_primes(limit=10000) = {info['primes']}")
        print(f"  ran in pid {info['pid']} (worker pid {os.getpid()}),", end=" ")
        print(f"in_cpu_process={info['in_cpu_process']}, OMP_NUM_THREADS={info['threads']}")

        for limit in (100_000, 200_000, 300_000, 400_000):
            await manager.queue("count_primes", limit=limit)
        await TaskConsumer(manager, max_concurrent_tasks=2).run(burst=True)
        done = await manager.runs(task="count_primes", limit=4)
        for r in sorted(done, key=lambda r: r.params["limit"]):
            print(f"count_primes(limit={r.params['limit']}) = {r.result['primes']}", end=" ")
            print(f"in pid {r.result['pid']}")

        slow = await manager.execute("too_slow")
        error = slow.error or {}
        print(f"too_slow: {slow.state} ({error.get('type')}); pool pids now {pool.pids}")


if __name__ == "__main__":
    # Run as a script, this file is `__main__`, which a pool child cannot import by name.
    # Importing it under its own name gives its tasks an address (`cpu_bound:count_primes`).
    from cpu_bound import main as importable_main

    asyncio.run(importable_main())
