-- Queue control: paused queues and start-rate limits, read by every claim, and schedules
-- added at run time.

-- Stored settings per queue: paused, and an optional start-rate limit (`rate_count` starts
-- per `rate_per` seconds).
CREATE TABLE queues (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    rate_count INTEGER,
    rate_per   REAL
) WITHOUT ROWID;

-- Sliding logs of start times, one row per limited key (`task:<name>`, `queue:<name>`):
-- `starts` is a JSON array of the start times still inside the window, oldest first.
CREATE TABLE rate_windows (
    key    TEXT PRIMARY KEY,
    starts TEXT NOT NULL
) WITHOUT ROWID;

-- Schedules added at run time; `data` is the definition as JSON.
CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    data BLOB NOT NULL
) WITHOUT ROWID;
