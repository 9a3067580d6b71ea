"""Repositories: the keyed data a pipeline's tasks read and write.

A repository is an async set of job keys (a `KeySet`, so `And`/`Or`/`Not` from `keysets`
combine them; they are re-exported here); each key holds bytes, read and written through
`open(key, mode)` (blobs) or `info`/`dump` (JSON metadata over the same bytes). Writes are
atomic in every backend: a writer that raises leaves nothing behind, and a reader never sees
half a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import secrets
import tempfile
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .. import serde
from ..errors import ConfigError, StoreUnavailableError, TaskloomError
from .keysets import And, KeySet, KeySetBase, Not, Or

__all__ = [
    "And", "Blob", "FileRepository", "InvalidKeyError", "KeySet", "KeySetBase", "LiveRepository",
    "MemoryRepository", "Not", "Or", "Repository", "RepositoryBase", "StoreRepository",
    "TranslatedRepository", "atomic_file", "check_key", "origin",
]  # fmt: skip

if TYPE_CHECKING:
    from ..manager import TaskManager
    from ..store import Store

Mode = Literal["rb", "wb"]

_KEY = re.compile(r"[^/\\\x00]{1,200}")


class InvalidKeyError(TaskloomError, ValueError):
    """A job key that some repository could not store (empty, a path, or hidden)."""


def check_key(key: str) -> str:
    """Return `key` if every repository can hold it: 1-200 chars, no `/`, `\\`, NUL or
    leading dot (dot names are where file repositories keep their temporary files)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key.startswith("."):
        raise InvalidKeyError(
            f"invalid job key {key!r}: use 1-200 characters, no '/', '\\' or NUL, "
            "not starting with '.'"
        )
    return key


def _check_mode(mode: str) -> None:
    if mode not in ("rb", "wb"):
        raise ConfigError(f"repository blobs open in mode 'rb' or 'wb', not {mode!r}")


# -- blobs --------------------------------------------------------------------------------------
class Blob:
    """An open blob: `read` when opened with "rb", `write` when opened with "wb"."""

    async def read(self, size: int = -1) -> bytes:
        """Read up to `size` bytes (all that is left by default)."""
        raise io.UnsupportedOperation("blob opened for writing")

    async def write(self, data: bytes) -> int:
        """Append bytes; nothing is visible to readers until the `open` block exits cleanly."""
        raise io.UnsupportedOperation("blob opened for reading")


class _Reader(Blob):
    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    async def read(self, size: int = -1) -> bytes:
        return self._source.read(size)


class _Writer(Blob):
    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink

    async def write(self, data: bytes) -> int:
        return self._sink.write(data)


# -- protocols ----------------------------------------------------------------------------------
@runtime_checkable
class Repository(KeySet, Protocol):
    """A key set whose keys hold data: blobs through `open`, JSON metadata through
    `info`/`dump`. Missing keys raise `KeyError`; writes are atomic."""

    def open(self, key: str, mode: Mode = "rb") -> AbstractAsyncContextManager[Blob]:
        """A blob to read ("rb") or to write ("wb", visible only once the block exits)."""
        ...

    async def read(self, key: str) -> bytes:
        """The whole blob at `key`."""
        ...

    async def write(self, key: str, data: bytes) -> None:
        """Replace the blob at `key` atomically."""
        ...

    async def info(self, key: str) -> Any:
        """The JSON metadata stored at `key`."""
        ...

    async def dump(self, key: str, data: Any) -> None:
        """Store JSON metadata at `key` atomically."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key` (no error if it is absent)."""
        ...


