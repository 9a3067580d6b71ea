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

-- The triggers' lock on `runs` holds writers off until this commits: the count is exact.
INSERT INTO run_counts (task, queue, state, priority_rank, shard, n)
SELECT task, queue, state, priority_rank, 0, count(*) FROM runs GROUP BY 1, 2, 3, 4;
