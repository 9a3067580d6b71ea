-- A root run is its own root: its `root_run_id` column is left NULL and out of runs_root,
-- which then holds child runs only (about 115 bytes less per root run). Filtering on a root
-- reads `root_run_id = ? OR id = ?`; the record itself still names the root.
UPDATE runs SET root_run_id = NULL WHERE root_run_id = id;
DROP INDEX runs_root;
CREATE INDEX runs_root ON runs (root_run_id, id) WHERE root_run_id IS NOT NULL;
