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

-- One row per run. `data` is the record (TaskRun as JSON) less the fields the columns hold
-- for good: id, task, queue, priority (priority_rank), queued (created, when the run has a
-- queued time) and end (ended). Readers put those back from the columns; a key `data` still
-- has (rows written before 0008, or set by a statement here) comes later and wins. The other
-- columns copy the fields that claims, fencing and queries filter or sort on.
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
    root_run_id TEXT,                     -- NULL for a root run (its own root)
    created DOUBLE PRECISION,             -- queued, else start: what since/before filter on
    ended DOUBLE PRECISION,
    tags TEXT[] NOT NULL DEFAULT '{}',
    data JSONB NOT NULL
) WITH (
    -- Every run is updated a few times within seconds of its insert: room on the page keeps
    -- those updates HOT, and vacuum runs after 2% of the rows changed instead of 20%.
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1,
    -- a row past 2 KB has its record compressed in line, toward 128 bytes (see below)
    toast_tuple_target = 128
);
-- MAIN: a large record is compressed in line and moved out to the TOAST table only if the
-- row cannot fit a page; lz4 where the server has it.
ALTER TABLE runs ALTER COLUMN data SET STORAGE MAIN;
DO $$
BEGIN
    ALTER TABLE runs ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 unavailable, records stay compressed with pglz: %', SQLERRM;
END $$;

-- Claims walk this in order and stop after LIMIT rows.
CREATE INDEX runs_claim_idx ON runs (priority_rank, due, id) WHERE state = 'queued';
-- At most one active run per dedup key: makes INSERT ... ON CONFLICT DO NOTHING the dedup check.
CREATE UNIQUE INDEX runs_dedup_idx ON runs (dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('init', 'queued', 'running');
-- Reclaim looks only at running runs. Keyed on id, not lease_expires, so a heartbeat changes
-- no indexed column and its update is HOT (heap-only, no new index entries).
CREATE INDEX runs_running_idx ON runs (id) WHERE state = 'running';
-- Queue depth per queue and priority, and the oldest queued time: index-only.
CREATE INDEX runs_queued_idx ON runs (queue, priority_rank, created) WHERE state = 'queued';
-- Listings filter on one column and read `ORDER BY id DESC LIMIT n` (the cursor is `id <`).
CREATE INDEX runs_task_idx ON runs (task, id);
CREATE INDEX runs_state_idx ON runs (state, id);
CREATE INDEX runs_queue_idx ON runs (queue, id);
CREATE INDEX runs_created_idx ON runs (created);
-- Tagged runs only: most runs have none, and GIN would keep an entry for each empty array.
-- Queries on tags repeat the predicate so the planner can use it.
CREATE INDEX runs_tags_idx ON runs USING gin (tags) WHERE tags <> '{}'::text[];
CREATE INDEX runs_parent_idx ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
-- children only: a root run's root_run_id column is NULL
CREATE INDEX runs_root_idx ON runs (root_run_id, id) WHERE root_run_id IS NOT NULL;
-- Retention sweeps: finished runs by end time.
CREATE INDEX runs_ended_idx ON runs (ended)
    WHERE state IN ('success', 'failure', 'aborted', 'rate_limited');

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

-- Stored settings per queue: paused, and an optional start-rate limit (`rate_count` starts
-- per `rate_per` seconds). Every claim reads this table.
CREATE TABLE queue_settings (
    name TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT false,
    rate_count INTEGER,
    rate_per DOUBLE PRECISION
);

-- Sliding logs of start times, one row per limited key (`task:<name>`, `queue:<name>`): the
-- start times still inside the window, oldest first.
CREATE TABLE rate_windows (
    key TEXT PRIMARY KEY,
    starts DOUBLE PRECISION[] NOT NULL
);

-- Schedules added at run time; `data` is the definition as JSON.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    data BYTEA NOT NULL
);

