-- Maintained counts: runs per (task, queue, state, priority), kept by triggers in the same
-- transaction as every change to `runs`, so queue depth and state counts cost one small read
-- however many runs the store holds. Exact by construction: no write path can skip them.
CREATE TABLE run_counts (
    task          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    state         TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    PRIMARY KEY (task, queue, state, priority_rank)
) WITHOUT ROWID;

INSERT INTO run_counts (task, queue, state, priority_rank, n)
SELECT task, queue, state, priority_rank, count(*) FROM runs
GROUP BY task, queue, state, priority_rank;

CREATE TRIGGER run_counts_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO run_counts (task, queue, state, priority_rank, n)
    VALUES (NEW.task, NEW.queue, NEW.state, NEW.priority_rank, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER run_counts_delete AFTER DELETE ON runs
BEGIN
    UPDATE run_counts SET n = n - 1
    WHERE task = OLD.task AND queue = OLD.queue AND state = OLD.state
      AND priority_rank = OLD.priority_rank;
END;

-- Heartbeats and lease writes change none of the four columns: the WHEN skips them.
CREATE TRIGGER run_counts_update AFTER UPDATE OF task, queue, state, priority_rank ON runs
WHEN OLD.task IS NOT NEW.task OR OLD.queue IS NOT NEW.queue OR OLD.state IS NOT NEW.state
  OR OLD.priority_rank IS NOT NEW.priority_rank
BEGIN
    UPDATE run_counts SET n = n - 1
    WHERE task = OLD.task AND queue = OLD.queue AND state = OLD.state
      AND priority_rank = OLD.priority_rank;
    INSERT INTO run_counts (task, queue, state, priority_rank, n)
    VALUES (NEW.task, NEW.queue, NEW.state, NEW.priority_rank, 1)
    ON CONFLICT DO UPDATE SET n = n + 1;
END;
