"""A three-stage data pipeline over files: split documents, count words, report with a script.

    python examples/pipeline.py --workdir /tmp/demo     # run it; run it again: nothing relaunches
    cd examples && PIPELINE_DEMO_DIR=/tmp/demo taskloom pipeline status --app pipeline:make_pipeline

Stage 1 (`split`, in-process) turns each document into a word list; stage 2 (`count`, a
thread pool) counts the words; stage 3 (`report`, a shell script) prints the top words,
captured into a repository. Runs are recorded in SQLite inside the work directory, so each
document goes through each stage exactly once, across restarts too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from taskloom import Resources, TaskManager
from taskloom.pipeline import (
    ExecutorTask,
    FileRepository,
    InProcessTask,
    Pipeline,
    ProcessTask,
    Repository,
    ResourceManager,
)
from taskloom.pipeline.views import SyncRepository

SAMPLES = {
    "fruit": "apple banana apple cherry apple banana",
    "weather": "rain sun rain rain cloud sun",
    "pets": "cat dog cat fish cat dog dog dog",
}

REPORT = """
printf '%s: ' "$TASKLOOM_JOB"
tr -d '{}"' < "{{ count_counts }}" | tr ',' ' '
echo
"""


async def split(job: str, docs: Repository, words: Repository) -> None:
    """Stage 1: a document's words, lower-cased."""
    text = (await docs.read(job)).decode()
    await words.dump(job, re.findall(r"[a-z']+", text.lower()))


def count(job: str, split_words: SyncRepository, counts: SyncRepository) -> None:
    """Stage 2 (runs in a worker thread): the three most common words."""
    counts.dump(job, dict(Counter(split_words.info(job)).most_common(3)))


def make_pipeline(workdir: str | os.PathLike[str] | None = None) -> Pipeline:
    """The pipeline on `workdir` (default: $PIPELINE_DEMO_DIR or ./pipeline-demo)."""
    root = Path(workdir or os.environ.get("PIPELINE_DEMO_DIR", "pipeline-demo"))

    def repo(name: str, suffix: str = ".json") -> FileRepository:
        return FileRepository(root / name, suffix=suffix, name=name)

    manager = TaskManager(f"sqlite:///{root / 'taskloom.db'}")
    splitter = InProcessTask("split", done=repo("split.done"), func=split)
    splitter.link("docs", repo("docs", ".txt"), is_input=True)
    splitter.link("words", repo("words"), is_output=True)

    counter = ExecutorTask("count", ThreadPoolExecutor(4), done=repo("count.done"), func=count)
    counter.plug(splitter, output_links=["words", "done"])
    counter.link("counts", repo("counts"), is_output=True)

    reporter = ProcessTask(
        "report", REPORT, done=repo("report.done"), stdout=repo("reports", ".txt"),
        resources=Resources(cpu="1"), retry=1, timeout=30,
    )  # fmt: skip
    reporter.plug(counter)
    quota = ResourceManager(Resources(cpu="2"), name="local")  # two scripts at a time
    return Pipeline([splitter, counter, reporter], manager=manager, quotas=[quota])


async def main(workdir: Path, console: Console) -> int:
    """Seed sample documents, run the pipeline to the end, print what happened."""
    pipeline = make_pipeline(workdir)
    docs = pipeline.tasks["split"].links["docs"].repo
    for name, text in SAMPLES.items():
        if not await docs.contains(name):
            await docs.write(name, text.encode())
    async with pipeline.manager:
        stats = await pipeline.run()
        table = Table(title="pipeline")
        for column in ("task", "ready", "running", "done", "failed"):
            table.add_column(column)
        for s in await pipeline.status():
            table.add_row(s.task, str(s.ready), str(s.running), str(s.done), str(s.failed))
    console.print(table)
    console.print(f"{stats.launched} launched, {stats.succeeded} succeeded, {stats.failed} failed")
    reports = pipeline.tasks["report"].links["stdout"].repo
    for key in sorted(await reports.snapshot()):
        console.print((await reports.read(key)).decode().strip(), highlight=False)
    return 1 if stats.failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("pipeline-demo"))
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.workdir, Console())))
