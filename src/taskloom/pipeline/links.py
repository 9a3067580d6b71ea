"""Links: how a task relates to a repository (its disposition), and how `plug` derives them.

A link says whether the repository is an input, an output or task status, and how its keys
steer readiness: `required_for_start` keys are needed to launch a job, `inhibits_start` keys
prevent it. `required_for_output` and `inhibits_output` are what a downstream task inherits
when it is plugged into this one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from .repositories import Repository, TranslatedRepository

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

FLAGS = (
    "is_input", "is_output", "is_status", "inhibits_start", "required_for_start",
    "inhibits_output", "required_for_output",
)  # fmt: skip


def check_name(what: str, name: str) -> str:
    """Return `name` if it is a valid task or link name (letters, digits, `_ . -`)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: start with a letter or '_', then letters, digits, "
            "'_', '.' or '-'"
        )
    return name


@dataclass(frozen=True)
class Link:
    """A task's link to a repository and its disposition; build it with `Link.make` or
    `task.link(...)`. `upstream` names the task a plugged link came from."""

    repo: Repository
    is_input: bool = False
    is_output: bool = False
    is_status: bool = False
    inhibits_start: bool = False
    required_for_start: bool = False
    inhibits_output: bool = False
    required_for_output: bool = False
    upstream: str | None = None
    upstream_link: str | None = None

    @classmethod
    def make(
        cls,
        repo: Repository,
        *,
        is_input: bool = False,
        is_output: bool = False,
        is_status: bool = False,
        inhibits_start: bool = False,
        required_for_start: bool | None = None,
        inhibits_output: bool = False,
        required_for_output: bool | None = None,
    ) -> Link:
        """A link with pydatatask's defaults: `required_for_start` follows `is_input`,
        `required_for_output` follows `is_output`."""
        return cls(
            repo,
            is_input=is_input,
            is_output=is_output,
            is_status=is_status,
            inhibits_start=inhibits_start,
            required_for_start=is_input if required_for_start is None else required_for_start,
            inhibits_output=inhibits_output,
            required_for_output=is_output if required_for_output is None else required_for_output,
        )

    @property
    def flags(self) -> list[str]:
        """The names of the dispositions that are set."""
        return [flag for flag in FLAGS if getattr(self, flag)]


def plugged_links(
    upstream: str,
    links: Mapping[str, Link],
    output_links: Iterable[str] | None = None,
    meta: bool = True,
    translator: Repository | None = None,
    *,
    allow_deletes: bool = False,
    prefetch_lookup: bool = True,
) -> dict[str, Link]:
    """The links a task gains by plugging into `upstream` (whose links are `links`).

    Each output of `upstream` becomes an input named `<upstream>_<link>`. With `meta`, the
    upstream's `required_for_output` links become `required_for_start` and its
    `inhibits_output` links `inhibits_start` (so status links such as `done` and `live`
    carry over); without it, outputs are plain required inputs. `output_links` limits which
    upstream links are used; `translator` maps this task's job keys to upstream keys
    (`allow_deletes` and `prefetch_lookup` go to each `TranslatedRepository`).
    """
    allowed = None if output_links is None else set(output_links)
    if allowed is not None and (unknown := allowed - set(links)):
        raise ConfigError(f"task {upstream!r} has no link named {', '.join(sorted(unknown))}")
    out: dict[str, Link] = {}
    for name, link in links.items():
        if allowed is not None and name not in allowed:
            continue
        carries_meta = meta and (link.required_for_output or link.inhibits_output)
        if not (link.is_output or carries_meta):
            continue
        repo: Repository = link.repo
        if translator is not None:
            repo = TranslatedRepository(
                repo, translator, allow_deletes=allow_deletes, prefetch_lookup=prefetch_lookup
            )
        out[f"{upstream}_{name}"] = Link(
            repo,
            is_input=link.is_output,
            required_for_start=link.required_for_output if meta else link.is_output,
            inhibits_start=link.inhibits_output if meta else False,
            upstream=upstream,
            upstream_link=name,
        )
    return out
