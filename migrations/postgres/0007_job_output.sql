-- What a running job printed, in the chunks its worker shipped while it ran (at most a few
-- writes a second per job, within the output caps), for `GET /jobs/<id>/events`. `seq` rises
-- through a job's life, across attempts. A job's chunks are deleted with the job.
CREATE TABLE job_output (
    job_id UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq    BIGINT NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
    text   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
