-- taskloom SQLite schema: the full current state, for reading and for the migration test.
-- The store never runs this file; it applies migrations/NNNN_*.sql in order, and
-- tests/unit/test_sqlite_migrations.py checks that the two agree.

-- Applied migrations (created by the store itself before it runs any migration).
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    applied REAL NOT NULL
);

-- One row per run. `data` is the whole TaskRun as JSON; the other columns copy the fields
-- that claims and queries filter or sort on, plus the lease, which is not part of the record.
-- A rowid table (unlike the small tables below) because records are large.
CREATE TABLE runs (
    id            TEXT PRIMARY KEY,  -- time-ordered hex: ORDER BY id DESC is newest first
    task          TEXT NOT NULL,
    state         TEXT NOT NULL,
    queue         TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,  -- 0 high, 1 medium, 2 low
    due           REAL NOT NULL,     -- execute_after, else queued, else 0: FIFO order key
    execute_after REAL,              -- a queued run is due once this is NULL or <= now
    dedup_key     TEXT,
    lease_token   TEXT,              -- set while a worker holds the run; fences its writes
    lease_expires REAL,
    worker        TEXT,
    parent_id     TEXT,
    root_run_id   TEXT,              -- NULL for a root run (its own root)
    created       REAL,              -- queued, else start: what since/before filter on
    ended         REAL,
    data          TEXT NOT NULL,
    tags          TEXT               -- the record's tags as a JSON array, NULL when it has none
);

-- Claims: due queued runs by priority then FIFO, for all queues or for one queue. Partial, so
-- they hold only the queue itself; `state` is a column too, which makes them covering.
CREATE INDEX runs_claim_any ON runs (state, priority_rank, due, id, execute_after)
    WHERE state = 'queued';
CREATE INDEX runs_claim ON runs (state, queue, priority_rank, due, id, execute_after)
    WHERE state = 'queued';
-- Dedup looks only at active runs.
CREATE INDEX runs_dedup ON runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('init', 'queued', 'running');
-- Reclaim scans held leases by expiry.
CREATE INDEX runs_lease ON runs (lease_expires) WHERE lease_token IS NOT NULL;
-- Queries, newest first.
CREATE INDEX runs_task ON runs (task, id);
CREATE INDEX runs_state ON runs (state, id);
CREATE INDEX runs_queue ON runs (queue, id);
CREATE INDEX runs_created ON runs (created);
CREATE INDEX runs_parent ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
-- A root run's root_run_id column is NULL (it is its own root): the index holds children only.
CREATE INDEX runs_root ON runs (root_run_id, id) WHERE root_run_id IS NOT NULL;
-- Retention sweeps: finished runs by end time.
CREATE INDEX runs_ended ON runs (ended)
    WHERE state IN ('success', 'failure', 'aborted', 'rate_limited');

-- Maintained counts: runs per (task, queue, state, priority), kept in the same transaction as
-- every change to `runs`, so queue depth and state counts cost one small read however many
-- runs the store holds. Updates and deletes are counted by triggers; inserts by the store
-- (sqlite.py: _inserted), as an AFTER INSERT trigger made every insert ~1.7x as costly.
CREATE TABLE run_counts (
    task          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    state         TEXT NOT NULL,
    priority_rank INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    PRIMARY KEY (task, queue, state, priority_rank)
) WITHOUT ROWID;

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

-- Tags, one row per (tag, run): a tag filter walks (tag, id) newest first instead of reading
-- every record. The store writes a run's tags into `runs.tags` (a JSON array, NULL for none)
-- with the record, and triggers keep `run_tags` from that column on update and delete (the
-- store adds an inserted run's tags itself): an untagged run costs them a NULL test, and
-- claims and heartbeats, which rewrite `data` but never `tags`, nothing.

CREATE TABLE run_tags (
    tag TEXT NOT NULL,
    id  TEXT NOT NULL,
    PRIMARY KEY (tag, id)
) WITHOUT ROWID;

CREATE TRIGGER run_tags_delete AFTER DELETE ON runs WHEN OLD.tags IS NOT NULL
BEGIN
    DELETE FROM run_tags WHERE id = OLD.id AND tag IN (SELECT value FROM json_each(OLD.tags));
END;

CREATE TRIGGER run_tags_update AFTER UPDATE OF tags ON runs WHEN OLD.tags IS NOT NEW.tags
BEGIN
    DELETE FROM run_tags WHERE id = OLD.id;
    INSERT OR IGNORE INTO run_tags (tag, id)
    SELECT value, NEW.id FROM json_each(NEW.tags) WHERE NEW.tags IS NOT NULL AND type = 'text';
END;

-- Concurrency slots: one row per holder of a slot of `name`.
CREATE TABLE slots (
    name    TEXT NOT NULL,
    holder  TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (name, holder)
) WITHOUT ROWID;
-- Heartbeats extend the slots a run holds, whatever their name.
CREATE INDEX slots_holder ON slots (holder);

-- Leader locks.
CREATE TABLE locks (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;

-- Key/value entries (cache, flags); `expires` NULL means never.
CREATE TABLE kv (
    key     TEXT PRIMARY KEY,
    value   BLOB NOT NULL,
    expires REAL
);

-- Worker heartbeats; `info` is JSON.
CREATE TABLE workers (
    worker    TEXT PRIMARY KEY,
    last_seen REAL NOT NULL,
    expires   REAL NOT NULL,
    info      TEXT NOT NULL
) WITHOUT ROWID;

-- Stored settings per queue: paused, and an optional start-rate limit (`rate_count` starts
-- per `rate_per` seconds). Every claim reads this table.
CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    rate_count INTEGER,
    rate_per   REAL
) WITHOUT ROWID;

-- Sliding logs of start times, one row per limited key (`task:<name>`, `queue:<name>`):
-- `starts` is a JSON array of the start times still inside the window, oldest first.
CREATE TABLE rate_windows (
    key    TEXT PRIMARY KEY,
    starts TEXT NOT NULL
) WITHOUT ROWID;

-- Schedules added at run time; `data` is the definition as JSON.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
