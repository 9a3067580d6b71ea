-- Named queries of the PostgreSQL store, read once by postgres.py.
-- Each query starts with a line `-- name --`; the comment lines after it say what it does.
-- Tables are unqualified: every pooled connection has search_path set to the store's schema.
-- Writing queries take the NOTIFY channel (<schema>_events) as their last parameter; a
-- notification is delivered only if its transaction commits, so a wake-up never precedes the data.

-- create_schema_version --
-- Bootstrap of the migration ledger (also part of schema.sql).
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- migration_lock --
-- Serialises migrations of one schema across processes until the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended($1, 0));

-- applied_versions --
SELECT version FROM schema_version;

-- record_version --
INSERT INTO schema_version (version, name) VALUES ($1, $2);

-- enqueue --
-- Insert a batch (one array per column, in input order); a row whose id or active dedup key
-- exists is skipped (also against earlier rows of the same batch). Returns the inserted ids.
WITH ins AS (
    INSERT INTO runs (id, task, state, queue, priority_rank, due, execute_after, dedup_key,
                      worker, parent_id, root_run_id, created, ended, tags, data)
    SELECT b.id, b.task, b.state, b.queue, b.priority_rank, b.due, b.execute_after, b.dedup_key,
           b.worker, b.parent_id, b.root_run_id, b.created, b.ended,
           ARRAY(SELECT jsonb_array_elements_text(b.data -> 'tags')), b.data
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::float8[],
                $7::float8[], $8::text[], $9::text[], $10::text[], $11::text[], $12::float8[],
                $13::float8[], $14::jsonb[])
         WITH ORDINALITY AS b(id, task, state, queue, priority_rank, due, execute_after,
                              dedup_key, worker, parent_id, root_run_id, created, ended, data, ord)
    ORDER BY b.ord
    ON CONFLICT DO NOTHING
    RETURNING id
), notified AS (
    SELECT pg_notify($15, 'queue') WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT array_agg(ins.id) AS inserted, (SELECT count(*) FROM notified) AS notified FROM ins;

-- enqueue_one --
-- `enqueue` for one run, the per-call path: the same insert from plain parameters ($14 the
-- record), which costs the server less than unnesting fourteen one-element arrays.
WITH ins AS (
    INSERT INTO runs (id, task, state, queue, priority_rank, due, execute_after, dedup_key,
                      worker, parent_id, root_run_id, created, ended, tags, data)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
            ARRAY(SELECT jsonb_array_elements_text($14::jsonb -> 'tags')), $14::jsonb)
    ON CONFLICT DO NOTHING
    RETURNING id
), notified AS (
    SELECT pg_notify($15, 'queue') WHERE EXISTS (SELECT 1 FROM ins)
)
SELECT array_agg(ins.id) AS inserted, (SELECT count(*) FROM notified) AS notified FROM ins;

-- existing_runs --
-- The runs that made enqueue skip a row: same id, or the active holder of a dedup key
-- (if that run finished meanwhile, the newest run with the key).
SELECT DISTINCT ON (kind, match) kind, match, id, task, queue, priority_rank, created, ended,
       data
FROM (
    SELECT 'id' AS kind, id AS match, true AS active, * FROM runs
    WHERE id = ANY($1::text[])
    UNION ALL
    SELECT 'dedup', dedup_key, state IN ('init', 'queued', 'running'), * FROM runs
    WHERE dedup_key = ANY($2::text[])
) AS found
ORDER BY kind, match, active DESC, id DESC;

-- claim --
-- Lease up to $3 due queued runs in claim order (see claim_runs in schema.sql: paused queues
-- skipped, start-rate limits applied); $7 is this claim's random token prefix, $8 the task
-- limits as {task: [count, per seconds]}.
SELECT * FROM claim_runs($1, $2, $3, $4, $5, $6, $7, $8);

-- claimed_by --
-- The runs the claim made with $1 still holds: how a retry finds what a lost attempt took.
SELECT id, lease_token, priority_rank, due, task, queue, created, ended, data FROM runs
WHERE state = 'running' AND lease_token = $1 || id;

