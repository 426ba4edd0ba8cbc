-- API keys: each tenant is one key. Only a SHA-256 hash of the secret is kept (the secret is
-- shown once, at creation), with a short prefix of it so people can tell keys apart. Quota
-- columns are per-key overrides of the server's defaults; NULL means the default.
CREATE TABLE api_keys (
    id                     UUID PRIMARY KEY,
    name                   TEXT NOT NULL,
    prefix                 TEXT NOT NULL,
    hash                   TEXT NOT NULL UNIQUE,
    admin                  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at             TIMESTAMPTZ NOT NULL,
    revoked_at             TIMESTAMPTZ,
    max_running            INTEGER,
    max_queued             INTEGER,
    submissions_per_minute INTEGER,
    max_timeout_ms         BIGINT,
    max_memory_mb          INTEGER,
    -- The submissions-per-minute token bucket, shared by every API process: tokens left as
    -- of `bucket_at`; refilled on read.
    bucket_tokens          DOUBLE PRECISION,
    bucket_at              TIMESTAMPTZ
);

-- The id of the key that created the job; '' for jobs created with authentication off.
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';

-- Idempotency keys are per tenant: two tenants may use the same key for different jobs.
DROP INDEX jobs_idempotency_key;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A tenant's own `GET /jobs`. With a status filter it walks this index too, skipping the
-- tenant's jobs of other statuses: an index on (owner, status, ...) would serve that better,
-- but every status change of every job would pay for it.
CREATE INDEX jobs_by_owner_newest_first ON jobs (owner, created_at DESC, id DESC);

-- The claim interleaves tenants: it walks the tenants with queued jobs (a skip scan over this
-- index), takes the oldest few of each, and counts each one's running jobs.
CREATE INDEX jobs_queued_by_owner ON jobs (owner, created_at, id) WHERE status = 'queued';
CREATE INDEX jobs_running_by_owner ON jobs (owner) WHERE status = 'running';
