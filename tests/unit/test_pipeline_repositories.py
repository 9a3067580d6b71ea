"""Repositories: one contract over memory, files and the store; atomic writes; key-set algebra."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskloom import TaskManager
from taskloom.errors import ConfigError
from taskloom.pipeline import (
    And,
    FileRepository,
    FileView,
    InvalidKeyError,
    LoopView,
    MemoryRepository,
    Not,
    Or,
    RepositoryBase,
    StoreRepository,
    TranslatedRepository,
)
from taskloom.pipeline.s3 import S3Repository
from tests.s3_server import client_options, new_bucket, s3_endpoint, s3_options

__all__ = ["s3_endpoint"]  # the fixture, imported so pytest finds it


class Boom(Exception):
    pass


@pytest.fixture(params=["memory", "file", "store", "s3"])
async def repo(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RepositoryBase]:
    if request.param == "memory":
        yield MemoryRepository("m")
    elif request.param == "file":
        yield FileRepository(tmp_path / "repo")
    elif request.param == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = S3Repository(await new_bucket(endpoint), "jobs/", **client_options(endpoint))
        try:
            yield s3
        finally:
            await s3.close()
    else:
        async with TaskManager("memory://") as manager:
            yield StoreRepository(manager, "s")


async def keys_of(repo: RepositoryBase) -> list[str]:
    return sorted([k async for k in repo.keys()])


async def test_dump_info_roundtrip(repo: RepositoryBase) -> None:
    assert await keys_of(repo) == []
    await repo.dump("a", {"n": 1, "tags": ["x"]})
    await repo.dump("b", [1, 2])
    assert await repo.info("a") == {"n": 1, "tags": ["x"]}
    assert await keys_of(repo) == ["a", "b"]
    assert await repo.snapshot() == {"a", "b"}
    assert await repo.contains("a") and not await repo.contains("c")
    await repo.dump("a", {"n": 2})  # replace
    assert await repo.info("a") == {"n": 2}
    await repo.delete("a")
    await repo.delete("a")  # absent: no error
    assert await keys_of(repo) == ["b"]


async def test_blobs_through_open(repo: RepositoryBase) -> None:
    async with repo.open("blob", "wb") as blob:
        await blob.write(b"hello ")
        await blob.write(b"world")
    async with repo.open("blob") as blob:
        assert await blob.read(5) == b"hello"
        assert await blob.read() == b" world"
    assert await repo.read("blob") == b"hello world"
    with pytest.raises(KeyError):
        await repo.read("missing")
    with pytest.raises(KeyError):
        async with repo.open("missing"):
            pass
    with pytest.raises(ConfigError):
        async with repo.open("blob", "ab"):  # type: ignore[arg-type]
            pass


async def test_a_writer_that_raises_leaves_nothing(repo: RepositoryBase) -> None:
    await repo.write("kept", b"old")
    for key in ("new", "kept"):
        with pytest.raises(Boom):
            async with repo.open(key, "wb") as blob:
                await blob.write(b"partial")
                raise Boom
    assert await keys_of(repo) == ["kept"]
    assert await repo.read("kept") == b"old"  # the previous value survives intact


async def test_unencodable_metadata_writes_nothing(repo: RepositoryBase) -> None:
    with pytest.raises(TypeError):
        await repo.dump("k", object())
    assert await keys_of(repo) == []


@pytest.mark.parametrize("key", ["", "a/b", "..", ".hidden", "x\\y", "nul\x00", "k" * 201])
async def test_keys_every_backend_can_hold(repo: RepositoryBase, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await repo.write(key, b"x")


async def test_file_repository_layout(tmp_path: Path) -> None:
    repo = FileRepository(tmp_path / "d", suffix=".json")
    assert await keys_of(repo) == []  # the directory does not exist yet
    await repo.dump("a", {"x": 1})
    assert (tmp_path / "d" / "a.json").read_bytes() == b'{"x":1}'
    (tmp_path / "d" / "other.txt").write_text("not a key: wrong suffix")
    (tmp_path / "d" / "sub.json").mkdir()  # directories are not keys either
    assert await keys_of(repo) == ["a"]
    assert repo.path_of("a") == tmp_path / "d" / "a.json"


async def test_file_writer_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    repo = FileRepository(tmp_path)
    with pytest.raises(Boom):
        async with repo.open("k", "wb") as blob:
            await blob.write(b"half of it")
            raise Boom
    assert os.listdir(tmp_path) == []


async def test_a_crashed_writer_leaves_no_key(tmp_path: Path) -> None:
    """A process killed mid-write (no cleanup runs) leaves only a hidden temp file."""
    script = textwrap.dedent(f"""
        import asyncio, os
        from taskloom.pipeline import FileRepository

        async def main():
            repo = FileRepository({str(tmp_path)!r})
            async with repo.open("k", "wb") as blob:
                await blob.write(b"partial output")
                os._exit(3)  # dies here: no exception handling, no cleanup

        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
    async with asyncio.timeout(60):
        assert await proc.wait() == 3
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".k.")  # the temp file, hidden
    repo = FileRepository(tmp_path)
    assert await keys_of(repo) == [] and not await repo.contains("k")
    await repo.write("k", b"complete")  # a later writer is not disturbed by the leftover
    assert await repo.read("k") == b"complete"


