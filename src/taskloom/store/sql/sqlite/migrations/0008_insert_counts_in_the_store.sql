-- An AFTER INSERT trigger on `runs` made every insert cost about 1.7 times as much (a bulk
-- insert of 1,000 runs: about 20 µs a row against 11.4 with the store counting, on this
-- project's machine; each row then runs the trigger program). The store counts and tags the
-- rows it inserts itself, in the same transaction (sqlite.py: _inserted); updates and deletes
-- keep their triggers.
DROP TRIGGER run_counts_insert;
DROP TRIGGER run_tags_insert;
