-- Data at scale: every listing the CLI, API and dashboard make has an index that serves it
-- newest first, and the runs table is tuned for a queue's churn.

-- Listings filter on one column and read `ORDER BY id DESC LIMIT n` (the cursor is `id <`).
CREATE INDEX runs_state_idx ON runs (state, id);
CREATE INDEX runs_queue_idx ON runs (queue, id);
CREATE INDEX runs_created_idx ON runs (created);
CREATE INDEX runs_tags_idx ON runs USING gin (tags);
DROP INDEX runs_parent_idx;
CREATE INDEX runs_parent_idx ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
DROP INDEX runs_root_idx;
CREATE INDEX runs_root_idx ON runs (root_run_id, id);
-- Queue depth per queue and priority, and the oldest queued time: an index-only read of the
-- queued runs, never of the finished ones.
CREATE INDEX runs_queued_idx ON runs (queue, priority_rank, created) WHERE state = 'queued';
-- Reclaim reads the running runs. Keyed on id, not lease_expires, so a heartbeat changes no
-- indexed column and its update is HOT (heap-only, no new index entries).
DROP INDEX runs_lease_idx;
CREATE INDEX runs_running_idx ON runs (id) WHERE state = 'running';
-- Every run is updated a few times within seconds of its insert: room on the page keeps
-- those updates HOT, and vacuum runs after 2% of the rows changed instead of the default 20%
-- (claims otherwise walk ever more dead entries of the claim index).
ALTER TABLE runs SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
