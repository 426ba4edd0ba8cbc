-- What a running job printed, in the chunks its worker shipped while it ran (at most a few
-- writes a second per job, within the output caps), for `GET /jobs/<id>/events`. `seq` rises
-- through a job's life, across attempts. A job's chunks are deleted with the job.
CREATE TABLE job_output (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- SQLite enforces foreign keys only when each connection asks; a trigger needs no asking.
CREATE TRIGGER job_output_goes_with_its_job AFTER DELETE ON jobs
BEGIN
    DELETE FROM job_output WHERE job_id = old.id;
END;
