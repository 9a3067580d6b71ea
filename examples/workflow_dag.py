"""Workflows and DAGs in one script.

1. A workflow: `crawl` fans out to `fetch` child runs, crashes once after the fan-out, and is
   retried; the replay reuses every finished `fetch` instead of running it again. Its `score`
   child is cached, so a second `crawl` gets it from the cache.
2. A DAG: `load` runs over 4 partitions, `clean` merges them, `stats` summarises; a seeded
   fault injector fails some attempts on purpose and the node retries recover.

Run it:  python examples/workflow_dag.py [STORE_URL]      (default: memory://)
"""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console
from rich.table import Table

from taskloom import Cache, RetryPolicy, TaskManager, TaskRun, task
from taskloom.dag import DAG, Node, NodeContext
from taskloom.run_tree import run_tree


# -- a workflow: tasks calling tasks ----------------------------------------------------------------
@task
async def fetch(page: int) -> list[int]:
    """Pretend to fetch one page of numbers."""
    return [page * 10 + i for i in range(3)]


@task(cache=Cache(version="1"))
async def score(values: list[int]) -> float:
    """An expensive summary worth caching."""
    return sum(values) / len(values)


@task(retry=1)
async def crawl(ctx: TaskRun, pages: int) -> float:
    """Fetch every page in parallel, then score them (crashes once, after the fan-out)."""
    batches = await asyncio.gather(*(fetch.aio(p) for p in range(pages)))
    if ctx.retry_attempt == 0:
        raise RuntimeError("simulated crash after the fan-out")
    result: float = await score.aio([v for batch in batches for v in batch])
    return result


# -- a DAG: partitions, dependencies, lifecycle -----------------------------------------------------
@task
async def load(ctx: TaskRun, partition: int) -> list[int]:
    """Load one partition of the input."""
    rows = list(range(partition * 5, partition * 5 + 5))
    ctx.metrics["rows"] = len(rows)
    return rows


@task
def clean(load: list[list[int]]) -> list[int]:
    """Merge the partitions and drop odd values."""
    return [v for part in load for v in part if v % 2 == 0]


@task
def stats(clean: list[int]) -> dict[str, float]:
    """Summarise the cleaned values."""
    return {"count": len(clean), "mean": sum(clean) / len(clean)}


def build_dag(log: list[str]) -> DAG:
    """The DAG; lifecycle hooks append to `log` so the order is visible."""

    def initialize(ctx: NodeContext) -> None:
        log.append(f"initialize {ctx.name}")

    def cleanup(ctx: NodeContext) -> None:
        log.append(f"cleanup {ctx.name}")

    retry = RetryPolicy(max_attempts=10, wait=0.0)
    load_node = Node(load, partitions=4, retry=retry, cpu_limit=1, memory_limit="256Mi",
                     initialize=initialize, cleanup=cleanup)  # fmt: skip
    clean_node = Node(clean, input_deps=[load_node], retry=retry)
    return DAG([load_node, clean_node, Node(stats, input_deps=[clean_node], retry=retry)])


async def main(url: str = "memory://") -> None:
    """Run both demos on the store at `url` and print what happened."""
    console = Console()
    async with TaskManager(url, tasks=[fetch, score, crawl, load, clean, stats]) as manager:
        run = await manager.execute("crawl", pages=4)
        fetches = await manager.runs(task="fetch", parent_id=run.id)
        console.print(f"crawl: {run.state} after {run.retry_attempt + 1} attempts -> {run.result}")
        console.print(
            f"fetch children: {len(fetches)}, attempts each: {sorted(len(f.attempts) for f in fetches)}"
        )
        console.print(await run_tree(manager, run.id))
        again = await manager.execute("crawl", pages=4)
        [cached] = await manager.runs(task="score", parent_id=again.id)
        console.print(f"second crawl: score cache hit = {cached.cache_hit}")

        log: list[str] = []
        result = await build_dag(log).run(manager, fail_prob=0.3, seed=7)
        console.print(f"dag: stats = {result['stats']}")
        console.print(f"dag lifecycle: {', '.join(log)}")
        table = Table("node", "runs", "attempts", "injected faults", "rows", "elapsed")
        for name, m in result.metrics.items():
            rows = m.counters.get("rows", 0)
            table.add_row(name, str(m.runs), str(m.attempts), str(m.injected_faults),
                          f"{rows:g}", f"{m.elapsed * 1000:.1f} ms")  # fmt: skip
        console.print(table)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
