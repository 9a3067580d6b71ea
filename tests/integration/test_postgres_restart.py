"""The PostgreSQL store keeps its promises while the server drops its connections.

A killer connection runs `pg_terminate_backend` on the store's backends (pool and listener)
again and again while runs flow through enqueue → claim → finish. The killer only targets this
test's `application_name`, so other suites sharing the database are left alone.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import pytest

from taskloom.errors import StoreUnavailableError
from taskloom.run import TaskRun, TaskState
from taskloom.store import Beat
from taskloom.store.base import dt
from tests.conftest import postgres_url, unavailable

asyncpg = pytest.importorskip("asyncpg")

from taskloom.store.postgres import PostgresStore  # noqa: E402 - only once asyncpg is there

T = TypeVar("T")
T0 = 1_800_000_000.0
RUNS = 200
WORKERS = 4
KILL_EVERY = 0.25  # seconds: often enough to hit every kind of call, rarely enough to progress


@pytest.fixture
def base_url() -> str:
    url = postgres_url()
    if not url:
        unavailable("TASKLOOM_TEST_POSTGRES_URL not set")
        raise AssertionError
    return url


@pytest.fixture
def app_name() -> str:
    return "taskloom_restart_" + uuid.uuid4().hex[:8]


@pytest.fixture
def store_url(base_url: str, app_name: str) -> str:
    sep = "&" if "?" in base_url else "?"
    return f"{base_url}{sep}schema=r{uuid.uuid4().hex[:12]}&application_name={app_name}"


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[list[PostgresStore]]:
    """Two connected stores on one schema: two processes sharing the database."""
    made = [PostgresStore(store_url), PostgresStore(store_url)]
    for s in made:
        await s.connect()
    try:
        yield made
    finally:
        await made[0].drop()
        for s in made:
            await s.close()


class Killer:
    """Terminates every backend of one application_name, on demand or every `interval` s."""

    def __init__(self, conn: Any, app_name: str) -> None:
        self.conn = conn
        self.app_name = app_name
        self.killed = 0

    async def kill(self) -> int:
        n: int = await self.conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND application_name = $1",
            self.app_name,
        )
        self.killed += n
        return n

    async def every(self, interval: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.kill()
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass


@pytest.fixture
async def killer(base_url: str, app_name: str) -> AsyncIterator[Killer]:
    conn = await asyncpg.connect(base_url)
    try:
        yield Killer(conn, app_name)
    finally:
        await conn.close()


async def persist(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """What a client does about StoreUnavailableError: try again shortly, until a deadline."""
    while True:
        try:
            return await call()
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_runs_finish_exactly_once_while_connections_die(
    stores: list[PostgresStore], killer: Killer
) -> None:
    producer, consumer = stores
    deadline = time.monotonic() + 60
    runs = [TaskRun(task="t", state=TaskState.queued, queued=dt(T0)) for _ in range(RUNS)]
    wins: Counter[str] = Counter()  # finish() == True per run id: must end at exactly one
    landed: set[str] = set()  # finishes whose reply was lost, confirmed by reading the run
    clock = [T0]  # the fake clock: moved on only to reclaim claims whose reply was lost

    async def produce() -> None:
        for i in range(0, RUNS, 20):
            await persist(partial(producer.enqueue, runs[i : i + 20]), deadline)
            await asyncio.sleep(0.01)

    async def work(name: str) -> None:
        store = consumer if name.endswith(("0", "2")) else producer
        while len(set(wins) | landed) < RUNS and time.monotonic() < deadline:
            leases = await persist(lambda: store.claim(name, None, 10, 30, clock[0]), deadline)
            if not leases:
                await asyncio.sleep(0.02)
                continue
            items = [
                (lease, lease.run.model_copy(update={"state": TaskState.success, "result": name}))
                for lease in leases
            ]
            try:
                results = await store.finish(items)
            except StoreUnavailableError:
                # The reply was lost; the write may or may not have landed. Read it back.
                for lease, new in items:
                    got = await persist(partial(store.get, lease.run.id), deadline)
                    if got is not None and got.state is TaskState.success and got.result == name:
                        landed.add(new.id)
                continue
            for (_lease, new), ok in zip(items, results, strict=True):
                if ok:
                    wins[new.id] += 1

    async def reclaim_lost_claims() -> None:
        # A claim whose reply was lost leaves runs leased to nobody: like a crashed worker,
        # they come back when the lease expires (the fake clock jumps past it).
        while len(set(wins) | landed) < RUNS and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            clock[0] += 31
            await persist(lambda: producer.reclaim(clock[0]), deadline)

    stop = asyncio.Event()
    chaos = asyncio.create_task(killer.every(KILL_EVERY, stop))
    try:
        await asyncio.wait_for(
            asyncio.gather(
                produce(), *(work(f"w{i}") for i in range(WORKERS)), reclaim_lost_claims()
            ),
            90,
        )
    finally:
        stop.set()
        await chaos

    assert killer.killed > 0, "the killer never hit a connection: the test proved nothing"
    assert max(wins.values()) == 1, "a run was finished twice"
    assert not (set(wins) & landed)
    assert set(wins) | landed == {r.id for r in runs}
    for run in runs:
        got = await persist(partial(producer.get, run.id), deadline)
        assert got is not None and got.state is TaskState.success


async def test_listener_comes_back_after_its_connection_dies(
    stores: list[PostgresStore], killer: Killer
) -> None:
    writer, watcher = stores
    with watcher.notifier.watch("queue") as woke:
        assert await killer.kill() > 0
        # Back on a new connection, the listener wakes every watcher (news may be lost).
        await asyncio.wait_for(woke.wait(), 10)
        woke.clear()
        # And the NOTIFY path works again: another process's enqueue reaches this one.
        deadline = time.monotonic() + 10
        await persist(lambda: writer.enqueue([TaskRun(task="t", state=TaskState.queued)]), deadline)
        await asyncio.wait_for(woke.wait(), 10)


async def test_notify_crosses_processes(stores: list[PostgresStore]) -> None:
    writer, watcher = stores
    [run] = await writer.enqueue([TaskRun(task="t", state=TaskState.queued, queued=dt(T0))])
    with watcher.notifier.watch(f"run:{run.id}") as changed:
        [lease] = await writer.claim("w", None, 1, 30, T0)
        done = lease.run.model_copy(update={"state": TaskState.success})
        assert await writer.finish([(lease, done)]) == [True]
        await asyncio.wait_for(changed.wait(), 5)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_server_raises_store_unavailable_fast() -> None:
    url = f"postgresql://postgres@127.0.0.1:{unused_port()}/test?schema=nowhere"
    store = PostgresStore(url)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(store.enqueue([TaskRun(task="t", state=TaskState.queued)]), 30)
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(store.connect(), 30)
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(store.ping(), 30)
    assert time.monotonic() - started < 5
    await store.close()


async def test_store_recovers_when_the_pool_was_emptied(
    stores: list[PostgresStore], killer: Killer
) -> None:
    """Idle pooled connections killed between calls: the next call succeeds, no error."""
    store = stores[0]
    [run] = await store.enqueue([TaskRun(task="t", state=TaskState.queued, queued=dt(T0))])
    for _ in range(3):
        assert await killer.kill() > 0
        await asyncio.sleep(0.05)  # let the client see the sockets close (or not: both work)
        got = await store.get(run.id)
        assert got is not None and got.id == run.id


class LoseReplies:
    """Pool stand-in: the next `armed` calls run (and commit), then the reply is 'lost'.

    That is the one ambiguous failure a client sees: the connection died after the server
    committed. Every store call must come out right when it retries.
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.armed = 0

    async def acquire(self) -> Any:
        return LossyConnection(await self.pool.acquire(), self)

    async def release(self, conn: Any) -> None:
        await self.pool.release(conn.inner)

    def __getattr__(self, name: str) -> Any:  # close(), terminate(): the real pool's
        return getattr(self.pool, name)