-- heartbeat --
-- Extend the leases still held (and every slot those runs hold); store progress where given.
WITH b AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::float8[], $5::text[])
        AS b(id, token, has_progress, progress, note)
), upd AS (
    UPDATE runs AS r
    SET lease_expires = $6,
        data = CASE WHEN b.has_progress
                    THEN r.data || jsonb_build_object('progress', b.progress, 'progress_note', b.note)
                    ELSE r.data END
    FROM b
    WHERE r.id = b.id AND r.lease_token = b.token AND r.state = 'running'
    RETURNING r.id, b.token, r.data -> 'cancel_requested' = 'true'::jsonb AS cancel_requested
), extended AS (
    UPDATE slots SET expires = $6 WHERE holder IN (SELECT id FROM upd)
)
SELECT id || ':' || token AS lease, cancel_requested FROM upd;

-- finish --
-- Write each new record whose lease is still held. A stored cancel request survives unless the
-- run is done. The lease token stays on the row, so with $15 (a retry after the reply of a
-- first attempt was lost) a row that this lease already moved out of `running` counts as
-- finished: only finish does that and keeps the token. It is reported, not written again.
WITH b AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int2[],
                         $6::float8[], $7::float8[], $8::text[], $9::text[], $10::text[],
                         $11::float8[], $12::float8[], $13::bool[], $14::jsonb[])
        AS b(id, token, state, queue, priority_rank, due, execute_after, worker, parent_id,
             root_run_id, created, ended, done, data)
), upd AS (
    UPDATE runs AS r
    SET state = b.state, queue = b.queue, priority_rank = b.priority_rank, due = b.due,
        execute_after = b.execute_after, worker = b.worker, parent_id = b.parent_id,
        root_run_id = b.root_run_id, created = b.created, ended = b.ended,
        -- The lease is released; a record still `running` must not pass the fence again.
        lease_token = CASE WHEN b.state = 'running' THEN NULL ELSE r.lease_token END,
        lease_expires = NULL,
        tags = ARRAY(SELECT jsonb_array_elements_text(b.data -> 'tags')),
        data = CASE
            WHEN r.data -> 'cancel_requested' = 'true'::jsonb AND NOT b.done
                THEN jsonb_set(b.data, '{cancel_requested}', 'true'::jsonb)
            WHEN b.data -> 'cancel_requested' = 'true'::jsonb
                THEN jsonb_set(b.data, '{cancel_requested}', 'false'::jsonb)
            ELSE b.data END
    FROM b
    WHERE r.id = b.id AND r.lease_token = b.token AND r.state = 'running'
    RETURNING r.id, r.state, b.token
), landed AS (
    SELECT r.id, b.token FROM b JOIN runs AS r ON r.id = b.id AND r.lease_token = b.token
    WHERE $15::bool AND r.state <> 'running'
), notified AS (
    SELECT pg_notify($16, 'run:' || id) FROM upd
    UNION ALL
    SELECT pg_notify($16, 'queue') WHERE EXISTS (SELECT 1 FROM upd WHERE state = 'queued')
)
-- id:token pairs: a batch may hold a stale and a fresh lease of the same run.
SELECT ARRAY(SELECT id || ':' || token FROM upd UNION ALL SELECT id || ':' || token FROM landed)
           AS finished,
       (SELECT count(*) FROM notified) AS notified;

-- reclaim --
-- Requeue running runs whose lease expired before $1, recording an interrupted attempt.
-- Rows a finishing worker holds right now are skipped; the next pass sees them if still expired.
WITH expired AS (
    SELECT id FROM runs WHERE state = 'running' AND lease_expires < $1
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE runs AS r
    SET state = 'queued', worker = NULL, lease_token = NULL, lease_expires = NULL,
        data = r.data || jsonb_build_object(
            'state', 'queued',
            'worker', NULL::text,
            'attempts', COALESCE(r.data -> 'attempts', '[]'::jsonb) || jsonb_build_array(
                jsonb_build_object(
                    'attempt', r.data -> 'retry_attempt',
                    'state', 'interrupted',
                    'start', r.data -> 'start',
                    'end', $2::text,
                    'worker', r.data -> 'worker',
                    'error', jsonb_build_object(
                        'type', 'LeaseExpired', 'message', 'worker lost its lease'))))
    FROM expired
    WHERE r.id = expired.id
    RETURNING r.id, r.task, r.queue, r.priority_rank, r.created, r.ended, r.data
), notified AS (
    SELECT pg_notify($3, 'run:' || id) FROM upd
    UNION ALL
    SELECT pg_notify($3, 'queue') WHERE EXISTS (SELECT 1 FROM upd)
)
SELECT id, task, queue, priority_rank, created, ended, data,
       (SELECT count(*) FROM notified) AS notified
FROM upd ORDER BY id;