-- The claim: lease up to p_limit due queued runs, by priority then FIFO, skipping paused
-- queues and rows other claimers hold. Lease tokens are p_token || run id. Without any
-- start-rate limit (p_task_limits: task -> [count, per]; queue limits from queue_settings)
-- it is one UPDATE. With limits, claims of this schema that apply them take one advisory
-- lock until commit, so the start windows are read and written by one claimer at a time; a
-- candidate over a limit stays queued with execute_after = when a slot frees (the k-th held
-- back on a key takes the k-th slot to free, one window later past the slots the window has).
-- Rows: one per leased run; then, if any run was held back, one with a NULL id whose
-- retry_at says when to claim again.
CREATE FUNCTION claim_runs(
    p_now DOUBLE PRECISION, p_queues TEXT[], p_limit INTEGER, p_worker TEXT,
    p_expires DOUBLE PRECISION, p_start TEXT, p_token TEXT, p_task_limits JSONB
) RETURNS TABLE (
    id TEXT, lease_token TEXT, priority_rank SMALLINT, due DOUBLE PRECISION, task TEXT,
    queue TEXT, created DOUBLE PRECISION, ended DOUBLE PRECISION, data JSONB,
    retry_at DOUBLE PRECISION
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_paused TEXT[];
    v_queue_limits JSONB;
    v_held JSONB := '{}';
    v_count INTEGER := 0;
    v_scanned INTEGER := 0;
    v_retry DOUBLE PRECISION;
    v_wait DOUBLE PRECISION;
    v_starts DOUBLE PRECISION[];
    v_keys TEXT[];
    v_specs JSONB[];
    v_k INTEGER;
    v_n INTEGER;
    v_per DOUBLE PRECISION;
    v_m INTEGER;
    v_held_ids TEXT[] := '{}';
    v_held_at DOUBLE PRECISION[] := '{}';
    cand RECORD;
BEGIN
    SELECT coalesce(array_agg(s.name) FILTER (WHERE s.paused), '{}'),
           coalesce(jsonb_object_agg(s.name, jsonb_build_array(s.rate_count, s.rate_per))
                    FILTER (WHERE s.rate_count IS NOT NULL), '{}')
    INTO v_paused, v_queue_limits FROM queue_settings AS s;

    IF p_task_limits = '{}'::jsonb AND v_queue_limits = '{}'::jsonb THEN
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM runs AS r
            WHERE r.state = 'queued'
              AND (r.execute_after IS NULL OR r.execute_after <= p_now)
              AND (p_queues IS NULL OR r.queue = ANY(p_queues))
              AND NOT (r.queue = ANY(v_paused))
            ORDER BY r.priority_rank, r.due, r.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ), upd AS (
            UPDATE runs AS r
            SET state = 'running', worker = p_worker, lease_token = p_token || r.id,
                lease_expires = p_expires, created = COALESCE(r.created, p_now),
                data = r.data || jsonb_build_object('state', 'running', 'worker', p_worker)
                       || CASE WHEN r.data -> 'start' IS NULL OR r.data -> 'start' = 'null'::jsonb
                               THEN jsonb_build_object('start', p_start) ELSE '{}'::jsonb END
            FROM picked
            WHERE r.id = picked.id
            RETURNING r.id, r.lease_token, r.priority_rank, r.due, r.task, r.queue, r.created,
                      r.ended, r.data
        )
        SELECT upd.id, upd.lease_token, upd.priority_rank, upd.due, upd.task, upd.queue,
               upd.created, upd.ended, upd.data, NULL::DOUBLE PRECISION
        FROM upd;
        RETURN;
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended(current_schema() || ':rate-windows', 0));
    FOR cand IN
        SELECT r.id, r.task, r.queue FROM runs AS r
        WHERE r.state = 'queued'
          AND (r.execute_after IS NULL OR r.execute_after <= p_now)
          AND (p_queues IS NULL OR r.queue = ANY(p_queues))
          AND NOT (r.queue = ANY(v_paused))
        ORDER BY r.priority_rank, r.due, r.id
        LIMIT 200  -- then the worker claims again at once (retry_at = now)
        FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN v_count >= p_limit;
        v_scanned := v_scanned + 1;
        v_keys := '{}';
        v_specs := '{}';
        IF p_task_limits ? cand.task THEN
            v_keys := v_keys || ('task:' || cand.task);
            v_specs := v_specs || (p_task_limits -> cand.task);
        END IF;
        IF v_queue_limits ? cand.queue THEN
            v_keys := v_keys || ('queue:' || cand.queue);
            v_specs := v_specs || (v_queue_limits -> cand.queue);
        END IF;
        v_wait := NULL;
        FOR i IN 1 .. coalesce(array_length(v_keys, 1), 0) LOOP
            v_n := (v_specs[i] ->> 0)::INTEGER;
            v_per := (v_specs[i] ->> 1)::DOUBLE PRECISION;
            SELECT ARRAY(SELECT x FROM unnest(w.starts) AS x WHERE x > p_now - v_per ORDER BY x)
            INTO v_starts FROM rate_windows AS w WHERE w.key = v_keys[i];
            v_m := coalesce(array_length(v_starts, 1), 0);
            IF v_m >= v_n THEN
                v_k := coalesce((v_held ->> v_keys[i])::INTEGER, 0);
                v_held := v_held || jsonb_build_object(v_keys[i], v_k + 1);
                v_wait := greatest(v_wait,
                    v_starts[v_m - v_n + (v_k % v_n) + 1] + v_per * (v_k / v_n + 1));
            END IF;
        END LOOP;
        IF v_wait IS NOT NULL THEN
            v_retry := least(v_retry, v_wait);
            v_held_ids := v_held_ids || cand.id;
            v_held_at := v_held_at || v_wait;
            CONTINUE;
        END IF;
        FOR i IN 1 .. coalesce(array_length(v_keys, 1), 0) LOOP
            v_per := (v_specs[i] ->> 1)::DOUBLE PRECISION;
            INSERT INTO rate_windows AS w (key, starts) VALUES (v_keys[i], ARRAY[p_now])
            ON CONFLICT (key) DO UPDATE SET starts = ARRAY(
                SELECT x FROM unnest(w.starts) AS x WHERE x > p_now - v_per ORDER BY x
            ) || p_now;
        END LOOP;
        v_count := v_count + 1;
        RETURN QUERY
        UPDATE runs AS r
        SET state = 'running', worker = p_worker, lease_token = p_token || r.id,
            lease_expires = p_expires, created = COALESCE(r.created, p_now),
            data = r.data || jsonb_build_object('state', 'running', 'worker', p_worker)
                   || CASE WHEN r.data -> 'start' IS NULL OR r.data -> 'start' = 'null'::jsonb
                           THEN jsonb_build_object('start', p_start) ELSE '{}'::jsonb END
        WHERE r.id = cand.id
        RETURNING r.id, r.lease_token, r.priority_rank, r.due, r.task, r.queue, r.created,
                  r.ended, r.data, NULL::DOUBLE PRECISION;
    END LOOP;
    -- the runs held back, in one statement: the claim holds the rate lock, keep it short
    UPDATE runs AS r
    SET execute_after = h.at, due = h.at,
        data = jsonb_set(r.data, '{execute_after}', to_jsonb(to_char(
            to_timestamp(h.at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    FROM unnest(v_held_ids, v_held_at) AS h(id, at)
    WHERE r.id = h.id;
    IF v_scanned >= 200 AND v_count < p_limit THEN
        v_retry := p_now;  -- more may be due behind the runs held back: claim again
    END IF;
    IF v_retry IS NOT NULL THEN
        RETURN QUERY SELECT NULL::TEXT, NULL::TEXT, NULL::SMALLINT, NULL::DOUBLE PRECISION,
                            NULL::TEXT, NULL::TEXT, NULL::DOUBLE PRECISION,
                            NULL::DOUBLE PRECISION, NULL::JSONB, v_retry;
    END IF;
END;
$$;

-- Maintained counts: runs per (task, queue, state, priority), kept by statement triggers in
-- the same transaction as every change to `runs`, so queue depth and state counts cost one
-- small read however many runs the table holds. Exact by construction: no write path can
-- skip a trigger. Each backend adds to its own shard row (pid mod 16): a counter row is
-- locked until its transaction commits, and one shared row would serialise every producer
-- and worker of a queue behind each other's commits. Readers sum the shards.
CREATE TABLE run_counts (
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    priority_rank SMALLINT NOT NULL,
    shard SMALLINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (task, queue, state, priority_rank, shard)
) WITH (fillfactor = 50, autovacuum_vacuum_threshold = 200, autovacuum_vacuum_scale_factor = 0);

-- One statement's net change per counter: rows that moved in and out of a key cancel, so a
-- heartbeat (no counted column changes) writes nothing. Keys are written in sorted order so
-- two backends sharing a shard lock them in the same order.
CREATE FUNCTION run_counts_after_insert() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO run_counts AS c (task, queue, state, priority_rank, shard, n)
    SELECT task, queue, state, priority_rank, pg_backend_pid() % 16, count(*)
    FROM new_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (task, queue, state, priority_rank, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION run_counts_after_update() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO run_counts AS c (task, queue, state, priority_rank, shard, n)
    SELECT task, queue, state, priority_rank, pg_backend_pid() % 16, sum(d)
    FROM (
        SELECT task, queue, state, priority_rank, 1 AS d FROM new_rows
        UNION ALL
        SELECT task, queue, state, priority_rank, -1 AS d FROM old_rows
    ) AS moved
    GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (task, queue, state, priority_rank, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION run_counts_after_delete() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO run_counts AS c (task, queue, state, priority_rank, shard, n)
    SELECT task, queue, state, priority_rank, pg_backend_pid() % 16, -count(*)
    FROM old_rows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (task, queue, state, priority_rank, shard) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER run_counts_insert AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION run_counts_after_insert();
CREATE TRIGGER run_counts_update AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION run_counts_after_update();
CREATE TRIGGER run_counts_delete AFTER DELETE ON runs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION run_counts_after_delete();
