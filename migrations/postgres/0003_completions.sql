-- How many write-backs completed this job: 1 for a finished run, 0 for jobs that never ran
-- to the end (cancelled, worker_lost). Fencing keeps it at most 1; the chaos test checks that.
ALTER TABLE jobs ADD COLUMN completions INTEGER NOT NULL DEFAULT 0;
