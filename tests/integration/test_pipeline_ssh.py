"""ProcessTask jobs on another host: `SSHProcessManager` against a real OpenSSH server on
loopback (see tests/ssh_server.py), next to the local manager's `pids` and `basedir`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

pytest.importorskip("asyncssh")

from taskloom import TaskManager
from taskloom.errors import StoreUnavailableError
from taskloom.pipeline import MemoryRepository, Pipeline, ProcessTask
from taskloom.pipeline.managers import LocalProcessManager, SSHProcessManager
from tests.ssh_server import SSHServer, ssh_server

__all__ = ["ssh_server"]  # the fixture, imported so pytest finds it


class WatchedRepository(MemoryRepository):
    """A memory repository that tells when a key is written (to look while a job runs)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.written = asyncio.Event()

    async def write(self, key: str, data: bytes) -> None:
        await super().write(key, data)
        self.written.set()


def ssh(server: SSHServer, basedir: Path) -> SSHProcessManager:
    return SSHProcessManager(
        server.host, port=server.port, username=server.username,
        client_keys=[server.client_key], known_hosts=server.known_hosts, basedir=str(basedir),
    )  # fmt: skip


@pytest.fixture
async def manager() -> AsyncIterator[TaskManager]:
    async with TaskManager("memory://") as m:
        yield m


async def run(pipeline: Pipeline) -> None:
    async with asyncio.timeout(60):
        await pipeline.run()


SCRIPT = """
echo "via ${SSH_CONNECTION:+ssh}"
echo "job {{ job }} in {{ workdir }}"
tr a-z A-Z < "{{ src }}" > "{{ out }}"
echo "$GREETING" >&2
"""


async def test_a_job_runs_on_the_ssh_host_and_its_files_travel(
    ssh_server: SSHServer, manager: TaskManager, tmp_path: Path
) -> None:
    src, out, done = MemoryRepository("src"), MemoryRepository("out"), MemoryRepository("done")
    stdout, stderr = MemoryRepository("stdout"), MemoryRepository("stderr")
    await src.write("a", b"hello")
    await src.write("b", b"world")
    remote = ssh(ssh_server, tmp_path / "remote")
    task = ProcessTask(
        "shout", SCRIPT, done, manager=lambda: remote, stdout=stdout, stderr=stderr,
        environ={"GREETING": "hi from 'there'"},
    )  # fmt: skip
    task.link("src", src, is_input=True)
    task.link("out", out, is_output=True)
    await run(Pipeline([task], manager=manager))
    assert task.manager is remote
    assert task.basedir == PurePosixPath(tmp_path / "remote" / "shout")
    assert await out.read("a") == b"HELLO" and await out.read("b") == b"WORLD"
    said = (await stdout.read("a")).decode()
    assert said.startswith("via ssh\n") and f"in {tmp_path / 'remote' / 'shout'}/" in said
    assert await stderr.read("a") == b"hi from 'there'\n"
    assert (await done.info("a"))["success"]
    assert list((tmp_path / "remote" / "shout").iterdir()) == []  # working dirs removed


async def test_pids_are_recorded_while_a_remote_job_runs_and_a_timeout_kills_it(
    ssh_server: SSHServer, manager: TaskManager, tmp_path: Path
) -> None:
    src, done, pids = MemoryRepository("src"), MemoryRepository("done"), WatchedRepository("pids")
    await src.write("slow", b"")
    script = 'sleep 300 &\necho $! > "$PIDS/child"\necho $$ > "$PIDS/shell"\nwait\n'
    task = ProcessTask(
        "sleepy", script, done, manager=ssh(ssh_server, tmp_path / "remote"), pids=pids,
        timeout=3.0, environ={"PIDS": str(tmp_path)},
    )  # fmt: skip
    task.link("src", src, is_input=True)
    assert task.links["pids"].flags == ["is_status", "inhibits_start", "inhibits_output"]
    pipeline = Pipeline([task], manager=manager)
    running = asyncio.create_task(run(pipeline))
    async with asyncio.timeout(30):
        await pids.written.wait()
    record: dict[str, Any] = await pids.info("slow")
    assert record["host"] == "127.0.0.1" and record["pid"] > 1
    assert record["workdir"].startswith(str(tmp_path / "remote" / "sleepy"))
    await running
    assert (await done.info("slow"))["exit"] == "timeout"
    assert await pids.snapshot() == frozenset()  # removed when the job ended
    for name in ("shell", "child"):
        pid = int((tmp_path / name).read_text())
        assert await _gone(pid), f"remote {name} {pid} survived the timeout"


async def _gone(pid: int) -> bool:
    """True once `pid` ended (SIGKILL lands asynchronously; a zombie counts as ended)."""
    async with asyncio.timeout(10):
        while _alive(pid):  # noqa: ASYNC110 - no event tells when a non-child exits
            await asyncio.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_failing_remote_script_fails_the_job_with_its_stderr(
    ssh_server: SSHServer, manager: TaskManager, tmp_path: Path
) -> None:
    src, done = MemoryRepository("src"), MemoryRepository("done")
    await src.write("x", b"")
    task = ProcessTask("bad", "echo broken >&2; exit 3", done,
                       manager=ssh(ssh_server, tmp_path / "remote"))  # fmt: skip
    task.link("src", src, is_input=True)
    await run(Pipeline([task], manager=manager))
    record = await done.info("x")
    assert record["exit"] == "failure" and "status 3: broken" in record["error"]["message"]


async def test_an_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manager = SSHProcessManager("127.0.0.1", port=port, known_hosts=None)
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        await manager.open()


async def test_the_local_manager_keeps_pids_and_basedir(
    manager: TaskManager, tmp_path: Path
) -> None:
    src, done, pids = MemoryRepository("src"), MemoryRepository("done"), WatchedRepository("pids")
    await src.write("j", b"")
    seen: list[Any] = []

    class Peek(ProcessTask):
        async def update(self) -> bool:
            seen.extend([await pids.info(k) for k in await pids.snapshot()])
            return await super().update()

    task = Peek("local", 'echo "$PWD"; sleep 0.5', done, manager=LocalProcessManager(tmp_path),
                pids=pids, stdout=(stdout := MemoryRepository("stdout")))  # fmt: skip
    task.link("src", src, is_input=True)
    await run(Pipeline([task], manager=manager))
    assert task.basedir == PurePosixPath(tmp_path / "local")
    workdir = (await stdout.read("j")).decode().strip()
    assert Path(workdir).parent == tmp_path / "local"
    assert not await asyncio.to_thread(os.path.exists, workdir)
    assert pids.written.is_set() and await pids.snapshot() == frozenset()
    assert seen == [] or seen[0]["workdir"] == workdir