-- release_dedup --
-- Before `save` makes a run the active holder of a dedup key, take the key from any other
-- active run (the memory store's last-writer-wins), so the unique index cannot refuse it.
UPDATE runs SET dedup_key = NULL
WHERE dedup_key = $1 AND id <> $2 AND state IN ('init', 'queued', 'running');

-- hold --
-- Lease a record `save` just wrote (a run executed outside the queue).
UPDATE runs SET lease_token = $2, lease_expires = $3 WHERE id = $1;

-- save --
-- Insert or replace one record unconditionally; any lease on it is dropped.
WITH saved AS (
    INSERT INTO runs (id, task, state, queue, priority_rank, due, execute_after, dedup_key,
                      worker, parent_id, root_run_id, created, ended, tags, data)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
            ARRAY(SELECT jsonb_array_elements_text($14::jsonb -> 'tags')), $14)
    ON CONFLICT (id) DO UPDATE
    SET task = EXCLUDED.task, state = EXCLUDED.state, queue = EXCLUDED.queue,
        priority_rank = EXCLUDED.priority_rank, due = EXCLUDED.due,
        execute_after = EXCLUDED.execute_after, dedup_key = EXCLUDED.dedup_key,
        worker = EXCLUDED.worker, parent_id = EXCLUDED.parent_id,
        root_run_id = EXCLUDED.root_run_id, created = EXCLUDED.created,
        ended = EXCLUDED.ended, tags = EXCLUDED.tags, data = EXCLUDED.data,
        lease_token = NULL, lease_expires = NULL
    RETURNING id, state
), notified AS (
    SELECT pg_notify($15, 'run:' || id) FROM saved
    UNION ALL
    SELECT pg_notify($15, 'queue') FROM saved WHERE state = 'queued'
)
SELECT count(*) FROM notified;

-- get --
SELECT id, task, queue, priority_rank, created, ended, data FROM runs WHERE id = $1;

-- counts --
-- The maintained counters, their shards summed.
SELECT task, queue, state, priority_rank, sum(n)::bigint AS n FROM run_counts
GROUP BY task, queue, state, priority_rank HAVING sum(n) > 0;

-- request_cancel --
-- A queued/init run is aborted at once; a running one is flagged for its worker's next beat.
WITH upd AS (
    UPDATE runs
    SET state = CASE WHEN state IN ('init', 'queued') THEN 'aborted' ELSE state END,
        ended = CASE WHEN state IN ('init', 'queued') THEN $2 ELSE ended END,
        data = CASE
            WHEN state IN ('init', 'queued') THEN data || jsonb_build_object(
                'state', 'aborted', 'end', $3::text,
                'error', jsonb_build_object(
                    'type', 'CancelledRunError', 'message', 'cancelled before it ran'))
            WHEN state = 'running' THEN data || '{"cancel_requested": true}'::jsonb
            ELSE data END
    WHERE id = $1
    RETURNING id, task, queue, priority_rank, created, ended, data
), notified AS (
    SELECT pg_notify($4, 'run:' || id) FROM upd
    UNION ALL  -- workers beat now instead of at their next beat
    SELECT pg_notify($4, 'cancel') FROM upd WHERE data -> 'cancel_requested' = 'true'::jsonb
)
SELECT id, task, queue, priority_rank, created, ended, data,
       (SELECT count(*) FROM notified) AS notified
FROM upd;

-- purge --
-- Delete up to $5 (NULL: all) finished runs that ended before $1, only of task $2 and in state
-- $4 when not NULL, never of the tasks in $3. A purged root takes its finished descendants,
-- whatever their age; every purged run takes its `runlog:<id>` entry. Returns how many went.
WITH picked AS (
    SELECT id, parent_id FROM runs
    WHERE state IN ('success', 'failure', 'aborted', 'rate_limited') AND ended < $1
      AND ($2::text IS NULL OR task = $2)
      AND NOT (task = ANY($3::text[]))
      AND ($4::text IS NULL OR state = $4)
    -- oldest first, which walks runs_ended_idx: without an order the planner may scan the
    -- heap from its start, through every row earlier batches deleted (quadratic in a backlog)
    ORDER BY ended
    LIMIT $5::bigint
    FOR UPDATE SKIP LOCKED
), family AS (
    SELECT id FROM picked
    UNION
    -- each root's runs through runs_root_idx alone (OFFSET 0 keeps the subquery apart): joined
    -- plainly, the planner may AND in the state index, which holds every finished run
    SELECT r.id FROM picked AS p CROSS JOIN LATERAL (
        SELECT id, state FROM runs WHERE root_run_id = p.id OFFSET 0
    ) AS r
    WHERE p.parent_id IS NULL AND r.state IN ('success', 'failure', 'aborted', 'rate_limited')
), logs AS (
    DELETE FROM kv WHERE key IN (SELECT 'runlog:' || id FROM family)
), gone AS (
    DELETE FROM runs WHERE id IN (SELECT id FROM family)
    RETURNING 1
)
SELECT count(*) FROM gone;

