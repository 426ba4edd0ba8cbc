-- The `x-request-id` of the request that created the job, so one id ties the API's request
-- log to the worker's logs for the job.
ALTER TABLE jobs ADD COLUMN request_id TEXT;

-- `GET /jobs` lists newest first with keyset pagination on (created_at, id); these indexes
-- serve it with and without a status filter, however many jobs the table holds.
CREATE INDEX jobs_newest_first ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_status_newest_first ON jobs (status, created_at DESC, id DESC);
