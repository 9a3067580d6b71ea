"""The embedded SQLite store: one file in WAL mode, shared by every process that opens it.

Every call runs on one thread owned by the store, on one connection opened there: the event
loop never blocks on disk, and sqlite3's same-thread rule holds. Every write starts with
`BEGIN IMMEDIATE`, which takes the file's single write lock up front (waiting up to
`busy_timeout`), so a claim, finish or reclaim is atomic against other processes and no
transaction can fail half way while upgrading a read lock. Other processes on the same file
are woken over local datagram sockets (`wakeups.py`); the poll fallback above the store covers
a lost wake-up.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from ..errors import ConfigError, CorruptRecordError, StoreUnavailableError
from ..ratelimit import RateLimit
from ..run import Attempt, TaskPriority, TaskRun, TaskState
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
from .gate import StartGate
from .records import claimed, decode_or_stand_in, decode_run, encode_run, unreadable_run
from .sqlite_control import (
    SQLiteControl,
    claim_gated,
    paused_filter,
    queue_limits,
    read_settings,
    window_loader,
)  # fmt: skip
from .wakeups import PeerNotifier, wake_folder

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
# Reads through a memory map instead of a read() per page outside SQLite's small page cache:
# at a million runs the claim and finish B-trees no longer fit that cache, and the drain fell
# to about 0.75-0.9x of a small store's; mapped, it holds (docs/concepts.md, "Data at scale").
# Only the first MMAP_BYTES of the file are mapped; writes still go through write().
MMAP_BYTES = 1 << 30
# rows the loop's connection writes between two WAL checkpoints (~1 KB of WAL each): counted in
# rows, not transactions, so bulk enqueues cannot grow the WAL unchecked (at 187 MB, every
# read consults the WAL index and a drain ran at 0.4x)
CHECKPOINT_ROWS = 2000
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
_BUSY = object()
_MEMORY = ":memory:"
_PRIORITY_BY_RANK = {p.rank: p for p in TaskPriority}
_DONE_SQL = ", ".join(f"'{s.value}'" for s in TaskState if s.is_done)

# -- schema and migrations --------------------------------------------------------------------

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    applied REAL NOT NULL
)"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered file of `sql/sqlite/migrations`."""

    version: int
    name: str
    sql: str


def _sql_dir() -> Traversable:
    return resources.files("taskloom.store") / "sql" / "sqlite"


def load_schema() -> str:
    """The full current schema (schema.sql), as a script."""
    return (_sql_dir() / "schema.sql").read_text(encoding="utf-8")


@functools.cache
def load_migrations() -> tuple[Migration, ...]:
    """Every migration, in order; their numbers must run 1..N without gaps."""
    found = []
    for entry in (_sql_dir() / "migrations").iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], sql))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise ConfigError(f"sqlite migrations are not numbered 1..N: {[m.version for m in found]}")
    return tuple(found)