# -- shared behaviour ---------------------------------------------------------------------------
class RepositoryBase(KeySetBase):
    """A repository built on `open` and `delete`; metadata is the JSON form of the blob."""

    @abstractmethod
    def open(self, key: str, mode: Mode = "rb") -> AbstractAsyncContextManager[Blob]:
        """A blob to read ("rb") or to write ("wb", visible only once the block exits)."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key` (no error if it is absent)."""

    async def read(self, key: str) -> bytes:
        """The whole blob at `key`."""
        async with self.open(key, "rb") as blob:
            return await blob.read()

    async def write(self, key: str, data: bytes) -> None:
        """Replace the blob at `key` atomically."""
        async with self.open(key, "wb") as blob:
            await blob.write(data)

    async def info(self, key: str) -> Any:
        """The JSON metadata stored at `key`."""
        return serde.loads(await self.read(key))

    async def dump(self, key: str, data: Any) -> None:
        """Store JSON metadata at `key` (encoded before anything is written)."""
        await self.write(key, serde.dumps(data))


# -- memory -------------------------------------------------------------------------------------
class MemoryRepository(RepositoryBase):
    """A repository in this process's memory (tests, scratch data, small pipelines)."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._data: dict[str, bytes] = {}

    async def keys(self) -> AsyncIterator[str]:
        for key in list(self._data):  # a copy: writers may add keys while we iterate
            yield key

    async def snapshot(self) -> frozenset[str]:
        return frozenset(self._data)

    async def contains(self, key: str) -> bool:
        return key in self._data

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        check_key(key)
        _check_mode(mode)
        if mode == "rb":
            try:
                data = self._data[key]
            except KeyError:
                raise KeyError(key) from None
            yield _Reader(io.BytesIO(data))
            return
        buffer = io.BytesIO()
        yield _Writer(buffer)
        self._data[key] = buffer.getvalue()  # reached only if the block did not raise

    async def read(self, key: str) -> bytes:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(key) from None

    async def write(self, key: str, data: bytes) -> None:
        self._data[check_key(key)] = bytes(data)

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)


# -- files --------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_file(target: Path) -> Iterator[IO[bytes]]:
    """Write `target` through a hidden temporary file in the same directory, then fsync and
    `os.replace` it into place. If the block raises, the temporary file is removed and
    `target` is untouched; a crash leaves at most a dot-named `.tmp` file, never a key."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


class FileRepository(RepositoryBase):
    """A directory: one file per key (`<path>/<key><suffix>`), written atomically.

    Dot-named files are never keys, so the temporary files of writes in progress (or of a
    crashed writer) stay invisible. The directory is created on the first write.
    """

    def __init__(self, path: str | os.PathLike[str], *, suffix: str = "", name: str = "") -> None:
        self.path = Path(path)
        self.suffix = suffix
        self.name = name or str(self.path)

    def path_of(self, key: str) -> Path:
        """Where `key`'s file lives (whether or not it exists)."""
        return self.path / (check_key(key) + self.suffix)

    def list_keys(self) -> list[str]:
        """The keys on disk now, sorted (blocking; `keys()` is the async form)."""
        try:
            entries = os.scandir(self.path)
        except FileNotFoundError:
            return []
        found = []
        cut = len(self.suffix)
        with entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.endswith(self.suffix):
                    continue
                if entry.is_file():
                    found.append(name[: len(name) - cut] if cut else name)
        found.sort()
        return found

    async def keys(self) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self.list_keys):
            yield key

    async def snapshot(self) -> frozenset[str]:
        return frozenset(await asyncio.to_thread(self.list_keys))

    async def contains(self, key: str) -> bool:
        return self.path_of(key).is_file()

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        _check_mode(mode)
        target = self.path_of(key)
        if mode == "rb":
            try:
                fh = target.open("rb")
            except FileNotFoundError:
                raise KeyError(key) from None
            with fh:
                yield _Reader(fh)
            return
        with atomic_file(target) as sink:
            yield _Writer(sink)

    async def delete(self, key: str) -> None:
        self.path_of(key).unlink(missing_ok=True)


