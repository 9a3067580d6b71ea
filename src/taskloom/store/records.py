"""Reading stored run records: an unreadable record costs one run, never the queue.

Every backend decodes its records through `decode_run`. A record that is not JSON, or whose
fields have the wrong types (edited by hand, written by a mismatched version, damaged on
disk) raises `CorruptRecordError` there. A claim fails that run alone with `unreadable_run`
as its new record, and listings show the same stand-in, so the id stays visible.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from ..errors import CorruptRecordError
from ..run import TaskRun, TaskState
from .base import Lease, dt

log = logging.getLogger("taskloom.store")

UNREADABLE_TASK = "<unreadable>"  # the task name of a stand-in whose record named none


_NULL_LEFT_OUT = ("parent_id", "dedup_key", "progress", "progress_note", "execute_after", "error")


# An attempt's fields that a finished run's last attempt shares with the run itself.
_MIRRORED = {"start", "end", "worker", "error"}


def _last_attempt_mirrors(run: TaskRun) -> bool:
    """True if the last attempt ended the run: same state, times, worker and error (nearly
    every finished run). Only finished records are compacted so, as they are changed by whole
    writes only, never by a claim or reclaim inside the store."""
    if not run.attempts:
        return False
    last = run.attempts[-1]
    return (
        last.end is not None
        and last.state is run.state
        and last.end == run.end
        and last.start == run.start
        and last.worker == run.worker
        and last.error == run.error
    )


def compact_exclusions(run: TaskRun) -> dict[str, Any]:
    """The fields a stored record leaves out because they hold their default, or repeat the
    run's own fields, which reading the record brings back (`decode_run`).

    A root run's `root_run_id` is its own id. The last attempt of a finished run keeps its
    number and state only: its start, end, worker and error are the run's (about 100 bytes,
    and on Redis it keeps the hash in its compact encoding). An attempt never ends without an
    end time, so a stored attempt without one is such a mirror. Statements and scripts that
    read an absent field treat it as null; a live run keeps `start`, `worker`,
    `retry_attempt` and `cancel_requested`, as claims, heartbeats and reclaims read them. About
    420 bytes of a finished no-op run's record.
    """
    out: dict[str, Any] = {}
    for name in _NULL_LEFT_OUT:
        if getattr(run, name) is None:
            out[name] = True
    if run.root_run_id == run.id:
        out["root_run_id"] = True
    if run.rate_limit_attempt == 0:
        out["rate_limit_attempt"] = True
    if run.from_run_id is None:
        out["from_run_id"] = True
    if run.result is None:
        out["result"] = True
    if run.cache_hit is False:
        out["cache_hit"] = True
    if not run.tags:
        out["tags"] = True
    if not run.metrics:
        out["metrics"] = True
    if not run.trace:
        out["trace"] = True
    if run.state.is_done:  # read inside the store only while the run is live
        if run.cancel_requested is False:
            out["cancel_requested"] = True
        if run.retry_attempt == 0:
            out["retry_attempt"] = True
        if _last_attempt_mirrors(run):
            out["attempts"] = {-1: _MIRRORED}
    return out


def plain_fields(run: TaskRun, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """The fields a store keeps for `run`, as the values the run holds, in declaration order:
    what `compact_exclusions` and `leave_out` name is left out, attempts become dicts.

    orjson (`dumps_field`, `plain_json`) writes these as pydantic would (enums by value,
    datetimes as ISO 8601 with "Z"), a few times faster than `model_dump_json`; a value it
    cannot write raises TypeError, and callers fall back to pydantic.
    """
    exclusions = compact_exclusions(run)
    mirrored = exclusions.pop("attempts", None) is not None  # the last attempt's repeats
    out = {
        name: value
        for name, value in run.__dict__.items()
        if name not in exclusions and name not in leave_out
    }
    attempts = out.get("attempts")
    if attempts:
        listed = [dict(a.__dict__) for a in attempts]
        if mirrored:
            listed[-1] = {k: v for k, v in listed[-1].items() if k not in _MIRRORED}
        out["attempts"] = listed
    return out


def dumps_field(value: Any) -> bytes:
    """One plain value as JSON (see `plain_fields`)."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def pydantic_exclude(run: TaskRun, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """`plain_fields`'s choice as pydantic's `exclude`: the fallback for what orjson cannot
    write (pydantic then writes it, or names the problem)."""
    exclude = compact_exclusions(run)
    exclude.update(dict.fromkeys(leave_out, True))
    return exclude


def plain_json(run: TaskRun, leave_out: Collection[str] = ()) -> str:
    """The JSON of `plain_fields(run, leave_out)`; pydantic writes what orjson cannot."""
    try:
        return orjson.dumps(plain_fields(run, leave_out), option=orjson.OPT_UTC_Z).decode()
    except TypeError:  # a value of a type orjson does not know
        return run.model_dump_json(exclude=pydantic_exclude(run, leave_out))


def encode_run(run: TaskRun) -> str:
    """The JSON a store keeps for `run` (defaults left out)."""
    return plain_json(run)


def _restore_mirror(run: TaskRun) -> TaskRun:
    """`run` with its last attempt's mirrored fields filled back in from the run."""
    last = run.attempts[-1]
    if last.end is None:
        last.start, last.end, last.worker = run.start, run.end, run.worker
        last.error = dict(run.error) if run.error is not None else None
    return run


