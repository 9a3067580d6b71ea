"""The JSON a store keeps for a run: defaults and repeats left out, all brought back on read."""

from __future__ import annotations

import time

import orjson

from taskloom.run import Attempt, TaskRun, TaskState, new_run_id, run_id_at
from taskloom.store.base import dt
from taskloom.store.records import decode_run, encode_run

T0 = 1_800_000_000.0


def finished(**kw: object) -> TaskRun:
    run = TaskRun(task="t", state=TaskState.success, queued=dt(T0), start=dt(T0 + 1),
                  end=dt(T0 + 2), worker="host:42", result=3)  # fmt: skip
    for name, value in kw.items():
        setattr(run, name, value)
    run.attempts.append(
        Attempt(attempt=run.retry_attempt, state=run.state, start=run.start, end=run.end,
                worker=run.worker, error=run.error)
    )  # fmt: skip
    return run


def test_a_finished_runs_last_attempt_keeps_only_its_number_and_state() -> None:
    run = finished()
    text = encode_run(run)
    assert orjson.loads(text)["attempts"] == [{"attempt": 0, "state": "success"}]
    assert text.count("host:42") == 1
    assert decode_run(text) == run


def test_a_failed_runs_error_is_shared_not_aliased() -> None:
    run = finished(state=TaskState.failure, error={"type": "ValueError", "message": "x"})
    back = decode_run(encode_run(run))
    assert back == run and back.attempts[-1].error == run.error
    assert back.attempts[-1].error is not back.error


def test_an_attempt_that_differs_from_the_run_is_kept_whole() -> None:
    run = finished()
    run.end = dt(T0 + 9)  # finished again later by hand
    stored = orjson.loads(encode_run(run))["attempts"][-1]
    assert stored["end"] is not None and stored["worker"] == "host:42"
    assert decode_run(encode_run(run)) == run


def test_earlier_attempts_are_kept_whole() -> None:
    run = finished(retry_attempt=1)
    run.attempts.insert(
        0, Attempt(attempt=0, state=TaskState.failure, start=dt(T0), end=dt(T0 + 0.5),
                   worker="other:1", error={"type": "E", "message": "m"})
    )  # fmt: skip
    stored = orjson.loads(encode_run(run))["attempts"]
    assert stored[0]["worker"] == "other:1" and "worker" not in stored[1]
    assert decode_run(encode_run(run)) == run


def test_only_a_finished_runs_last_attempt_is_compacted() -> None:
    """A claim or reclaim inside the store changes a live record's worker and state without
    decoding it, so a live run keeps its attempts whole whatever they hold."""
    run = finished()
    run.state = TaskState.running
    assert orjson.loads(encode_run(run))["attempts"][-1]["worker"] == "host:42"
    run.state = TaskState.failure  # finished, but not by that (successful) attempt
    assert orjson.loads(encode_run(run))["attempts"][-1]["worker"] == "host:42"


def test_an_id_made_for_a_past_time_sorts_among_ids_made_then() -> None:
    before = run_id_at(time.time() - 1)
    now = new_run_id()
    later = run_id_at(time.time() + 1)
    assert before < now < later and len(before) == len(now) == len(later) == 32