# -- the taskloom store -------------------------------------------------------------------------
class StoreRepository(RepositoryBase):
    """A repository in the manager's store, so every process sharing the store sees it.

    Values live in the store's key/value entries. The store protocol cannot list entries by
    prefix, so the repository keeps its key list in one index entry, updated under a store
    lock (`lock_poll` is how often a busy lock is retried, `lock_timeout` how long before
    giving up). Blobs are held whole in memory; keep them small.
    """

    def __init__(
        self,
        manager: TaskManager,
        name: str,
        *,
        lock_ttl: float = 30.0,
        lock_poll: float = 0.05,
        lock_timeout: float = 30.0,
    ) -> None:
        self.manager = manager
        self.name = name
        self.lock_ttl = lock_ttl
        self.lock_poll = lock_poll
        self.lock_timeout = lock_timeout
        self._prefix = f"pipeline-repo:{name}:"
        self._holder = secrets.token_hex(8)
        self._local: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    async def _store(self) -> Store:
        return (await self.manager.connect()).store

    async def _index(self) -> list[str]:
        raw = await (await self._store()).kv_get(self._prefix + "index", self.manager.clock())
        return [] if raw is None else list(serde.loads(raw))

    async def _save_index(self, keys: Iterable[str]) -> None:
        data = serde.dumps(sorted(keys))
        await (await self._store()).kv_set(self._prefix + "index", data, None, self.manager.clock())

    def _local_lock(self) -> asyncio.Lock:
        # one lock per event loop: a lock that once waited is bound to its loop, and a
        # CLI or a sync facade may use this repository from several loops in turn
        loop = asyncio.get_running_loop()
        if self._local is None or self._local[0] is not loop:
            self._local = (loop, asyncio.Lock())
        return self._local[1]

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The index's read-modify-write, serialised here and across processes."""
        store = await self._store()
        lock = self._prefix + "lock"
        async with self._local_lock():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.lock_timeout
            while not await store.acquire_lock(
                lock, self._holder, self.lock_ttl, self.manager.clock()
            ):
                if loop.time() >= deadline:
                    raise StoreUnavailableError(
                        f"repository {self.name!r}: index lock busy for {self.lock_timeout:g}s"
                    )
                await asyncio.sleep(self.lock_poll)
            try:
                yield
            finally:
                await store.release_lock(lock, self._holder)

    async def keys(self) -> AsyncIterator[str]:
        for key in await self._index():
            yield key

    async def snapshot(self) -> frozenset[str]:
        return frozenset(await self._index())

    async def contains(self, key: str) -> bool:
        return key in await self._index()

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        check_key(key)
        _check_mode(mode)
        if mode == "rb":
            yield _Reader(io.BytesIO(await self.read(key)))
            return
        buffer = io.BytesIO()
        yield _Writer(buffer)
        await self.write(key, buffer.getvalue())

    async def read(self, key: str) -> bytes:
        # the index is the truth: a value written by a writer that died before indexing it
        # is not a key
        store = await self._store()
        if key not in await self._index():
            raise KeyError(key)
        raw = await store.kv_get(self._prefix + "item:" + key, self.manager.clock())
        if raw is None:
            raise KeyError(key)
        return raw

    async def write(self, key: str, data: bytes) -> None:
        store = await self._store()
        await store.kv_set(self._prefix + "item:" + check_key(key), bytes(data), None,
                           self.manager.clock())  # fmt: skip
        async with self._locked():
            index = await self._index()
            if key not in index:
                await self._save_index([*index, key])

    async def delete(self, key: str) -> None:
        async with self._locked():
            index = await self._index()
            if key in index:
                await self._save_index(k for k in index if k != key)
        await (await self._store()).kv_delete(self._prefix + "item:" + key)


