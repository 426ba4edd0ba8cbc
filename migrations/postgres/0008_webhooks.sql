-- Webhooks: a job whose request named one is its own outbox entry. Once the job is terminal,
-- API processes claim it (`webhook_locked_until`), POST the job to `webhook_url`, and record
-- the delivery; failures are retried at `webhook_next_at` until the retry period ends.
-- `webhook_state`: 'pending', 'delivered' or 'failed' (given up); NULL without a webhook.
ALTER TABLE jobs ADD COLUMN webhook_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_state TEXT;
ALTER TABLE jobs ADD COLUMN webhook_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN webhook_next_at TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN webhook_locked_until TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN webhook_last_error TEXT;
ALTER TABLE jobs ADD COLUMN webhook_delivered_at TIMESTAMPTZ;

CREATE INDEX jobs_webhooks_due ON jobs (webhook_next_at) WHERE webhook_state = 'pending';
