"""Blocking views of repositories, for job functions that run in executor threads or processes.

A thread view hops each call back to the pipeline's event loop, so any repository works. A
process view cannot do that; only file repositories have one (`FileView`: plain disk access,
atomic like the repository itself, and picklable).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .. import serde
from .repositories import FileRepository, Repository, atomic_file, check_key

T = TypeVar("T")


class SyncRepository(Protocol):
    """What a sync job function receives for each link."""

    @property
    def name(self) -> str:
        """The repository's name."""
        ...

    def keys(self) -> list[str]:
        """Every key."""
        ...

    def contains(self, key: str) -> bool:
        """True if `key` is present."""
        ...

    def read(self, key: str) -> bytes:
        """The blob at `key` (KeyError if absent)."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace the blob at `key` atomically."""
        ...

    def info(self, key: str) -> Any:
        """The JSON metadata at `key`."""
        ...

    def dump(self, key: str, data: Any) -> None:
        """Store JSON metadata at `key` atomically."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`."""
        ...


class LoopView:
    """A repository used from a worker thread: every call runs on the pipeline's loop."""

    def __init__(self, repo: Repository, loop: asyncio.AbstractEventLoop) -> None:
        self.repo = repo
        self.name = repo.name
        self._loop = loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def keys(self) -> list[str]:
        """Every key, sorted."""
        return sorted(self._call(self.repo.snapshot()))

    def contains(self, key: str) -> bool:
        """True if `key` is present."""
        return self._call(self.repo.contains(key))

    def read(self, key: str) -> bytes:
        """The blob at `key`."""
        return self._call(self.repo.read(key))

    def write(self, key: str, data: bytes) -> None:
        """Replace the blob at `key` atomically."""
        self._call(self.repo.write(key, data))

    def info(self, key: str) -> Any:
        """The JSON metadata at `key`."""
        return self._call(self.repo.info(key))

    def dump(self, key: str, data: Any) -> None:
        """Store JSON metadata at `key`."""
        self._call(self.repo.dump(key, data))

    def delete(self, key: str) -> None:
        """Remove `key`."""
        self._call(self.repo.delete(key))


@dataclass(frozen=True)
class FileView:
    """A file repository used from any process (picklable: only its path travels)."""

    path: str
    suffix: str = ""
    name: str = ""

    @classmethod
    def of(cls, repo: FileRepository) -> FileView:
        """The view of `repo`."""
        return cls(os.fspath(repo.path), repo.suffix, repo.name)

    def _repo(self) -> FileRepository:
        return FileRepository(self.path, suffix=self.suffix, name=self.name)

    def _file(self, key: str) -> Path:
        return Path(self.path) / (check_key(key) + self.suffix)

    def keys(self) -> list[str]:
        """Every key, sorted."""
        return self._repo().list_keys()

    def contains(self, key: str) -> bool:
        """True if `key` is present."""
        return self._file(key).is_file()

    def read(self, key: str) -> bytes:
        """The blob at `key`."""
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def write(self, key: str, data: bytes) -> None:
        """Replace the blob at `key` atomically."""
        with atomic_file(self._file(key)) as fh:
            fh.write(data)

    def info(self, key: str) -> Any:
        """The JSON metadata at `key`."""
        return serde.loads(self.read(key))

    def dump(self, key: str, data: Any) -> None:
        """Store JSON metadata at `key` atomically."""
        self.write(key, serde.dumps(data))

    def delete(self, key: str) -> None:
        """Remove `key`."""
        self._file(key).unlink(missing_ok=True)
