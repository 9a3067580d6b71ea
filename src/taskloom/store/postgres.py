"""The PostgreSQL store: `FOR UPDATE SKIP LOCKED` claims, fenced batch writes, LISTEN/NOTIFY.

Every table lives in one schema (URL parameter `schema`, default `taskloom`), set as the
`search_path` of each pooled connection, so tests and apps can share a database. The SQL lives
in `sql/postgres/`: `queries.sql` (named queries), `schema.sql` and numbered `migrations/`.
Each run is a row of indexed columns plus `data`, the record as JSON without the fields the
columns hold for good (`_json`, `_record`); every batch call
(enqueue, claim, heartbeat, finish) is one statement, hence one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..errors import ConfigError, StoreUnavailableError, missing_extra
from ..ratelimit import RateLimit, limits_json
from ..run import TaskPriority, TaskRun, TaskState
from .base import (
    ACTIVE_STATES,
    Beat,
    BeatReply,
    Claimed,
    Lease,
    Notifier,
    RunCount,
    RunQuery,
    WorkerInfo,
    dt,
    queued_by_priority,
    ts,
)  # fmt: skip
from .postgres_control import PostgresControl
from .records import claimed, decode_or_stand_in, decode_run, plain_json

try:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("postgres", "asyncpg") from exc

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = Any  # asyncpg.Connection (untyped)
Record = Mapping[str, Any]

DEFAULT_SCHEMA = "taskloom"
CONNECT_TIMEOUT = 5.0  # seconds: a down server surfaces as StoreUnavailableError, never a hang
COMMAND_TIMEOUT = 60.0  # seconds: a half-open socket cannot hang a call forever
MIGRATION_TIMEOUT = 3600.0  # seconds: a migration may rewrite a big table, or wait for another
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
LISTENER_KEEPALIVE = 30.0  # seconds between checks that the idle LISTEN connection still works
LISTENER_MAX_BACKOFF = 5.0  # seconds: cap of the listener's reconnect backoff

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,54}")  # + "_events" fits a 63-byte channel
_MIGRATION_FILE = re.compile(r"(\d{4})_(\w+)\.sql")
_QUERY_HEADER = re.compile(r"^-- ([a-z0-9_]+) --\n(?:-- .*\n)*", re.MULTILINE)


# -- packaged SQL ---------------------------------------------------------------------------------
def _sql_dir() -> Traversable:
    return resources.files("taskloom.store").joinpath("sql", "postgres")


def read_schema_sql() -> str:
    """The full current schema (what applying every migration yields)."""
    text: str = _sql_dir().joinpath("schema.sql").read_text(encoding="utf-8")
    return text


@functools.cache
def queries() -> dict[str, str]:
    """The named queries of `queries.sql`, read once."""
    text: str = _sql_dir().joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every packaged migration, in order."""
    found = []
    for entry in _sql_dir().joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append((int(match[1]), entry.name[:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)


# -- errors ---------------------------------------------------------------------------------------
def _unavailable(exc: BaseException) -> bool:
    """True if `exc` means the server cannot be reached (as opposed to a bad query)."""
    if isinstance(exc, StoreUnavailableError):
        return False
    if isinstance(
        exc,
        (
            OSError,  # refused, reset, DNS, and TimeoutError (connect/command timeout)
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.TooManyConnectionsError,
        ),
    ):
        return True
    # A closed pool or connection; other InterfaceErrors are misuse and must surface as-is.
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and "clos" in str(exc):
        return True
    return _dying(exc)


def _dying(exc: BaseException) -> bool:
    """True for the state error of a connection whose server already sent its farewell.

    A terminated backend sends FATAL before closing the socket; a connection acquired in
    between is stuck consuming that error, so asyncpg refuses to start the call (nothing is
    sent). The store never shares a connection, so this can mean nothing else.
    """
    return isinstance(exc, asyncpg.exceptions.InternalClientError) and (
        "another operation" in str(exc)
    )


# -- rows -----------------------------------------------------------------------------------------
# Fields a row's columns hold for a run's whole life: its `data` leaves them out.
_IN_COLUMNS = frozenset({"id", "task", "queue", "priority"})
_IN_COLUMNS_AND_QUEUED = _IN_COLUMNS | {"queued"}
_IN_COLUMNS_AND_END = _IN_COLUMNS | {"end"}
_IN_COLUMNS_AND_TIMES = _IN_COLUMNS | {"queued", "end"}
_PRIORITY_JSON = {p.rank: f'"{p.value}"' for p in TaskPriority}


def _json(run: TaskRun) -> str:
    """The row's `data`: the compact record less what the columns hold (see schema.sql).
    `queued` is left to the `created` column only when set: a run without one keeps an
    explicit null, which wins over `created` (then its start) on reading."""
    if run.queued is None:
        leave_out = _IN_COLUMNS if run.end is None else _IN_COLUMNS_AND_END
    else:
        leave_out = _IN_COLUMNS_AND_QUEUED if run.end is None else _IN_COLUMNS_AND_TIMES
    return plain_json(run, leave_out)


def _record(row: Record) -> str:
    """The whole JSON record of a row: the column-held fields in front of `data`, whose own
    keys (rows written before migration 0008) come later and so win."""
    parts = [
        '{"id":', orjson.dumps(row["id"]).decode(),
        ',"task":', orjson.dumps(row["task"]).decode(),
        ',"queue":', orjson.dumps(row["queue"]).decode(),
        ',"priority":', _PRIORITY_JSON[row["priority_rank"]],
    ]  # fmt: skip
    if (created := row["created"]) is not None:
        parts += (',"queued":"', _iso(created), '"')
    if (ended := row["ended"]) is not None:
        parts += (',"end":"', _iso(ended), '"')
    body = row["data"][1:].lstrip()
    if not body.startswith("}"):
        parts.append(",")
    parts.append(body)
    return "".join(parts)


def _load(row: Record) -> TaskRun:
    return decode_run(_record(row), row["id"])


def _load_or_stand_in(row: Record) -> TaskRun:
    return decode_or_stand_in(_record(row), row["id"])


def _iso(seconds: float) -> str:
    """A timestamp written into JSON by SQL, in pydantic's own format."""
    moment = dt(seconds)
    assert moment is not None
    return moment.isoformat().replace("+00:00", "Z")


def _due(run: TaskRun) -> float:
    return ts(run.execute_after) or ts(run.queued) or 0.0  # as the memory store orders


@dataclass(frozen=True, slots=True)
class _Columns:
    """The indexed columns of one run row, as the batch statements take them."""

    id: str
    task: str
    state: str
    queue: str
    priority_rank: int
    due: float
    execute_after: float | None
    dedup_key: str | None
    worker: str | None
    parent_id: str | None
    root_run_id: str | None
    created: float | None
    ended: float | None
    data: str

    @classmethod
    def of(cls, run: TaskRun) -> _Columns:
        return cls(
            run.id, run.task, run.state.value, run.queue, run.priority.rank, _due(run),
            ts(run.execute_after), run.dedup_key, run.worker, run.parent_id,
            None if run.root_run_id == run.id else run.root_run_id,  # see runs_root_idx
            ts(run.queued or run.start), ts(run.end), _json(run),
        )  # fmt: skip


def _arrays(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Transpose rows into one list per column (the `unnest($1::..[], ...)` arguments)."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


async def _keep_session(conn: Connection) -> None:
    # asyncpg's default reset (RESET ALL, UNLISTEN *, ...) costs a round trip per release; the
    # store never changes session state, and asyncpg still rolls back an open transaction.
    return None


class PostgresStore(PostgresControl):
    """A store in one PostgreSQL schema, shared by every process that opens the same URL."""

    parallel_writes = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.notifier = Notifier()
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in params if k == "schema"), DEFAULT_SCHEMA)
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(f"invalid schema name {schema!r} in the PostgreSQL URL")
        self.schema = schema
        self.channel = f"{schema}_events"
        query = urlencode([(k, v) for k, v in params if k != "schema"])
        self._dsn = urlunsplit(parts._replace(query=query))
        self._where = parts.hostname or "localhost"
        self._ident = '"' + schema + '"'  # safe: the name matched _SCHEMA_NAME
        self._q = queries()
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        # server pids of this store's pooled connections: a 'queue' notification one of them
        # sent was published here already by the call that sent it (see _on_notify)
        self._own_pids: set[int] = set()
        self._listener: asyncio.Task[None] | None = None
        self._vacuum_checked = False

    # -- connection plumbing ----------------------------------------------------------------
    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": COMMAND_TIMEOUT,
            # JIT compiles a plan in ~100 ms: a bad trade for a queue's short statements.
            "server_settings": {"search_path": self._ident, "jit": "off"},
        }

    async def _get_pool(self) -> Any:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    pool = asyncpg.create_pool(
                        self._dsn, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE,
                        reset=_keep_session, init=self._own_connection,
                        **self._connect_kwargs(),
                    )  # fmt: skip
                    try:
                        await pool
                    except BaseException:
                        pool.terminate()
                        raise
                    self._pool = pool
        return self._pool

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """The one place driver errors become ours: unreachable server -> StoreUnavailableError.

        Anything else (a bad query, a constraint) passes through untouched.
        """
        try:
            yield
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailableError(
                    f"PostgreSQL at {self._where} is unavailable: {exc}"
                ) from exc
            raise

    async def _run(self, op: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection, retrying once if the connection is lost mid-call.

        Every call is written to be safe to repeat after a lost reply (server restart,
        `pg_terminate_backend`): inserts skip existing ids, claims and finishes recognise their
        own first attempt by its lease token, everything else is idempotent. Failing to get a
        connection at all is reported at once (nothing was sent).
        """
        for attempt in (1, 2):
            with self._translated():
                pool = await self._get_pool()
                conn = await pool.acquire()
                try:
                    return await op(conn)
                except asyncpg.exceptions.DeadlockDetectedError:
                    # two backends sharing a counter shard (see run_counts): the server rolled
                    # this call back whole, so it is safe to run again
                    if attempt == 2:
                        raise
                    log.info("PostgreSQL deadlock; retrying once")
                except Exception as exc:
                    if not _unavailable(exc) or attempt == 2:
                        raise
                    log.info("PostgreSQL connection lost (%s); retrying once", exc)
                    # Never hand a connection that failed this way to anyone (the pool may
                    # already have let go of it when its socket closed).
                    with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                        conn.terminate()
                finally:
                    await _release(pool, conn)
        raise AssertionError("unreachable")

    async def connect(self) -> None:
        """Open the pool, apply pending migrations, start the LISTEN connection."""
        await self.migrate()
        if not self._vacuum_checked:
            self._vacuum_checked = True
            await self._warn_without_autovacuum()
        if self._listener is None:
            conn = await self._listen()
            self._listener = asyncio.create_task(
                self._supervise_listener(conn), name=f"taskloom-pg-listener-{self.schema}"
            )

    async def _warn_without_autovacuum(self) -> None:
        # A queue table churns: without vacuum, claims walk ever more dead index entries and
        # the table only grows. The server's setting is not ours to change; say so once.
        if not await self._run(lambda conn: conn.fetchval(self._q["autovacuum_on"])):
            log.warning(
                "autovacuum is off on the PostgreSQL server at %s: the runs table will bloat"
                " and claims slow down as it churns; turn it on (autovacuum = on,"
                " track_counts = on) or VACUUM %s.runs regularly",
                self._where, self.schema,
            )  # fmt: skip

    async def close(self) -> None:
        """Stop listening and close the pool."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT)
            except Exception:  # busy or broken connections: drop the sockets instead
                log.debug("closing the PostgreSQL pool failed; terminating it", exc_info=True)
                pool.terminate()

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the server answers."""
        await self._run(lambda conn: conn.fetchval(self._q["ping"]))

    async def drop(self) -> None:
        """Drop the store's schema and everything in it (test teardown)."""
        await self._run(lambda conn: conn.execute(f"DROP SCHEMA IF EXISTS {self._ident} CASCADE"))

    async def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction; return the names applied."""

        async def op(conn: Connection) -> list[str]:
            async with conn.transaction():
                # Two processes connecting at once: the second waits here, then finds the
                # versions recorded and applies nothing (CREATE SCHEMA would race too).
                await conn.execute(
                    self._q["migration_lock"],
                    f"taskloom:migrate:{self.schema}",
                    timeout=MIGRATION_TIMEOUT,
                )
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._ident}")
                await conn.execute(self._q["create_schema_version"])
                applied = {r["version"] for r in await conn.fetch(self._q["applied_versions"])}
                done = []
                for version, name, sql in migrations():
                    if version not in applied:
                        await conn.execute(sql, timeout=MIGRATION_TIMEOUT)
                        await conn.execute(self._q["record_version"], version, name)
                        done.append(name)
                return done

        done = await self._run(op)
        if done:
            log.info("migrated PostgreSQL schema %s: %s", self.schema, ", ".join(done))
        return done

    # -- LISTEN/NOTIFY ------------------------------------------------------------------------
    async def _own_connection(self, conn: Connection) -> None:
        """Note a new pooled connection's server pid, forgotten when the connection closes."""
        pid = conn.get_server_pid()
        self._own_pids.add(pid)
        conn.add_termination_listener(lambda _conn: self._own_pids.discard(pid))

    def _on_notify(self, _conn: Connection, pid: int, _channel: str, payload: str) -> None:
        # every statement of ours that notifies 'queue' is followed by the same local wake-up:
        # its echo would cost a consumer in this process a second, empty claim
        if payload == "queue" and pid in self._own_pids:
            return
        self.notifier.publish(payload)

    async def _listen(self) -> Connection:
        """A dedicated connection LISTENing on the store's channel (not pooled: it stays idle)."""
        with self._translated():
            conn = await asyncpg.connect(self._dsn, **self._connect_kwargs())
            try:
                await conn.add_listener(self.channel, self._on_notify)
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def _supervise_listener(self, conn: Connection) -> None:
        """Keep a LISTEN connection up for the store's lifetime, reconnecting with backoff."""
        backoff = 0.1
        try:
            while True:
                try:
                    if conn is None:
                        conn = await self._listen()
                        # Whatever was notified while we were away is lost: wake every watcher
                        # so each re-reads the state it waits on.
                        for topic in self.notifier.topics:
                            self.notifier.publish(topic)
                        log.info("PostgreSQL listener reconnected to %s", self.channel)
                    backoff = 0.1
                    lost = asyncio.Event()
                    conn.add_termination_listener(functools.partial(_set_event, lost))
                    while not conn.is_closed():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(lost.wait(), LISTENER_KEEPALIVE)
                        if not conn.is_closed():  # an idle socket can die unnoticed: probe it
                            await conn.fetchval(self._q["ping"], timeout=CONNECT_TIMEOUT)
                    log.warning("PostgreSQL listener connection closed; reconnecting")
                except Exception:
                    log.warning(
                        "PostgreSQL listener failed; retrying in %.1fs", backoff, exc_info=True
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, LISTENER_MAX_BACKOFF)
                if conn is not None:
                    conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                await _close_quietly(conn)

    # -- queue ------------------------------------------------------------------------------
    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        """Insert runs; existing ids and active dedup keys return the existing run instead."""
        if not runs:
            self.notifier.publish("queue")
            return []
        cols = [_Columns.of(run) for run in runs]

        async def op(conn: Connection) -> tuple[set[str], dict[tuple[str, str], TaskRun]]:
            # one run (each queue() call) from plain parameters, a batch as column arrays
            query, args = (
                ("enqueue_one", _enqueue_row(cols[0])) if len(cols) == 1
                else ("enqueue", _arrays((_enqueue_row(c) for c in cols), 14))
            )  # fmt: skip
            row = await conn.fetchrow(self._q[query], *args, self.channel)
            inserted = set(row["inserted"] or ())
            existing: dict[tuple[str, str], TaskRun] = {}
            if len(inserted) < len(cols):  # rare: a second round trip for the duplicates
                skipped = [c for c in cols if c.id not in inserted]
                found = await conn.fetch(
                    self._q["existing_runs"],
                    [c.id for c in skipped],
                    [c.dedup_key for c in skipped if c.dedup_key],
                )
                existing = {(r["kind"], r["match"]): _load_or_stand_in(r) for r in found}
            return inserted, existing

        # Idempotent: a retry finds the rows the lost attempt inserted and returns them.
        inserted, existing = await self._run(op)
        self.notifier.publish("queue")
        out: list[TaskRun] = []
        taken: set[str] = set()  # an id twice in one batch: the second gets the first
        for run, c in zip(runs, cols, strict=True):
            if c.id in inserted and c.id not in taken:
                taken.add(c.id)
                out.append(run)
                continue
            found = existing.get(("id", c.id))
            if found is None and c.dedup_key:
                found = existing.get(("dedup", c.dedup_key))
            out.append(run if found is None else found)  # None: purged in between
        return out

    async def claim(
        self,
        worker: str,
        queues: Sequence[str] | None,
        limit: int,
        lease_seconds: float,
        now: float,
        *,
        rate_limits: Mapping[str, RateLimit] | None = None,
    ) -> list[Lease]:
        """Lease up to `limit` due runs, by priority then FIFO, in one statement."""
        if limit <= 0:
            return []
        expires = now + lease_seconds
        queue_list = None if queues is None else list(queues)

        # Lease tokens are this claim's random prefix + the run id, the prefix made here: a retry
        # after a lost reply finds the runs the first attempt took (instead of stranding them
        # until their leases expire).
        token = secrets.token_hex(8)
        retry = False

        async def op(conn: Connection) -> list[Record]:
            nonlocal retry
            rows: list[Record] = []
            if retry:
                rows = await conn.fetch(self._q["claimed_by"], token)
            retry = True
            if not rows:
                rows = await conn.fetch(
                    self._q["claim"], now, queue_list, limit, worker, expires, _iso(now), token,
                    limits,
                )  # fmt: skip
            return rows

        limits = limits_json(rate_limits)
        everything = await self._run(op)
        rows = sorted(
            (r for r in everything if r["id"] is not None),
            key=lambda r: (r["priority_rank"], r["due"], r["id"]),
        )
        leases, unreadable = claimed(
            ((r["id"], r["lease_token"], _record(r)) for r in rows), expires, now
        )
        if unreadable:
            await self.finish(unreadable)
        out = Claimed(leases)
        out.retry_at = next((r["retry_at"] for r in everything if r["id"] is None), None)
        out.taken = len(leases) + len(unreadable)
        return out

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        """Extend held leases and their runs' slots, store progress; one statement."""
        if not beats:
            return []
        expires = now + lease_seconds
        rows = (
            (b.lease.run.id, b.lease.token, b.progress is not None, b.progress, b.progress_note)
            for b in beats
        )
        args = _arrays(rows, 5)

        async def op(conn: Connection) -> dict[str, bool]:
            found = await conn.fetch(self._q["heartbeat"], *args, expires)
            return {r["lease"]: bool(r["cancel_requested"]) for r in found}

        held = await self._run(op)  # "id:token" of each lease still held -> cancel requested
        replies = []
        for beat in beats:
            cancel = held.get(_lease_key(beat.lease))
            if cancel is None:
                replies.append(BeatReply(False))
            else:
                beat.lease.expires = expires
                replies.append(BeatReply(True, cancel))
        return replies

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        """Write the new records whose leases are held (fenced); one statement."""
        if not items:
            return []
        rows = []
        for lease, new in items:
            c = _Columns.of(new)
            rows.append(
                (c.id, lease.token, c.state, c.queue, c.priority_rank, c.due, c.execute_after,
                 c.worker, c.parent_id, c.root_run_id, c.created, c.ended, new.is_done, c.data)
            )  # fmt: skip
        args = _arrays(rows, 14)
        retry = False

        async def op(conn: Connection) -> set[str]:
            nonlocal retry
            attempt_is_retry, retry = retry, True
            row = await conn.fetchrow(self._q["finish"], *args, attempt_is_retry, self.channel)
            return set(row["finished"] or ())

        finished = await self._run(op)  # "id:token" of each lease that was still held
        results = []
        requeued = False
        for lease, new in items:
            ok = _lease_key(lease) in finished
            results.append(ok)
            if ok:
                requeued = requeued or new.state is TaskState.queued
                self.notifier.publish_run(new.id)
        if requeued:
            self.notifier.publish("queue")
        return results

    async def reclaim(self, now: float) -> list[TaskRun]:
        """Requeue runs whose lease expired before `now`, recording an interrupted attempt."""

        async def op(conn: Connection) -> list[Record]:
            rows: list[Record] = await conn.fetch(self._q["reclaim"], now, _iso(now), self.channel)
            return rows

        # A retry after a lost reply returns only what it requeued itself; the rest is queued.
        rows = await self._run(op)
        # an unreadable record stays queued: the claim that takes it fails it
        out = [_load_or_stand_in(r) for r in rows]
        out = [run for run in out if run.state is TaskState.queued]
        for run in out:
            self.notifier.publish_run(run.id)
        if out:
            self.notifier.publish("queue")
        return out

    # -- records ----------------------------------------------------------------------------
    async def save(self, run: TaskRun) -> None:
        """Insert or replace a record; the last run saved active holds its dedup key."""
        await self._save(run, None)

    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        """Insert or replace a running record under a fresh lease."""
        token, expires = secrets.token_hex(8), now + lease_seconds
        await self._save(run, (token, expires))
        return Lease(run.record(), token, expires)

    async def _save(self, run: TaskRun, lease: tuple[str, float] | None) -> None:
        c = _Columns.of(run)

        takes_key = bool(c.dedup_key) and run.state in ACTIVE_STATES

        async def op(conn: Connection) -> None:
            if not takes_key and lease is None:
                await conn.execute(self._q["save"], *_enqueue_row(c), self.channel)
                return
            async with conn.transaction():
                if takes_key:
                    await conn.execute(self._q["release_dedup"], c.dedup_key, c.id)
                await conn.execute(self._q["save"], *_enqueue_row(c), self.channel)
                if lease is not None:
                    await conn.execute(self._q["hold"], c.id, *lease)

        await self._run(op)
        self.notifier.publish_run(run.id)
        if run.state is TaskState.queued:
            self.notifier.publish("queue")

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        """Every record saved in one transaction, the statements pipelined."""
        columns = [_Columns.of(run) for run in runs]
        keys = [
            (c.dedup_key, c.id)
            for c, run in zip(columns, runs, strict=True)
            if c.dedup_key and run.state in ACTIVE_STATES
        ]

        async def op(conn: Connection) -> None:
            async with conn.transaction():
                if keys:
                    await conn.executemany(self._q["release_dedup"], keys)
                await conn.executemany(
                    self._q["save"], [(*_enqueue_row(c), self.channel) for c in columns]
                )

        await self._run(op)
        for run in runs:
            self.notifier.publish_run(run.id)
        if any(run.state is TaskState.queued for run in runs):
            self.notifier.publish("queue")

    async def get(self, run_id: str) -> TaskRun | None:
        """One run, or None."""
        row = await self._run(lambda conn: conn.fetchrow(self._q["get"], run_id))
        return None if row is None else _load(row)

    async def query(self, q: RunQuery) -> list[TaskRun]:
        """Runs matching `q`, newest first."""
        sql, args = _query_sql(q)
        rows: list[Record] = await self._run(lambda conn: conn.fetch(sql, *args))
        return [_load_or_stand_in(r) for r in rows]

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        """Queued runs by priority."""
        return queued_by_priority(await self.counts(), queue)

    async def counts(self) -> list[RunCount]:
        """The counters the triggers keep, shards summed."""
        rows: list[Record] = await self._run(lambda conn: conn.fetch(self._q["counts"]))
        by_rank = {p.rank: p for p in TaskPriority}
        return [
            RunCount(
                r["task"], r["queue"], TaskState(r["state"]), by_rank[r["priority_rank"]], r["n"]
            )
            for r in rows
        ]

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        """Abort a queued/init run; flag a running one for its worker."""
        row: Record | None = await self._run(
            lambda conn: conn.fetchrow(
                self._q["request_cancel"], run_id, now, _iso(now), self.channel
            )
        )
        if row is None:
            return None
        self.notifier.publish_run(run_id)
        return _load(row)

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete finished runs that ended before `before`, with their families' finished
        runs and run logs."""
        args = (before, task, list(skip_tasks), state.value if state else None, limit)
        # A retry after a lost reply counts only what it deleted itself.
        count: int = await self._run(lambda conn: conn.fetchval(self._q["purge"], *args))
        return count

    # -- coordination -----------------------------------------------------------------------
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        """Take one of `limit` slots of `name` (idempotent per holder)."""

        async def op(conn: Connection) -> bool:
            async with conn.transaction():
                await conn.execute(self._q["slot_lock"], f"taskloom:slot:{self.schema}:{name}")
                got = await conn.fetchval(self._q["acquire_slot"], name, holder, now, limit, ttl)
                return bool(got)

        return await self._run(op)

    async def release_slot(self, name: str, holder: str) -> None:
        """Give the slot back."""
        await self._run(lambda conn: conn.execute(self._q["release_slot"], name, holder))

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        """Take or renew a lock expiring after `ttl`."""
        got = await self._run(
            lambda conn: conn.fetchval(self._q["acquire_lock"], name, holder, now, ttl)
        )
        return bool(got)

    async def release_lock(self, name: str, holder: str) -> None:
        """Release the lock if `holder` has it."""
        await self._run(lambda conn: conn.execute(self._q["release_lock"], name, holder))

    async def kv_get(self, key: str, now: float) -> bytes | None:
        """A stored value that has not expired."""
        value: bytes | None = await self._run(
            lambda conn: conn.fetchval(self._q["kv_get"], key, now)
        )
        return value

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Store a value, expiring after `ttl` seconds if given."""
        expires = None if ttl is None else now + ttl
        await self._run(lambda conn: conn.execute(self._q["kv_set"], key, value, expires))

    async def kv_delete(self, key: str) -> None:
        """Forget a value."""
        await self._run(lambda conn: conn.execute(self._q["kv_delete"], key))

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        """Record that a worker is alive."""
        data = orjson.dumps(info).decode()
        await self._run(
            lambda conn: conn.execute(self._q["worker_beat"], worker, now, now + ttl, data)
        )

    async def worker_leave(self, worker: str) -> None:
        """Forget a worker that stopped cleanly."""
        await self._run(lambda conn: conn.execute(self._q["worker_leave"], worker))

    async def workers(self, now: float) -> list[WorkerInfo]:
        """Workers whose last beat has not expired."""
        rows: list[Record] = await self._run(lambda conn: conn.fetch(self._q["workers"], now))
        return [WorkerInfo(r["worker"], r["last_seen"], orjson.loads(r["info"])) for r in rows]


async def _release(pool: Any, conn: Connection) -> None:
    try:
        await pool.release(conn)
    except Exception as exc:
        # The pool drops a broken connection itself; the call's outcome stands.
        if not _unavailable(exc):
            log.warning("releasing a PostgreSQL connection failed", exc_info=True)


def _set_event(event: asyncio.Event, _conn: Connection) -> None:
    event.set()


async def _close_quietly(conn: Connection) -> None:
    try:
        await conn.close(timeout=1.0)
    except Exception:  # closing a dead connection: dropping the socket is all that is left
        conn.terminate()


def _lease_key(lease: Lease) -> str:
    return f"{lease.run.id}:{lease.token}"


def _enqueue_row(c: _Columns) -> tuple[Any, ...]:
    return (
        c.id, c.task, c.state, c.queue, c.priority_rank, c.due, c.execute_after, c.dedup_key,
        c.worker, c.parent_id, c.root_run_id, c.created, c.ended, c.data,
    )  # fmt: skip


def _query_sql(q: RunQuery) -> tuple[str, list[Any]]:
    """SELECT for a RunQuery: only the filters it sets, newest first."""
    where: list[str] = []
    args: list[Any] = []

    def add(condition: str, value: Any) -> None:
        args.append(value)
        where.append(condition.replace("?", f"${len(args)}"))

    if q.task is not None:
        add("task = ?", q.task)
    if q.state is not None:
        add("state = ?", q.state.value)
    if q.queue is not None:
        add("queue = ?", q.queue)
    if q.parent_id is not None:
        add("parent_id = ?", q.parent_id)
    if q.root_run_id is not None:  # the root itself keeps its column NULL (runs_root_idx)
        add("(root_run_id = ? OR id = ?)", q.root_run_id)
    if q.cursor is not None:
        add("id < ?", q.cursor)
    if q.since is not None:
        add("created >= ?", q.since.timestamp())
    if q.before is not None:
        add("created < ?", q.before.timestamp())
    if q.tags:  # the predicate of runs_tags_idx, which holds tagged runs only
        add("tags @> ?::text[] AND tags <> '{}'::text[]", list(q.tags))
    args.append(q.limit)
    sql = "SELECT id, task, queue, priority_rank, created, ended, data FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return f"{sql} ORDER BY id DESC LIMIT ${len(args)}", args
