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


def _shapes() -> list[TaskRun]:
    """Runs of every shape a store writes: fresh, running, retried, finished, odd values."""
    from datetime import datetime, timedelta, timezone

    from taskloom.run import TaskPriority

    queued = TaskRun(task="t", state=TaskState.queued, queued=dt(T0), params={"a": [1, 2.5]})
    running = TaskRun(task="t", state=TaskState.running, queued=dt(T0), start=dt(T0 + 1),
                      worker="w", tags=["x", "ü"], trace={"traceparent": "00-a-b-01"},
                      priority=TaskPriority.high, progress=0.5, progress_note="half")  # fmt: skip
    retried = finished(state=TaskState.failure, retry_attempt=2,
                       error={"type": "E", "message": "line\nbreak \u2028"})  # fmt: skip
    retried.attempts.insert(0, Attempt(attempt=0, state=TaskState.failure, start=dt(T0),
                                       end=dt(T0 + 0.5), worker="v", error={"type": "E"}))  # fmt: skip
    child = finished(parent_id="p" * 32, root_run_id="r" * 32, metrics={"elapsed": 1e-6})
    odd = finished(result={"big": 2**62, "neg": -0.0, "nan": float("nan"), "s": "\x00\x1f"},
                   execute_after=datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2))),
                   dedup_key="k", cache_hit=True, cancel_requested=True, rate_limit_attempt=1,
                   from_run_id="f" * 32)  # fmt: skip
    whole_second = TaskRun(task="t", state=TaskState.queued, queued=dt(T0), end=dt(T0 + 3))
    return [queued, running, retried, child, odd, whole_second]


def test_the_plain_encoding_is_pydantics_byte_for_byte() -> None:
    from taskloom.store.records import compact_exclusions, dumps_field, plain_fields

    for run in _shapes():
        assert encode_run(run) == run.model_dump_json(exclude=compact_exclusions(run))
        values = run.model_dump(mode="json", exclude=compact_exclusions(run))
        plain = plain_fields(run)
        assert list(plain) == list(values)
        assert [dumps_field(v) for v in plain.values()] == [
            orjson.dumps(v) for v in values.values()
        ]


def test_a_value_orjson_cannot_write_falls_back_to_pydantic() -> None:
    run = finished(result={"huge": 2**70})  # past 64 bits: orjson refuses, pydantic writes it
    assert orjson.loads(encode_run(run))["result"] == {"huge": 2**70}