async def test_store_repository_is_shared_through_the_store() -> None:
    async with TaskManager("memory://") as manager:
        one, two = StoreRepository(manager, "shared"), StoreRepository(manager, "shared")
        other = StoreRepository(manager, "other")
        await asyncio.gather(*(one.dump(f"k{i}", i) for i in range(20)))  # concurrent index updates
        assert await two.snapshot() == {f"k{i}" for i in range(20)}
        assert await two.info("k7") == 7
        assert await other.snapshot() == frozenset()
        await two.delete("k7")
        assert not await one.contains("k7")


async def test_algebra() -> None:
    a, b, c = MemoryRepository("a"), MemoryRepository("b"), MemoryRepository("c")
    for key in ("1", "2", "3"):
        await a.write(key, b"")
    for key in ("2", "3", "4"):
        await b.write(key, b"")
    await c.write("3", b"")
    assert await And(a, b).snapshot() == {"2", "3"}
    assert await Or(a, b).snapshot() == {"1", "2", "3", "4"}
    assert await (a - b).snapshot() == {"1"}
    assert await (a & b & ~c).snapshot() == {"2"}
    assert await (a | c).snapshot() == {"1", "2", "3"}
    assert [k async for k in And(a, Not(Or(b, c))).keys()] == ["1"]
    assert await And(a, b).contains("2") and not await And(a, b).contains("1")
    assert await Or(a, b).contains("4") and not await Or(a, b).contains("9")
    assert await Not(a).contains("9") and not await Not(a).contains("1")
    assert await And().snapshot() == frozenset() and not await And().contains("1")
    with pytest.raises(ConfigError):
        await Not(a).snapshot()
    with pytest.raises(ConfigError):
        [k async for k in Not(a).keys()]
    with pytest.raises(ConfigError):
        await Or(a, Not(b)).snapshot()
    assert And(a, Not(b)).name == "AND(a, NOT(b))"


async def test_translated_repository() -> None:
    source, translator = MemoryRepository("src"), MemoryRepository("map")
    await source.dump("up1", {"v": 1})
    await translator.dump("x", "up1")
    await translator.dump("y", "up2")  # up2 not (yet) in the source
    view = TranslatedRepository(source, translator)
    assert await view.snapshot() == {"x"}
    assert [k async for k in view.keys()] == ["x"]
    assert await view.contains("x") and not await view.contains("y")
    assert not await view.contains("z")
    assert await view.info("x") == {"v": 1}
    with pytest.raises(KeyError):
        await view.read("y")
    with pytest.raises(ConfigError):
        await view.write("x", b"")
    await view.delete("x")  # ignored without allow_deletes
    assert await source.contains("up1")
    await TranslatedRepository(source, translator, allow_deletes=True).delete("x")
    assert not await source.contains("up1")
    await translator.dump("bad", 5)
    with pytest.raises(ConfigError):
        await view.snapshot()


async def test_file_view_crosses_processes(tmp_path: Path) -> None:
    view = pickle.loads(pickle.dumps(FileView.of(FileRepository(tmp_path, suffix=".j"))))
    view.dump("a", {"x": 1})
    assert view.keys() == ["a"] and view.contains("a")
    assert view.info("a") == {"x": 1}
    assert await FileRepository(tmp_path, suffix=".j").info("a") == {"x": 1}
    view.delete("a")
    assert view.keys() == []
    with pytest.raises(KeyError):
        view.read("a")


async def test_loop_view_from_a_thread() -> None:
    repo = MemoryRepository()
    view = LoopView(repo, asyncio.get_running_loop())

    def work() -> list[str]:
        view.dump("a", 1)
        view.write("b", b"2")
        assert view.info("a") == 1 and view.read("b") == b"2" and view.contains("b")
        view.delete("b")
        return view.keys()

    assert await asyncio.to_thread(work) == ["a"]


async def test_s3_objects_layout_and_errors(s3_endpoint: str) -> None:
    from taskloom.errors import StoreUnavailableError

    bucket = await new_bucket(s3_endpoint)
    logs = S3Repository(bucket, "logs/", suffix=".txt", **client_options(s3_endpoint))
    other = S3Repository(bucket, "other/", **client_options(s3_endpoint))
    try:
        await logs.write("job1", b"hello")
        await other.write("job2", b"x")
        assert await logs.snapshot() == {"job1"} and await other.snapshot() == {"job2"}
        client = await logs._s3()
        listing = await client.list_objects_v2(Bucket=bucket)
        assert sorted(o["Key"] for o in listing["Contents"]) == ["logs/job1.txt", "other/job2"]
        many = S3Repository(bucket, "many/", page_size=2, **client_options(s3_endpoint))
        await asyncio.gather(*(many.write(f"k{i}", b"") for i in range(5)))
        assert len(await many.snapshot()) == 5  # three listing pages
        await many.close()
    finally:
        await logs.close()
        await other.close()
    nobucket = S3Repository("no-such-bucket", **client_options(s3_endpoint))
    with pytest.raises(ConfigError, match="does not exist"):
        await nobucket.snapshot()
    await nobucket.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = S3Repository(bucket, **s3_options(closed), client_options={
        "config": __import__("botocore.config").config.Config(retries={"max_attempts": 1})
    })  # fmt: skip
    with pytest.raises(StoreUnavailableError):
        await down.read("x")
    await down.close()
    with pytest.raises(ConfigError):
        S3Repository("")
