-- Idempotency: a client-chosen key maps to one job (per retention window) and remembers a
-- hash of the request, so the same key with a different body can be refused.
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Retention deletes finished jobs by age; queued and running jobs have no finished_at.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