def _describe(exc: ValidationError) -> str:
    """What is wrong, by field, never quoting the stored values (they may be private)."""
    problems = exc.errors(include_input=False, include_url=False, include_context=False)
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _salvage(data: str | bytes) -> dict[str, str]:
    """The plain string fields still readable in a damaged record (id, task, queue...)."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    keep = ("id", "task", "queue", "parent_id", "root_run_id")
    return {k: v for k in keep if isinstance(v := raw.get(k), str) and v}


def decode_run(data: str | bytes, run_id: str | None = None) -> TaskRun:
    """The run a stored JSON record holds; raises `CorruptRecordError` if it cannot be read.

    `run_id` names the record when the caller knows it (the row's key), so the error names
    the run even if the JSON is too broken to say which one it was.
    """
    try:
        run = TaskRun.model_validate_json(data)
    except ValidationError as exc:
        known = run_id or _salvage(data).get("id") or "?"
        raise CorruptRecordError(known, _describe(exc)) from None
    return _restore_mirror(run) if run.attempts else run


def unreadable_run(
    exc: CorruptRecordError, data: str | bytes | None = None, now: float | None = None
) -> TaskRun:
    """The failed record that stands in for an unreadable one (what a claim writes back,
    what listings show); it keeps the task, queue and family ids when they are readable."""
    fields = _salvage(data) if data is not None else {}
    fields.pop("id", None)
    fields.setdefault("task", UNREADABLE_TASK)
    return TaskRun(
        id=exc.run_id,
        state=TaskState.failure,
        end=dt(now),
        error={"type": "CorruptRecordError", "message": str(exc), "non_retryable": True},
        **fields,
    )


def decode_or_stand_in(data: str | bytes, run_id: str | None = None) -> TaskRun:
    """`decode_run` for listings: an unreadable record shows as its stand-in."""
    try:
        return decode_run(data, run_id)
    except CorruptRecordError as exc:
        return unreadable_run(exc, data)


def claimed(
    rows: Iterable[tuple[str, str, str | bytes]], expires: float, now: float
) -> tuple[list[Lease], list[tuple[Lease, TaskRun]]]:
    """Leases for claimed `(id, token, record)` rows, and, apart, the rows whose record
    cannot be read, each paired with the failed record to finish it with."""
    leases: list[Lease] = []
    unreadable: list[tuple[Lease, TaskRun]] = []
    for run_id, token, data in rows:
        try:
            leases.append(Lease(decode_run(data, run_id), token, expires))
        except CorruptRecordError as exc:
            log.error("%s; the run fails", exc)
            stand_in = unreadable_run(exc, data, now)
            unreadable.append((Lease(stand_in, token, expires), stand_in))
    return leases, unreadable
