-- An AFTER INSERT trigger on `runs` made every insert cost about three times as much (each of
-- the table's indexes is then written without the seek the insert already did: ~100 µs a row
-- against ~35 µs on this project's machine). The store counts and tags the rows it inserts
-- itself, in the same transaction (sqlite.py: _inserted); updates and deletes keep their
-- triggers, which cost nothing of the kind.
DROP TRIGGER run_counts_insert;
DROP TRIGGER run_tags_insert;