class LossyConnection:
    def __init__(self, inner: Any, owner: LoseReplies) -> None:
        self.inner = inner
        self.owner = owner

    def terminate(self) -> None:
        """The real connection is healthy; nothing to drop."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return attr

        async def lossy(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if self.owner.armed > 0:
                self.owner.armed -= 1
                raise asyncpg.exceptions.ConnectionDoesNotExistError(
                    "connection was closed in the middle of operation (simulated)"
                )
            return result

        return lossy


async def test_calls_whose_reply_was_lost_come_out_right(stores: list[PostgresStore]) -> None:
    store = stores[0]
    lossy = LoseReplies(await store._get_pool())
    store._pool = lossy

    a, b = (TaskRun(task="t", state=TaskState.queued, queued=dt(T0)) for _ in range(2))
    lossy.armed = 1
    assert [r.id for r in await store.enqueue([a, b])] == [a.id, b.id]

    lossy.armed = 1
    leases = await store.claim("w", None, 10, 30, T0)
    assert {lease.run.id for lease in leases} == {a.id, b.id}, "the lost claim's runs came back"

    lossy.armed = 1
    replies = await store.heartbeat([Beat(lease) for lease in leases], 30, T0 + 1)
    assert all(reply.alive for reply in replies)

    lossy.armed = 1
    done = [(lease, lease.run.model_copy(update={"state": TaskState.success})) for lease in leases]
    assert await store.finish(done) == [True, True], "a finish that landed reports success"
    assert await store.finish(done) == [False, False], "and it still cannot land twice"

    lossy.armed = 1
    assert await store.acquire_slot("s", "h1", 1, 10, T0)
    lossy.armed = 1
    assert await store.acquire_lock("l", "h1", 10, T0)

    lossy.armed = 2  # both attempts lose their reply: the caller hears about it
    with pytest.raises(StoreUnavailableError):
        await store.get(a.id)
    got = await store.get(a.id)
    assert got is not None and got.state is TaskState.success
