"""Key sets and their algebra: `And`, `Or` and `Not` over anything with `keys()` and
`contains()`. A task's default `ready` set is `And(required..., Not(Or(inhibiting...)))`.

Listing goes through `snapshot()`, one read per member, so a ready set costs a handful of
reads per pass however many keys it holds.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from ..errors import ConfigError


@runtime_checkable
class KeySet(Protocol):
    """An async set of keys: what `ready` sets and links are made of."""

    name: str

    def keys(self) -> AsyncIterator[str]:
        """Every key, once each."""
        ...

    async def contains(self, key: str) -> bool:
        """True if `key` is in the set."""
        ...

    async def snapshot(self) -> frozenset[str]:
        """Every key at once (one read per backend where it can)."""
        ...


class KeySetBase(ABC):
    """What every key set shares: `snapshot` from `keys`, and the `& | - ~` operators."""

    name: str = "keys"

    @abstractmethod
    def keys(self) -> AsyncIterator[str]:
        """Every key, once each."""

    @abstractmethod
    async def contains(self, key: str) -> bool:
        """True if `key` is in the set."""

    async def snapshot(self) -> frozenset[str]:
        """Every key at once."""
        return frozenset([key async for key in self.keys()])

    def __and__(self, other: KeySet) -> And:
        return And(self, other)

    def __or__(self, other: KeySet) -> Or:
        return Or(self, other)

    def __sub__(self, other: KeySet) -> And:
        return And(self, Not(other))

    def __invert__(self) -> Not:
        return Not(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class And(KeySetBase):
    """Keys in every member (AND). A `Not` member removes keys instead of listing them; with
    no positive member the set is empty."""

    def __init__(self, *members: KeySet) -> None:
        self.members = members
        self.name = "AND(" + ", ".join(m.name for m in members) + ")"

    def _split(self) -> tuple[list[KeySet], list[KeySet]]:
        positive = [m for m in self.members if not isinstance(m, Not)]
        negative = [m.inner for m in self.members if isinstance(m, Not)]
        return positive, negative

    async def snapshot(self) -> frozenset[str]:
        positive, negative = self._split()
        if not positive:
            return frozenset()
        sets = await asyncio.gather(*(m.snapshot() for m in (*positive, *negative)))
        keys = frozenset.intersection(*sets[: len(positive)])
        for removed in sets[len(positive) :]:
            keys = keys - removed
        return keys

    async def keys(self) -> AsyncIterator[str]:
        for key in sorted(await self.snapshot()):
            yield key

    async def contains(self, key: str) -> bool:
        if not self._split()[0]:
            return False
        for member in self.members:
            if not await member.contains(key):
                return False
        return True


class Or(KeySetBase):
    """Keys in any member (OR)."""

    def __init__(self, *members: KeySet) -> None:
        self.members = members
        self.name = "OR(" + ", ".join(m.name for m in members) + ")"

    async def snapshot(self) -> frozenset[str]:
        if any(isinstance(m, Not) for m in self.members):
            raise ConfigError(f"{self.name} has a NOT member: it cannot be listed")
        sets = await asyncio.gather(*(m.snapshot() for m in self.members))
        return frozenset().union(*sets)

    async def keys(self) -> AsyncIterator[str]:
        for key in sorted(await self.snapshot()):
            yield key

    async def contains(self, key: str) -> bool:
        for member in self.members:
            if await member.contains(key):
                return True
        return False


class Not(KeySetBase):
    """Every key not in `inner` (NOT). It answers `contains` but cannot be listed alone:
    use it inside `And` (or write `a - b`)."""

    def __init__(self, inner: KeySet) -> None:
        self.inner = inner
        self.name = f"NOT({inner.name})"

    async def snapshot(self) -> frozenset[str]:
        raise ConfigError(f"{self.name} cannot be listed: combine it with AND (a - b)")

    async def keys(self) -> AsyncIterator[str]:
        raise ConfigError(f"{self.name} cannot be listed: combine it with AND (a - b)")
        yield ""  # pragma: no cover - makes this an async generator

    async def contains(self, key: str) -> bool:
        return not await self.inner.contains(key)
