-- Retention: sweeps find finished runs by end time, instead of reading every finished run.
CREATE INDEX runs_ended ON runs (ended)
    WHERE state IN ('success', 'failure', 'aborted', 'rate_limited');
