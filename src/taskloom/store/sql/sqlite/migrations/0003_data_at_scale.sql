-- Data at scale: every listing the CLI, API and dashboard make has an index that serves it
-- newest first (`ORDER BY id DESC LIMIT n`, the cursor is `id <`).
CREATE INDEX runs_queue ON runs (queue, id);
CREATE INDEX runs_created ON runs (created);
