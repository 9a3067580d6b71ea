"""ProcessTask: scripts rendered per job, streams and outputs into repositories, kills."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from taskloom import TaskManager
from taskloom.errors import NonRetryableError
from taskloom.pipeline import (
    STDOUT,
    FileRepository,
    MemoryRepository,
    Pipeline,
    ProcessTask,
)
from taskloom.pipeline.process import render, template_vars


async def run(*tasks: ProcessTask) -> Pipeline:
    async with TaskManager("memory://") as manager:
        pipeline = Pipeline(list(tasks), manager=manager)
        async with asyncio.timeout(30):
            await pipeline.run()
        return pipeline


def test_render() -> None:
    template = "cp {{ src }} {{out}}  # {{ job }}"
    assert template_vars(template) == {"src", "out", "job"}
    assert render(template, {"src": "a", "out": "b", "job": "j"}) == "cp a b  # j"
    with pytest.raises(NonRetryableError, match="nope"):
        render("{{ nope }}", {})


async def test_stdout_is_captured_into_a_repository() -> None:
    src, out = MemoryRepository("src"), MemoryRepository("stdout")
    for key in ("a", "b"):
        await src.write(key, b"")
    task = ProcessTask("hello", 'echo "hello {{ job }} from $TASKLOOM_TASK"', MemoryRepository(),
                       stdout=out)  # fmt: skip
    task.link("src", src, is_input=True)
    pipeline = await run(task)
    assert await out.read("a") == b"hello a from hello\n"
    assert await out.read("b") == b"hello b from hello\n"
    record = await task.done.info("a")
    assert record["exit"] == "success" and record["result"] == {"returncode": 0}
    assert pipeline.stats.succeeded == 2


async def test_inputs_outputs_stdin_and_merged_stderr(tmp_path: Path) -> None:
    words, upper = MemoryRepository("words"), FileRepository(tmp_path / "upper")
    files, stdin, log = FileRepository(tmp_path / "files"), MemoryRepository(), MemoryRepository()
    await words.write("j", b"some words")
    await files.write("j", b"from a file")
    await stdin.write("j", b"piped in")
    script = """#!/bin/sh
set -e
tr a-z A-Z < "$TASKLOOM_LINK_WORDS" > "{{ upper }}"
cat "{{ files }}"; echo
cat
echo "to stderr" >&2
"""
    task = ProcessTask("shout", script, MemoryRepository(), stdin=stdin, stdout=log, stderr=STDOUT)
    task.link("words", words, is_input=True)
    task.link("files", files, is_input=True)
    task.link("upper", upper, is_output=True)
    await run(task)
    assert await upper.read("j") == b"SOME WORDS"
    assert await log.read("j") == b"from a file\npiped into stderr\n"
    assert [p.name for p in (tmp_path / "upper").iterdir()] == ["j"]


async def test_a_failing_script_is_retried_then_failed_without_output() -> None:
    src, out, err = MemoryRepository(), MemoryRepository(), MemoryRepository()
    await src.write("j", b"")
    task = ProcessTask(
        "fails", 'echo partial; echo "it broke" >&2; exit 3', MemoryRepository(),
        stdout=out, stderr=err, retry=1,
    )  # fmt: skip
    task.link("src", src, is_input=True)
    pipeline = await run(task)
    record = await task.done.info("j")
    assert record["exit"] == "failure" and record["attempts"] == 2
    assert record["error"] == {
        "type": "ProcessExitError", "message": "script exited with status 3: it broke"
    }  # fmt: skip
    assert await out.snapshot() == frozenset() and await err.snapshot() == frozenset()
    assert pipeline.stats.launched == 1


async def test_a_script_that_cannot_start_is_retried_then_failed() -> None:
    src = MemoryRepository()
    await src.write("j", b"")
    task = ProcessTask("broken", "#!/nonexistent/interpreter\nexit 0\n", MemoryRepository(),
                       retry=2)  # fmt: skip
    task.link("src", src, is_input=True)
    async with TaskManager("memory://") as manager:
        async with Pipeline([task], manager=manager) as pipeline:
            async with asyncio.timeout(30):
                await pipeline.run()
            for _ in range(3):  # failed for good: not relaunched
                assert not await pipeline.update()
            assert pipeline.stats.launched == 1
    record = await task.done.info("j")
    assert record["exit"] == "failure" and record["attempts"] == 3
    assert record["error"]["type"] in ("FileNotFoundError", "PermissionError")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"  # a zombie is dead, only unreaped
    except FileNotFoundError:
        return False


async def _dies(pid: int, within: float = 10.0) -> bool:
    """True once `pid` is gone: SIGKILL is delivered asynchronously, so a loaded machine may
    show the process for a moment after the kill returned."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while _alive(pid):  # noqa: ASYNC110 - no event tells when a non-child exits
                await asyncio.sleep(0.01)
    return not _alive(pid)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to see processes")
async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    src = MemoryRepository()
    await src.write("slow", b"")
    await src.write("quick", b"")
    script = """
if [ "$TASKLOOM_JOB" = quick ]; then echo done; exit 0; fi
sleep 300 &
echo $! > "$PIDS/child"
echo $$ > "$PIDS/shell"
wait
"""
    task = ProcessTask("sleepy", script, MemoryRepository(), stdout=MemoryRepository(),
                       timeout=2.0, environ={"PIDS": str(tmp_path)})  # fmt: skip
    task.link("src", src, is_input=True)
    await run(task)
    slow, quick = await task.done.info("slow"), await task.done.info("quick")
    assert slow["exit"] == "timeout"
    assert quick["exit"] == "success"  # within its timeout: not killed
    for name in ("shell", "child"):
        pid = int((tmp_path / name).read_text())
        assert await _dies(pid), f"{name} {pid} survived the timeout"


async def test_template_from_a_file(tmp_path: Path) -> None:
    template = tmp_path / "job.sh"
    template.write_text("printf '%s' '{{ job }}'")
    src, out = MemoryRepository(), MemoryRepository()
    await src.write("x", b"")
    task = ProcessTask("from-file", template, MemoryRepository(), stdout=out)
    task.link("src", src, is_input=True)
    await run(task)
    assert await out.read("x") == b"x"


async def test_a_link_updated_in_place() -> None:
    data = MemoryRepository()
    await data.write("j", b"v1")
    task = ProcessTask("bump", 'echo "+v2" >> "$TASKLOOM_LINK_DATA"', MemoryRepository(),
                       ready=data)  # fmt: skip
    task.link("data", data, is_input=True, is_output=True)
    await run(task)
    assert await data.read("j") == b"v1+v2\n"
