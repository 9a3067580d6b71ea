"""Find a run from a prefix of its id (what the CLI's `show`, `cancel` and `retry` accept).

Ids sort as strings and listings page below a cursor, so the runs whose id starts with a
prefix are the newest ones below the prefix's successor: one indexed query on every store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .errors import ConfigError, RunNotFoundError
from .run import TaskRun

if TYPE_CHECKING:
    from .manager import TaskManager

MIN_PREFIX = 6
_HEX = "0123456789abcdef"


class AmbiguousRunIdError(ConfigError):
    """An id prefix matches more than one run; `candidates` lists their ids."""

    def __init__(self, prefix: str, candidates: Sequence[str]) -> None:
        shown = ", ".join(candidates)
        super().__init__(f"run id prefix {prefix!r} matches several runs: {shown}")
        self.prefix = prefix
        self.candidates = list(candidates)


def successor(prefix: str) -> str | None:
    """The smallest string above every string starting with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        last = chars.pop()
        if last in _HEX[:-1]:
            return "".join(chars) + _HEX[_HEX.index(last) + 1]
        if last != "f":
            return "".join(chars) + chr(ord(last) + 1)
    return None


async def find_run(manager: TaskManager, text: str, *, shown: int = 10) -> TaskRun:
    """The run whose id is `text`, or the one run whose id starts with it (6+ characters).

    Raises RunNotFoundError, or AmbiguousRunIdError naming up to `shown` candidates.
    """
    text = text.strip().lower()
    try:
        return await manager.get_run(text)
    except RunNotFoundError:
        if len(text) < MIN_PREFIX:
            raise ConfigError(
                f"run {text!r} not found (an id prefix needs {MIN_PREFIX} or more characters)"
            ) from None
    matches = [
        run
        for run in await manager.runs(cursor=successor(text), limit=shown + 1)
        if run.id.startswith(text)
    ]
    if not matches:
        raise RunNotFoundError(text)
    if len(matches) > 1:
        raise AmbiguousRunIdError(text, [r.id for r in matches[:shown]])
    return matches[0]


def short_ids(ids: Sequence[str], minimum: int = 8) -> list[str]:
    """The shortest prefixes (at least `minimum` long) that tell these ids apart."""
    length = minimum
    unique = set(ids)
    while length < max((len(i) for i in ids), default=0):
        if len({i[:length] for i in unique}) == len(unique):
            break
        length += 1
    return [i[:length] for i in ids]