# -- views made by the pipeline -----------------------------------------------------------------
class TranslatedRepository(RepositoryBase):
    """`source` seen under other keys: job `k` is present when `source` holds
    `await translator.info(k)` (a string). Read-only; deletes are ignored unless
    `allow_deletes`. With `prefetch_lookup` (the default) every translation is fetched on
    first access and kept, so later passes only look up keys the translator gained:
    translations are taken to never change. Without it each key is looked up every time."""

    def __init__(
        self,
        source: Repository,
        translator: Repository,
        *,
        allow_deletes: bool = False,
        prefetch_lookup: bool = True,
    ) -> None:
        self.source = source
        self.translator = translator
        self.allow_deletes = allow_deletes
        self.prefetch_lookup = prefetch_lookup
        self.name = f"{source.name} via {translator.name}"
        self._known: dict[str, str] | None = None  # the prefetched translations

    async def _lookup(self, key: str) -> str:
        value = await self.translator.info(key)
        if not isinstance(value, str):
            raise ConfigError(
                f"translator {self.translator.name!r} maps {key!r} to {value!r}, not a key"
            )
        return value

    async def upstream_key(self, key: str) -> str:
        """The source key that job `key` maps to."""
        if not self.prefetch_lookup:
            return await self._lookup(key)
        if self._known is None:
            jobs = sorted(await self.translator.snapshot())
            targets = await asyncio.gather(*(self._lookup(job) for job in jobs))
            self._known = dict(zip(jobs, targets, strict=True))
        if key not in self._known:
            self._known[key] = await self._lookup(key)
        return self._known[key]

    async def _mapping(self) -> dict[str, str]:
        jobs = sorted(await self.translator.snapshot())
        targets = await asyncio.gather(*(self.upstream_key(job) for job in jobs))
        return dict(zip(jobs, targets, strict=True))

    async def snapshot(self) -> frozenset[str]:
        mapping, present = await asyncio.gather(self._mapping(), self.source.snapshot())
        return frozenset(job for job, up in mapping.items() if up in present)

    async def keys(self) -> AsyncIterator[str]:
        for key in sorted(await self.snapshot()):
            yield key

    async def contains(self, key: str) -> bool:
        if not await self.translator.contains(key):
            return False
        return await self.source.contains(await self.upstream_key(key))

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        if mode != "rb":
            raise ConfigError(f"repository {self.name!r} is a translated view: read-only")
        try:
            upstream = await self.upstream_key(key)
        except KeyError:
            raise KeyError(key) from None
        async with self.source.open(upstream, "rb") as blob:
            yield blob

    async def delete(self, key: str) -> None:
        if self.allow_deletes:
            await self.source.delete(await self.upstream_key(key))


class LiveRepository(RepositoryBase):
    """The jobs of one task that have a run in flight, kept by the pipeline (read-only).

    `info(job)` gives the run id and launch time. Linked to every task as "live"
    (status, inhibits_start, inhibits_output), so a job is never launched twice at once and
    downstream tasks wait for it.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: dict[str, dict[str, Any]] = {}

    async def keys(self) -> AsyncIterator[str]:
        for key in list(self._jobs):
            yield key

    async def snapshot(self) -> frozenset[str]:
        return frozenset(self._jobs)

    async def contains(self, key: str) -> bool:
        return key in self._jobs

    async def info(self, key: str) -> Any:
        try:
            return dict(self._jobs[key])
        except KeyError:
            raise KeyError(key) from None

    @asynccontextmanager
    async def open(self, key: str, mode: Mode = "rb") -> AsyncIterator[Blob]:
        if mode != "rb":
            raise ConfigError(f"repository {self.name!r} is kept by the pipeline: read-only")
        yield _Reader(io.BytesIO(serde.dumps(await self.info(key))))

    async def delete(self, key: str) -> None:
        raise ConfigError(f"repository {self.name!r} is kept by the pipeline: read-only")

    def track(self, key: str, info: dict[str, Any]) -> None:
        """Mark `key` live (the pipeline calls this when it launches or recovers a run)."""
        self._jobs[key] = info

    def untrack(self, key: str) -> None:
        """Mark `key` no longer live (the pipeline calls this when it reaps the run)."""
        self._jobs.pop(key, None)

    def clear(self) -> None:
        """Forget every job (a pipeline reopening rebuilds the set from the store)."""
        self._jobs.clear()

    def __len__(self) -> int:
        return len(self._jobs)


def origin(repo: KeySet) -> KeySet:
    """The repository a (possibly translated) view reads from."""
    while isinstance(repo, TranslatedRepository):
        repo = repo.source
    return repo
