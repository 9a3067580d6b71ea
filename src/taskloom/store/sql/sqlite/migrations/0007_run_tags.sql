-- Tags, one row per (tag, run): a tag filter walks (tag, id) newest first instead of reading
-- every record. The store writes a run's tags into `runs.tags` (a JSON array, NULL for none)
-- with the record, and triggers keep `run_tags` from that column: an untagged run costs them
-- a NULL test, and claims and heartbeats, which rewrite `data` but never `tags`, nothing.
ALTER TABLE runs ADD COLUMN tags TEXT;

UPDATE runs SET tags = json_extract(data, '$.tags')
WHERE json_valid(data) AND json_type(data, '$.tags') = 'array'
  AND json_array_length(data, '$.tags') > 0;

CREATE TABLE run_tags (
    tag TEXT NOT NULL,
    id  TEXT NOT NULL,
    PRIMARY KEY (tag, id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO run_tags (tag, id)
SELECT j.value, r.id FROM runs AS r, json_each(r.tags) AS j
WHERE r.tags IS NOT NULL AND j.type = 'text';

CREATE TRIGGER run_tags_insert AFTER INSERT ON runs WHEN NEW.tags IS NOT NULL
BEGIN
    INSERT OR IGNORE INTO run_tags (tag, id)
    SELECT value, NEW.id FROM json_each(NEW.tags) WHERE type = 'text';
END;

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