def _statements(script: str) -> Iterator[str]:
    # executescript() would COMMIT the migration's transaction first, so run one statement
    # at a time; complete_statement() knows about strings, comments and triggers.
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer
            buffer = ""
    if buffer.strip():
        yield buffer  # trailing comments are a no-op; anything else fails loudly


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def apply_migrations(conn: sqlite3.Connection, where: str = "database") -> list[int]:
    """Apply pending migrations in one `BEGIN IMMEDIATE` transaction; return their versions.

    Safe when several processes open a new file at once: the write lock serialises them and
    each re-reads the applied versions under it. Up to date costs one read, no lock.
    """
    steps = load_migrations()
    latest = steps[-1].version if steps else 0
    current = _schema_version(conn)
    if current > latest:
        raise ConfigError(
            f"{where} has schema version {current}, newer than this taskloom knows ({latest}); "
            "upgrade taskloom"
        )
    if current == latest:
        return []
    applied_now = []
    with _immediate(conn):
        conn.execute(_VERSION_TABLE)
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        for step in steps:
            if step.version in applied:
                continue
            for statement in _statements(step.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
            applied_now.append(step.version)
    return applied_now


# -- driver plumbing ---------------------------------------------------------------------------


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """Driver errors meaning "this database cannot be used" become StoreUnavailableError."""
    try:
        yield
    except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise  # a bug in this module, not an unavailable store: keep its own type
    except sqlite3.Error as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise StoreUnavailableError(f"sqlite store {where}: {message}") from exc


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding the file's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise


def _path_of(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if rest in (_MEMORY, f"/{_MEMORY}"):
        return _MEMORY
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
        raise ConfigError(
            f"bad sqlite URL {url!r}: use sqlite:///relative.db, sqlite:////absolute/path.db "
            "or sqlite://:memory:"
        )
    return rest[1:]


# -- run rows ----------------------------------------------------------------------------------

_COLUMNS = (
    "task", "state", "queue", "priority_rank", "due", "execute_after", "dedup_key", "worker",
    "parent_id", "root_run_id", "created", "ended", "data", "tags",
)  # fmt: skip
_SET_COLUMNS = ", ".join(f"{c} = ?" for c in _COLUMNS)
_INSERT = (
    f"INSERT INTO runs (id, {', '.join(_COLUMNS)}) VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})"
)
_INSERT_NEW = f"{_INSERT} ON CONFLICT (id) DO NOTHING"
_UPSERT = (
    f"{_INSERT} ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS)
    + ", lease_token = NULL, lease_expires = NULL"
)
_COUNT_INSERTED = (
    "INSERT INTO run_counts (task, queue, state, priority_rank, n) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO UPDATE SET n = n + excluded.n"
)
_TAG_INSERTED = (
    "INSERT OR IGNORE INTO run_tags (tag, id) SELECT value, ? FROM json_each(?) WHERE type = 'text'"
)
_REWRITE = f"UPDATE runs SET {_SET_COLUMNS} WHERE id = ?"  # keeps the lease
_RELEASE = f"UPDATE runs SET {_SET_COLUMNS}, lease_token = NULL, lease_expires = NULL WHERE id = ?"
_FINISH = f"{_RELEASE} AND lease_token = ? AND state = 'running'"
# A record that is not JSON must fail alone, not every statement touching it (json_valid).
_HELD = """SELECT id, lease_token,
    CASE WHEN json_valid(data) THEN json_extract(data, '$.cancel_requested') END FROM runs
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running' AND lease_token IS NOT NULL"""
_BEAT = """UPDATE runs SET lease_expires = ?1,
    data = CASE WHEN ?2 IS NULL OR NOT json_valid(data) THEN data
           ELSE json_set(data, '$.progress', ?2, '$.progress_note', ?3) END
WHERE id = ?4 AND lease_token = ?5 AND state = 'running'"""
# One statement picks and marks the runs, so two claimers (threads or processes) never share
# one. RETURNING order is unspecified: claim() sorts. Tokens come from SQLite, one per row.
# INDEXED BY pins the partial claim indexes: without statistics the planner prefers
# runs_state and sorts every queued run on each claim (and it fails loudly if an index is
# renamed instead of silently slowing down).
_CLAIM = """UPDATE runs SET
    state = 'running', worker = :worker, lease_token = lower(hex(randomblob(8))),
    lease_expires = :expires, created = coalesce(created, :now),
    data = CASE WHEN NOT json_valid(data) THEN data
           ELSE json_set(data, '$.state', 'running', '$.worker', :worker,
                         '$.start', coalesce(json_extract(data, '$.start'), :start)) END
WHERE id IN (
    SELECT id FROM runs INDEXED BY {index}
    WHERE state = 'queued' AND (execute_after IS NULL OR execute_after <= :now){queues}
    ORDER BY priority_rank, due, id LIMIT :limit
)
RETURNING priority_rank, due, id, lease_token, data"""
_CLAIM_ANY = _CLAIM.format(index="runs_claim_any", queues="")
_CLAIM_ONE = _CLAIM.format(index="runs_claim", queues=" AND queue = :queue")  # no sort at all
_CLAIM_SOME = _CLAIM.format(
    index="runs_claim", queues=" AND queue IN (SELECT value FROM json_each(:queues))"
)
# Queue control (sqlite_control.py): the same claims skipping paused queues, and the two
# halves of a claim through the start gate (pick candidates, then mark the admitted ones).
_CLAIM_SET, _, _ = _CLAIM.partition("WHERE id IN (")
_CLAIM_IDS = (
    _CLAIM_SET
    + "WHERE id IN (SELECT value FROM json_each(:ids))\nRETURNING"
    + (_CLAIM.rpartition("RETURNING")[2])
)
_PICK = """SELECT id, task, queue FROM runs INDEXED BY {index}
WHERE state = 'queued' AND (execute_after IS NULL OR execute_after <= :now){queues}
ORDER BY priority_rank, due, id LIMIT :limit"""


_COUNTS = "SELECT task, queue, state, priority_rank, n FROM run_counts WHERE n > 0"


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _inserted(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Count and tag rows just inserted into `runs`, in the inserting transaction: what insert
    triggers would do, which made every insert about 1.7 times dearer (migration 0008)."""
    # rows are (id, task, state, queue, priority_rank, ...): see _COLUMNS
    counts: Counter[tuple[Any, ...]] = Counter((r[1], r[3], r[2], r[4]) for r in rows)
    conn.executemany(_COUNT_INSERTED, [(*key, n) for key, n in counts.items()])
    tagged = [(row[0], row[-1]) for row in rows if row[-1] is not None]
    if tagged:
        conn.executemany(_TAG_INSERTED, tagged)


def _upsert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write whole records, dropping any lease: rows whose id exists are replaced (their
    update triggers count them), the others inserted and counted here."""
    if len(rows) == 1:
        seen = {i for (i,) in conn.execute("SELECT id FROM runs WHERE id = ?", (rows[0][0],))}
    else:
        ids = _json([row[0] for row in rows])
        query = "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?))"
        seen = {i for (i,) in conn.execute(query, (ids,))}
    new, replacing = [], []
    for row in rows:  # an id twice in one call: inserted (and counted) first, then replaced
        if row[0] in seen:
            replacing.append(row)
        else:
            seen.add(row[0])
            new.append(row)
    if new:
        conn.executemany(_INSERT, new)
        _inserted(conn, new)
    if replacing:
        conn.executemany(_UPSERT, replacing)


def _record(run: TaskRun) -> tuple[Any, ...]:
    """Column values of `run` in `_COLUMNS` order (the id is bound separately)."""
    return (
        run.task, run.state.value, run.queue, run.priority.rank,
        ts(run.execute_after) or ts(run.queued) or 0.0, ts(run.execute_after), run.dedup_key,
        run.worker, run.parent_id, None if run.root_run_id == run.id else run.root_run_id,
        ts(run.queued or run.start), ts(run.end),
        encode_run(run), _json(run.tags) if run.tags else None,
    )  # fmt: skip


def _load(data: str, run_id: str) -> TaskRun:
    return decode_run(data, run_id)


def _iso(seconds: float) -> str:
    # the form pydantic writes, so records edited in SQL look like the rest
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _held(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, tuple[str, bool]]:
    """Run id -> (lease token, cancel requested) for the given runs that hold a lease."""
    rows = conn.execute(_HELD, (_json(run_ids),))
    return {run_id: (token, bool(cancel)) for run_id, token, cancel in rows}


def query_sql(q: RunQuery) -> tuple[str, list[Any]]:
    """SELECT for a RunQuery: only the filters it sets, newest first. With tags, the first
    tag's rows of `run_tags` lead, walked (tag, id) newest first."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("task", q.task), ("state", q.state), ("queue", q.queue),
        ("parent_id", q.parent_id),
    ):  # fmt: skip
        if value is not None:
            clauses.append(f"runs.{column} = ?")
            params.append(str(value))
    if q.root_run_id is not None:  # the root itself keeps its column NULL (see runs_root)
        clauses.append("(runs.root_run_id = ? OR runs.id = ?)")
        params += [q.root_run_id, q.root_run_id]
    order = "runs.id"
    source = "runs"
    if q.tags:
        source = "run_tags AS t JOIN runs ON runs.id = t.id"
        order = "t.id"
        clauses.append("t.tag = ?")
        params.append(q.tags[0])
        for tag in q.tags[1:]:
            clauses.append("EXISTS (SELECT 1 FROM run_tags WHERE tag = ? AND id = runs.id)")
            params.append(tag)
    for clause, bound in (
        (f"{order} < ?", q.cursor),
        ("runs.created >= ?", ts(q.since)),
        ("runs.created < ?", ts(q.before)),
    ):
        if bound is not None:
            clauses.append(clause)
            params.append(bound)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(q.limit)
    return f"SELECT runs.id, runs.data FROM {source} {where} ORDER BY {order} DESC LIMIT ?", params


# -- the store ---------------------------------------------------------------------------------


class SQLiteStore(SQLiteControl):
    """Store on one SQLite file (`sqlite:///path.db`) or a private in-memory db."""

    parallel_writes = False  # one writer: parts would only queue behind each other

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path_of(url)
        # other processes on the same file are woken over local sockets (see wakeups.py)
        self.notifier: Notifier = (
            Notifier() if self.path == _MEMORY else PeerNotifier(wake_folder(self.path))
        )
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        # A second connection on the event loop's thread for a producer's enqueue and get: it
        # never waits for a lock (busy_timeout 0), so the loop blocks only for the statement
        # itself; when the file is busy the call takes the thread as before.
        self._here: sqlite3.Connection | None = None
        self._here_thread = 0
        self._here_checkpointed = 0  # total_changes of the loop connection at the last checkpoint
        self._migrated: list[int] = []  # versions the last connect applied

    # -- lifecycle ---------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the file (creating its directory) and apply pending migrations."""
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskloom-sqlite")
        self._executor = executor
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._open)
        except BaseException:
            self._executor = None
            executor.shutdown(wait=False)
            raise
        if self.path != _MEMORY:  # a second in-memory connection would be another database
            self._here = self._open_here()
            self._here_thread = threading.get_ident()
        if isinstance(self.notifier, PeerNotifier):
            self.notifier.start()

    def _open_here(self) -> sqlite3.Connection:
        with _translated(self.path):
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            # checkpoints (an fsync) run on the store's thread, never on the loop: see _here_call
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _open(self) -> None:
        if sqlite3.sqlite_version_info < (3, 35, 0):
            raise ConfigError(f"taskloom needs SQLite >= 3.35, Python has {sqlite3.sqlite_version}")
        if self.path != _MEMORY:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailableError(
                    f"sqlite store {self.path}: cannot create its directory: {exc}"
                ) from exc
        with _translated(self.path):
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")  # first read: a non-db file fails here
                conn.execute("PRAGMA synchronous = NORMAL")
                if self.path != _MEMORY:
                    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
                self._migrated = apply_migrations(conn, self.path)
            except BaseException:
                conn.close()
                raise
        self._conn = conn

    async def migrate(self) -> list[str]:
        """Connect, which applies pending migrations; return the names of those it applied."""
        await self.connect()
        names = {m.version: f"{m.version:04d}_{m.name}" for m in load_migrations()}
        return [names[v] for v in self._migrated]

    async def close(self) -> None:
        """Close the connection and stop the thread (idempotent)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if isinstance(self.notifier, PeerNotifier):
            self.notifier.stop()
        here, self._here = self._here, None
        if here is not None:
            here.close()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_conn)
        finally:
            executor.shutdown(wait=False)

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with _translated(self.path):
                conn.close()

    async def drop(self) -> None:
        """Close, then delete the database file and its WAL/shared-memory files (tests)."""
        await self.close()
        if self.path != _MEMORY:
            await asyncio.to_thread(self._delete_files)

    def _delete_files(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(self.path + suffix).unlink(missing_ok=True)

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the database answers."""
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` on the store's thread; sqlite errors arrive translated."""
        executor = self._executor
        if executor is None:
            raise StoreUnavailableError(f"sqlite store {self.path} is not connected")
        return await asyncio.get_running_loop().run_in_executor(executor, self._call, work)

    async def _run_here(self, work: Callable[[sqlite3.Connection], T], *, writes: bool) -> T:
        """`work` on the loop's own connection when the file is free, else on the thread."""
        conn = self._here
        if conn is not None and threading.get_ident() == self._here_thread:
            try:
                with _translated(self.path):
                    out: T | object
                    try:
                        out = work(conn)
                    except sqlite3.OperationalError as exc:
                        if exc.sqlite_errorcode & 0xFF not in _BUSY_CODES:  # primary code
                            raise
                        out = _BUSY  # another connection holds the lock: wait on the thread
            finally:
                if conn.in_transaction:
                    conn.rollback()
            if out is not _BUSY:
                if writes and conn.total_changes - self._here_checkpointed >= CHECKPOINT_ROWS:
                    self._here_checkpointed = conn.total_changes
                    self._checkpoint_soon()
                await asyncio.sleep(0)  # as fair to the loop's other tasks as a thread hop
                return cast(T, out)
        return await self._run(work)

    def _checkpoint_soon(self) -> None:
        executor = self._executor
        if executor is not None:  # not awaited: it only keeps the WAL file from growing
            executor.submit(self._call, lambda c: c.execute("PRAGMA wal_checkpoint(PASSIVE)"))

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreUnavailableError(f"sqlite store {self.path} is closed")
        with _translated(self.path):
            return work(conn)

    # -- queue -------------------------------------------------------------------------------
    async def enqueue(self, runs: Sequence[TaskRun]) -> list[TaskRun]:
        batch = list(runs)

        def work(conn: sqlite3.Connection) -> list[TaskRun]:
            rows = [(run.id, *_record(run)) for run in batch]  # before the lock: keep it short
            if len(batch) == 1 and not batch[0].dedup_key:  # the per-call path: one statement
                with _immediate(conn):
                    if conn.execute(_INSERT_NEW, rows[0]).rowcount == 1:
                        _inserted(conn, rows)
                        return list(batch)
                    found = conn.execute("SELECT data FROM runs WHERE id = ?", (batch[0].id,))
                    return [decode_or_stand_in(found.fetchone()[0])]
            keys = sorted({run.dedup_key for run in batch if run.dedup_key})
            out: list[TaskRun] = []
            with _immediate(conn):
                ids = _json([run.id for run in batch])
                by_id: dict[str, str] = dict(
                    conn.execute(
                        "SELECT id, data FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                        (ids,),
                    )
                )
                by_key: dict[str, str] = {}
                if keys:
                    by_key = dict(
                        conn.execute(
                            "SELECT dedup_key, data FROM runs INDEXED BY runs_dedup"
                            " WHERE dedup_key IN (SELECT value FROM json_each(?))"
                            " AND state IN ('init', 'queued', 'running') ORDER BY id",
                            (_json(keys),),
                        )
                    )
                new_rows = []
                for run, row in zip(batch, rows, strict=True):
                    existing = by_id.get(run.id)
                    if existing is None and run.dedup_key:
                        existing = by_key.get(run.dedup_key)
                    if existing is not None:
                        out.append(decode_or_stand_in(existing))
                        continue
                    new_rows.append(row)
                    by_id[run.id] = row[-1]  # a later duplicate in this batch sees this one
                    if run.dedup_key and run.state in ACTIVE_STATES:
                        by_key[run.dedup_key] = row[-1]
                    out.append(run)
                conn.executemany(_INSERT, new_rows)
                _inserted(conn, new_rows)
            return out

        out = await self._run_here(work, writes=True) if batch else []
        self.notifier.publish("queue")
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
        if limit <= 0:
            return []
        expires = now + lease_seconds
        params: dict[str, Any] = {
            "worker": worker, "expires": expires, "now": now, "start": _iso(now), "limit": limit,
        }  # fmt: skip
        if queues is None:
            sql, index, where = _CLAIM_ANY, "runs_claim_any", ""
        elif len(queues) == 1:
            sql, params["queue"] = _CLAIM_ONE, queues[0]
            index, where = "runs_claim", " AND queue = :queue"
        else:
            sql, params["queues"] = _CLAIM_SOME, _json(list(queues))
            index, where = "runs_claim", " AND queue IN (SELECT value FROM json_each(:queues))"

        def work(conn: sqlite3.Connection) -> tuple[Claimed, list[tuple[Lease, TaskRun]]]:
            with _immediate(conn):
                settings = read_settings(conn)
                paused = [q for q, s in settings.items() if s.paused]
                params["paused"] = _json(paused)
                gate = StartGate(now, rate_limits, queue_limits(settings), window_loader(conn))
                if gate.active:
                    pick = _PICK.format(index=index, queues=where + paused_filter(paused))
                    rows = claim_gated(conn, pick, _CLAIM_IDS, params, limit, gate)
                elif paused:
                    filtered = _CLAIM.format(index=index, queues=where + paused_filter(paused))
                    rows = conn.execute(filtered, params).fetchall()
                else:
                    rows = conn.execute(sql, params).fetchall()
            rows.sort(key=lambda row: (row[0], row[1], row[2]))
            leases, unreadable = claimed(
                ((i, token, data) for _r, _d, i, token, data in rows), expires, now
            )
            out = Claimed(leases)
            out.retry_at = gate.retry_at
            out.taken = len(leases) + len(unreadable)
            return out, unreadable

        leases, unreadable = await self._run(work)
        if unreadable:
            await self.finish(unreadable)
        return leases

    async def heartbeat(
        self, beats: Sequence[Beat], lease_seconds: float, now: float
    ) -> list[BeatReply]:
        batch = list(beats)
        expires = now + lease_seconds

        def work(conn: sqlite3.Connection) -> list[BeatReply]:
            replies = []
            updates = []
            alive = []
            with _immediate(conn):
                held = _held(conn, [beat.lease.run.id for beat in batch])
                for beat in batch:
                    run_id, token = beat.lease.run.id, beat.lease.token
                    current = held.get(run_id)
                    if current is None or current[0] != token:
                        replies.append(BeatReply(False))
                        continue
                    replies.append(BeatReply(True, current[1]))
                    updates.append((expires, beat.progress, beat.progress_note, run_id, token))
                    alive.append(run_id)
                if updates:
                    conn.executemany(_BEAT, updates)
                    # a slot held by a live run expires with the run's lease, not before
                    conn.execute(
                        "UPDATE slots SET expires = ?"
                        " WHERE holder IN (SELECT value FROM json_each(?))",
                        (expires, _json(alive)),
                    )
            return replies

        replies = await self._run(work) if batch else []
        for beat, reply in zip(batch, replies, strict=True):
            if reply.alive:
                beat.lease.expires = expires
        return replies

    async def finish(self, items: Sequence[tuple[Lease, TaskRun]]) -> list[bool]:
        batch = list(items)

        def work(conn: sqlite3.Connection) -> list[bool]:
            # A finished run never keeps a cancel request; a requeued one keeps the stored one,
            # known only under the lock, so rows are built assuming the caller's flag is right.
            records = []
            for lease, new in batch:
                if new.id != lease.run.id:
                    raise ValueError(f"finish: record {new.id} does not match lease {lease.run.id}")
                if new.is_done and new.cancel_requested:
                    new = new.model_copy(update={"cancel_requested": False})
                records.append((new, _record(new)))
            ok = []
            rows = []
            with _immediate(conn):
                held = _held(conn, [new.id for new, _ in records])
                for (lease, _), (new, record) in zip(batch, records, strict=True):
                    current = held.get(new.id)
                    if current is None or current[0] != lease.token:
                        ok.append(False)
                        continue
                    del held[new.id]  # the lease is released: a second finish in the batch fails
                    if not new.is_done and new.cancel_requested != current[1]:
                        record = _record(new.model_copy(update={"cancel_requested": current[1]}))
                    rows.append((*record, new.id, lease.token))
                    ok.append(True)
                conn.executemany(_FINISH, rows)
            return ok

        ok = await self._run(work) if batch else []
        requeued = False
        for (_, new), done in zip(batch, ok, strict=True):
            if done:
                requeued = requeued or new.state is TaskState.queued
                self.notifier.publish_run(new.id)
        if requeued:
            self.notifier.publish("queue")
        return ok

    async def reclaim(self, now: float) -> list[TaskRun]:
        def work(conn: sqlite3.Connection) -> list[TaskRun]:
            with _immediate(conn):
                rows = conn.execute(
                    "SELECT id, data FROM runs INDEXED BY runs_lease"
                    " WHERE lease_token IS NOT NULL AND lease_expires < ?"
                    " AND state = 'running' ORDER BY lease_expires, id",
                    (now,),
                ).fetchall()
                runs, unreadable = [], []
                for run_id, data in rows:
                    try:
                        runs.append(_load(data, run_id))
                    except CorruptRecordError as exc:  # fails here, as a claim would fail it
                        unreadable.append(unreadable_run(exc, data, now))
                for run in runs:
                    run.attempts.append(
                        Attempt(
                            attempt=run.retry_attempt, state=TaskState.interrupted,
                            start=run.start, end=dt(now), worker=run.worker,
                            error={"type": "LeaseExpired", "message": "worker lost its lease"},
                        )
                    )  # fmt: skip
                    run.state = TaskState.queued
                    run.worker = None
                conn.executemany(
                    _RELEASE, [(*_record(run), run.id) for run in (*runs, *unreadable)]
                )
            return runs

        runs = await self._run(work)
        for run in runs:
            self.notifier.publish_run(run.id)
        if runs:
            self.notifier.publish("queue")
        return runs

    # -- records -----------------------------------------------------------------------------
    async def save_leased(self, run: TaskRun, lease_seconds: float, now: float) -> Lease:
        token, expires = secrets.token_hex(8), now + lease_seconds

        def work(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                _upsert(conn, [(run.id, *_record(run))])
                conn.execute(
                    "UPDATE runs SET lease_token = ?, lease_expires = ? WHERE id = ?",
                    (token, expires, run.id),
                )

        await self._run(work)
        self.notifier.publish_run(run.id)
        return Lease(run.record(), token, expires)

    async def save(self, run: TaskRun) -> None:
        def work(conn: sqlite3.Connection) -> None:
            row = (run.id, *_record(run))
            with _immediate(conn):
                _upsert(conn, [row])

        await self._run(work)  # in order with the heartbeats and finishes on the store's thread
        self.notifier.publish_run(run.id)
        if run.state is TaskState.queued:
            self.notifier.publish("queue")

    async def save_many(self, runs: Sequence[TaskRun]) -> None:
        rows = [(run.id, *_record(run)) for run in runs]

        def work(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                _upsert(conn, rows)

        await self._run(work)
        for run in runs:
            self.notifier.publish_run(run.id)
        if any(run.state is TaskState.queued for run in runs):
            self.notifier.publish("queue")

    async def get(self, run_id: str) -> TaskRun | None:
        def work(conn: sqlite3.Connection) -> TaskRun | None:
            row = conn.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
            return None if row is None else _load(row[0], run_id)

        return await self._run_here(work, writes=False)

    async def query(self, q: RunQuery) -> list[TaskRun]:
        sql, params = query_sql(q)

        def work(conn: sqlite3.Connection) -> list[TaskRun]:
            return [decode_or_stand_in(data, i) for i, data in conn.execute(sql, params)]

        return await self._run(work)

    async def queue_length(self, queue: str | None) -> dict[TaskPriority, int]:
        return queued_by_priority(await self.counts(), queue)

    async def counts(self) -> list[RunCount]:
        def work(conn: sqlite3.Connection) -> list[tuple[str, str, str, int, int]]:
            return conn.execute(_COUNTS).fetchall()

        return [
            RunCount(task, queue, TaskState(state), _PRIORITY_BY_RANK[rank], n)
            for task, queue, state, rank, n in await self._run(work)
        ]

    async def request_cancel(self, run_id: str, now: float) -> TaskRun | None:
        def work(conn: sqlite3.Connection) -> TaskRun | None:
            with _immediate(conn):
                row = conn.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
                if row is None:
                    return None
                run = _load(row[0], run_id)
                if run.state in (TaskState.init, TaskState.queued):
                    run.state = TaskState.aborted
                    run.end = dt(now)
                    run.error = {"type": "CancelledRunError", "message": "cancelled before it ran"}
                elif run.state is TaskState.running:
                    run.cancel_requested = True  # the worker learns it from its next heartbeat
                else:
                    return run
                conn.execute(_REWRITE, (*_record(run), run.id))
                return run

        run = await self._run(work)
        if run is not None:
            self.notifier.publish_run(run_id)
        return run

    async def purge(
        self,
        before: float,
        *,
        task: str | None = None,
        skip_tasks: Sequence[str] = (),
        state: TaskState | None = None,
        limit: int | None = None,
    ) -> int:
        sql = (
            "SELECT id, parent_id FROM runs INDEXED BY runs_ended"
            f" WHERE state IN ({_DONE_SQL}) AND ended < ?"
        )
        params: list[Any] = [before]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        if skip_tasks:
            sql += " AND task NOT IN (SELECT value FROM json_each(?))"
            params.append(_json(list(skip_tasks)))
        if state is not None:
            sql += " AND state = ?"
            params.append(state.value)
        sql += " LIMIT ?"
        params.append(-1 if limit is None else limit)

        def work(conn: sqlite3.Connection) -> int:
            with _immediate(conn):
                picked = conn.execute(sql, params).fetchall()
                ids = {run_id for run_id, _ in picked}
                roots = [run_id for run_id, parent in picked if parent is None]
                if roots:  # a purged root takes its finished descendants, whatever their age
                    ids.update(
                        run_id
                        for (run_id,) in conn.execute(
                            "SELECT id FROM runs INDEXED BY runs_root WHERE root_run_id IN"
                            f" (SELECT value FROM json_each(?)) AND state IN ({_DONE_SQL})",
                            (_json(roots),),
                        )
                    )
                gone = _json(sorted(ids))
                conn.execute(
                    "DELETE FROM kv WHERE key IN (SELECT 'runlog:' || value FROM json_each(?))",
                    (gone,),
                )
                cursor = conn.execute(
                    "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))", (gone,)
                )
            return cursor.rowcount

        return await self._run(work)

    # -- coordination ------------------------------------------------------------------------
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl: float, now: float
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                conn.execute("DELETE FROM slots WHERE name = ? AND expires < ?", (name, now))
                holders = {
                    h for (h,) in conn.execute("SELECT holder FROM slots WHERE name = ?", (name,))
                }
                if holder not in holders and len(holders) >= limit:
                    return False
                conn.execute(
                    "INSERT INTO slots (name, holder, expires) VALUES (?, ?, ?)"
                    " ON CONFLICT (name, holder) DO UPDATE SET expires = excluded.expires",
                    (name, holder, now + ttl),
                )
            return True

        return await self._run(work)

    async def release_slot(self, name: str, holder: str) -> None:
        await self._write("DELETE FROM slots WHERE name = ? AND holder = ?", (name, holder))

    async def acquire_lock(self, name: str, holder: str, ttl: float, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _immediate(conn):
                row = conn.execute(
                    "INSERT INTO locks (name, holder, expires) VALUES (?1, ?2, ?3)"
                    " ON CONFLICT (name) DO UPDATE SET holder = ?2, expires = ?3"
                    " WHERE locks.holder = ?2 OR locks.expires < ?4 RETURNING holder",
                    (name, holder, now + ttl, now),
                ).fetchone()
            return row is not None

        return await self._run(work)

    async def release_lock(self, name: str, holder: str) -> None:
        await self._write("DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder))

    async def kv_get(self, key: str, now: float) -> bytes | None:
        def work(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires >= ?)",
                (key, now),
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(work)

    async def kv_set(self, key: str, value: bytes, ttl: float | None, now: float) -> None:
        await self._write(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value, expires = excluded.expires",
            (key, value, None if ttl is None else now + ttl),
        )

    async def kv_delete(self, key: str) -> None:
        await self._write("DELETE FROM kv WHERE key = ?", (key,))

    async def worker_beat(self, worker: str, info: dict[str, Any], ttl: float, now: float) -> None:
        await self._write(
            "INSERT INTO workers (worker, last_seen, expires, info) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (worker) DO UPDATE SET last_seen = excluded.last_seen,"
            " expires = excluded.expires, info = excluded.info",
            (worker, now, now + ttl, _json(info)),
        )

    async def worker_leave(self, worker: str) -> None:
        await self._write("DELETE FROM workers WHERE worker = ?", (worker,))

    async def workers(self, now: float) -> list[WorkerInfo]:
        def work(conn: sqlite3.Connection) -> list[WorkerInfo]:
            rows = conn.execute(
                "SELECT worker, last_seen, info FROM workers WHERE expires >= ? ORDER BY worker",
                (now,),
            )
            return [WorkerInfo(w, seen, orjson.loads(info)) for w, seen, info in rows]

        return await self._run(work)

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        """One write statement in its own transaction."""

        def work(conn: sqlite3.Connection) -> None:
            with _immediate(conn):
                conn.execute(sql, params)

        await self._run(work)
