-- The jobs table: one row per submitted script, from queued to a terminal status.
-- Timestamps are fixed-width UTC text written by the service ("2026-01-02T03:04:05.123456Z"),
-- so string order is time order.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL CHECK (status IN
                          ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    script            TEXT NOT NULL,
    timeout_ms        INTEGER NOT NULL,
    memory_mb         INTEGER NOT NULL,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    worker_id         TEXT,
    attempt           INTEGER NOT NULL DEFAULT 0,
    lease_expires_at  TEXT,
    result            TEXT,
    error             TEXT,
    error_kind        TEXT,
    error_line        INTEGER,
    error_column      INTEGER,
    stdout            TEXT,
    stdout_truncated  INTEGER,
    stderr            TEXT,
    stderr_truncated  INTEGER,
    exit_code         INTEGER,
    signal            TEXT,
    wall_ms           INTEGER,
    cpu_ms            INTEGER,
    peak_memory_bytes INTEGER
);

-- Claiming reads only queued rows, oldest first; a partial index keeps that cheap however
-- many finished jobs the table holds.
CREATE INDEX jobs_queued_by_age ON jobs (created_at) WHERE status = 'queued';

-- The lease reaper scans running jobs by lease deadline.
CREATE INDEX jobs_running_by_lease ON jobs (lease_expires_at) WHERE status = 'running';
