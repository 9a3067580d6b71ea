-- taskloom PostgreSQL schema: the result of applying every file in migrations/, in order.
-- Objects are created unqualified: the store sets search_path to its own schema, so two apps
-- (or two test runs) can share one database. A test diffs this file against the migrations.
--
-- Every time column holds Unix seconds (DOUBLE PRECISION) taken from the `now` the caller
-- passes in, never from the server clock, so a fake clock drives this backend like the others.

CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per run. `data` is the full record (TaskRun as JSON); the other columns copy the
-- fields that claims, fencing and queries filter or sort on.
CREATE TABLE runs (
    id TEXT PRIMARY KEY,                  -- time-ordered hex: ORDER BY id DESC is newest first
    task TEXT NOT NULL,
    state TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority_rank SMALLINT NOT NULL,      -- 0 high, 1 medium, 2 low
    due DOUBLE PRECISION NOT NULL,        -- execute_after, else queued: FIFO order of claims
    execute_after DOUBLE PRECISION,       -- not claimable before this
    dedup_key TEXT,
    lease_token TEXT,                     -- fences finish/heartbeat; kept after finish (retries)
    lease_expires DOUBLE PRECISION,
    worker TEXT,
    parent_id TEXT,
    root_run_id TEXT,
    created DOUBLE PRECISION,             -- queued, else start: what since/before filter on
    ended DOUBLE PRECISION,
    tags TEXT[] NOT NULL DEFAULT '{}',
    data JSONB NOT NULL
);

-- Claims walk this in order and stop after LIMIT rows.
CREATE INDEX runs_claim_idx ON runs (priority_rank, due, id) WHERE state = 'queued';
-- At most one active run per dedup key: makes INSERT ... ON CONFLICT DO NOTHING the dedup check.
CREATE UNIQUE INDEX runs_dedup_idx ON runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('init', 'queued', 'running');
-- Reclaim looks only at running runs.
CREATE INDEX runs_lease_idx ON runs (lease_expires) WHERE state = 'running';
CREATE INDEX runs_task_idx ON runs (task, id);
CREATE INDEX runs_parent_idx ON runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_root_idx ON runs (root_run_id);

-- Concurrency slots: one row per holder of a slot of `name`.
CREATE TABLE slots (
    name TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, holder)
);
-- Heartbeats extend every slot a run holds, whatever its name.
CREATE INDEX slots_holder_idx ON slots (holder);

-- Leader locks.
CREATE TABLE locks (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);

-- Key/value entries (cache, flags); NULL expires means never.
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value BYTEA NOT NULL,
    expires DOUBLE PRECISION
);

CREATE TABLE workers (
    worker TEXT PRIMARY KEY,
    last_seen DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    info JSONB NOT NULL DEFAULT '{}'
);