-- slot_lock --
-- Held until commit: counting the live holders and inserting must not interleave.
SELECT pg_advisory_xact_lock(hashtextextended($1, 0));

-- acquire_slot --
-- Take (or renew) a slot if the holder already has a live one or fewer than $4 others do;
-- expired slots of other holders are dropped on the way.
WITH gone AS (
    DELETE FROM slots WHERE name = $1 AND holder <> $2 AND expires < $3
)
INSERT INTO slots (name, holder, expires)
SELECT $1, $2, $3::float8 + $5::float8
WHERE EXISTS (SELECT 1 FROM slots WHERE name = $1 AND holder = $2 AND expires >= $3)
   OR (SELECT count(*) FROM slots WHERE name = $1 AND holder <> $2 AND expires >= $3) < $4
ON CONFLICT (name, holder) DO UPDATE SET expires = EXCLUDED.expires
RETURNING true;

-- release_slot --
DELETE FROM slots WHERE name = $1 AND holder = $2;

-- acquire_lock --
-- Take the lock if it is free, expired, or already ours (renewal), in one atomic upsert.
INSERT INTO locks (name, holder, expires) VALUES ($1, $2, $3::float8 + $4::float8)
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
WHERE locks.holder = EXCLUDED.holder OR locks.expires < $3
RETURNING true;

-- release_lock --
DELETE FROM locks WHERE name = $1 AND holder = $2;

-- kv_get --
SELECT value FROM kv WHERE key = $1 AND (expires IS NULL OR expires >= $2);

-- kv_set --
INSERT INTO kv (key, value, expires) VALUES ($1, $2, $3)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires;

-- kv_delete --
DELETE FROM kv WHERE key = $1;

-- worker_beat --
INSERT INTO workers (worker, last_seen, expires, info) VALUES ($1, $2, $3, $4)
ON CONFLICT (worker) DO UPDATE
SET last_seen = EXCLUDED.last_seen, expires = EXCLUDED.expires, info = EXCLUDED.info;

-- worker_leave --
DELETE FROM workers WHERE worker = $1;

-- workers --
SELECT worker, last_seen, info FROM workers WHERE expires >= $1 ORDER BY worker;

-- ping --
SELECT 1;

-- autovacuum_on --
-- Whether the server vacuums on its own (both settings are needed).
SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on';

-- set_queue_paused --
-- Pause or resume a queue; a resume wakes every worker.
WITH upsert AS (
    INSERT INTO queue_settings (name, paused) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
)
SELECT pg_notify($3, 'queue') WHERE NOT $2;

-- set_queue_rate_limit --
WITH upsert AS (
    INSERT INTO queue_settings (name, rate_count, rate_per) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET rate_count = EXCLUDED.rate_count, rate_per = EXCLUDED.rate_per
)
SELECT pg_notify($4, 'queue');

-- queue_settings --
SELECT name, paused, rate_count, rate_per FROM queue_settings;

-- queue_stats --
-- Queued runs by queue and priority from the counters; the oldest queued time of each is one
-- seek of runs_queued_idx.
SELECT c.queue, c.priority_rank, c.n, (
    SELECT min(created) FROM runs
    WHERE state = 'queued' AND queue = c.queue AND priority_rank = c.priority_rank
) AS oldest
FROM (
    SELECT queue, priority_rank, sum(n)::bigint AS n FROM run_counts WHERE state = 'queued'
    GROUP BY queue, priority_rank HAVING sum(n) > 0
) AS c;

-- put_schedule --
WITH upsert AS (
    INSERT INTO schedules (name, data) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data
)
SELECT pg_notify($3, 'schedules');

-- delete_schedule --
WITH gone AS (
    DELETE FROM schedules WHERE name = $1 RETURNING name
), notified AS (
    SELECT pg_notify($2, 'schedules')
)
SELECT (SELECT count(*) FROM gone) AS n, (SELECT count(*) FROM notified) AS notified;

-- stored_schedules --
SELECT name, data FROM schedules;
