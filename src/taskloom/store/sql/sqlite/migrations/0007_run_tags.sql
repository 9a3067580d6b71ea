-- Tags, one row per (tag, run), kept by triggers from the record's `tags`: a tag filter walks
-- (tag, id) newest first instead of reading every record. A record that is not valid JSON
-- (damaged) has no tags here; the CASE keeps such a row's writes from failing.
CREATE TABLE run_tags (
    tag TEXT NOT NULL,
    id  TEXT NOT NULL,
    PRIMARY KEY (tag, id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO run_tags (tag, id)
SELECT j.value, r.id FROM runs AS r, json_each(r.data, '$.tags') AS j
WHERE json_valid(r.data) AND j.type = 'text';

CREATE TRIGGER run_tags_insert AFTER INSERT ON runs
WHEN CASE WHEN json_valid(NEW.data) THEN json_type(NEW.data, '$.tags') = 'array' END
BEGIN
    INSERT OR IGNORE INTO run_tags (tag, id)
    SELECT value, NEW.id FROM json_each(NEW.data, '$.tags') WHERE type = 'text';
END;

CREATE TRIGGER run_tags_delete AFTER DELETE ON runs
WHEN CASE WHEN json_valid(OLD.data) THEN json_type(OLD.data, '$.tags') = 'array' END
BEGIN
    DELETE FROM run_tags WHERE id = OLD.id
      AND tag IN (SELECT value FROM json_each(OLD.data, '$.tags'));
END;

-- Claims and heartbeats rewrite `data` but keep its tags: the WHEN compares them first.
CREATE TRIGGER run_tags_update AFTER UPDATE OF data ON runs
WHEN (CASE WHEN json_valid(OLD.data) THEN json_extract(OLD.data, '$.tags') END)
  IS NOT (CASE WHEN json_valid(NEW.data) THEN json_extract(NEW.data, '$.tags') END)
BEGIN
    DELETE FROM run_tags WHERE id = OLD.id;
    INSERT OR IGNORE INTO run_tags (tag, id)
    SELECT value, NEW.id FROM json_each(NEW.data, '$.tags')
    WHERE json_valid(NEW.data) AND type = 'text';
END;
