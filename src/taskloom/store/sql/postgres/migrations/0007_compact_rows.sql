-- A finished run at rest, smaller.
-- A root run is its own root: its `root_run_id` column is left NULL and out of runs_root_idx,
-- which then holds child runs only. Filtering on a root reads `root_run_id = $1 OR id = $1`.
UPDATE runs SET root_run_id = NULL WHERE root_run_id = id;
DROP INDEX runs_root_idx;
CREATE INDEX runs_root_idx ON runs (root_run_id, id) WHERE root_run_id IS NOT NULL;
-- A row past ~2 KB (large params or result) has its record compressed inside the row, down
-- toward 128 bytes, instead of moved out to the TOAST table (MAIN: only if the row cannot fit
-- a page), so reading it costs no second lookup; lz4 where the server has it (cheaper than
-- pglz on every read and write). Smaller rows are never compressed: PostgreSQL tries only
-- past its fixed 2 KB threshold, whatever toast_tuple_target says.
ALTER TABLE runs ALTER COLUMN data SET STORAGE MAIN;
ALTER TABLE runs SET (toast_tuple_target = 128);
DO $$
BEGIN
    ALTER TABLE runs ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 unavailable, records stay compressed with pglz: %', SQLERRM;
END $$;
