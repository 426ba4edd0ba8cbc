-- The jobs table: one row per submitted script, from queued to a terminal status.
CREATE TABLE jobs (
    id                UUID PRIMARY KEY,
    status            TEXT NOT NULL CHECK (status IN
                          ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    script            TEXT NOT NULL,
    timeout_ms        BIGINT NOT NULL,
    memory_mb         INTEGER NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    started_at        TIMESTAMPTZ,
    finished_at       TIMESTAMPTZ,
    worker_id         TEXT,
    attempt           INTEGER NOT NULL DEFAULT 0,
    lease_expires_at  TIMESTAMPTZ,
    -- main()'s return value as JSON text, kept verbatim (a json/jsonb column would re-encode it).
    result            TEXT,
    error             TEXT,
    error_kind        TEXT,
    error_line        INTEGER,
    error_column      INTEGER,
    stdout            TEXT,
    stdout_truncated  BOOLEAN,
    stderr            TEXT,
    stderr_truncated  BOOLEAN,
    exit_code         INTEGER,
    signal            TEXT,
    wall_ms           BIGINT,
    cpu_ms            BIGINT,
    peak_memory_bytes BIGINT
);

-- Claiming reads only queued rows, oldest first; a partial index keeps that cheap however
-- many finished jobs the table holds, and stays small because rows leave it when claimed.
CREATE INDEX jobs_queued_by_age ON jobs (created_at) WHERE status = 'queued';

-- The lease reaper scans running jobs by lease deadline.
CREATE INDEX jobs_running_by_lease ON jobs (lease_expires_at) WHERE status = 'running';
