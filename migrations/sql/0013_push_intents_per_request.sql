-- Revision 0013: one push intent per push request instead of one per job.
--
-- Each intent was a row and an index entry written before every job's push and deleted
-- after it (a seventh of PostgreSQL's work per job end to end). A row now holds one
-- request's jobs: where they went, where they came from, and their ids. The relay
-- forgets it by id.

ALTER TABLE pgpulse.push_intents RENAME TO push_intents_per_job;
ALTER TABLE pgpulse.push_intents_per_job
    RENAME CONSTRAINT push_intents_pkey TO push_intents_per_job_pkey;

CREATE TABLE pgpulse.push_intents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region      text NOT NULL,                    -- where the jobs were pushed
    from_region text NOT NULL,                    -- the outbox region they were claimed from
    job_ids     uuid[] NOT NULL
                CONSTRAINT push_intents_job_ids_listed CHECK (
                    cardinality(job_ids) >= 1 AND array_position(job_ids, NULL) IS NULL),
    expires_at  timestamptz NOT NULL,             -- the latest of its jobs': kept no longer
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- random ids do not compress: storing them as they are saves the attempt on every request
ALTER TABLE pgpulse.push_intents ALTER COLUMN job_ids SET STORAGE EXTERNAL;

-- an intent of a job still waiting came from the job's region (jobs with intents never
-- move); one whose job is gone says the region it went to
INSERT INTO pgpulse.push_intents (region, from_region, job_ids, expires_at, created_at)
SELECT i.region, coalesce(o.region, i.region), array_agg(i.job_id ORDER BY i.job_id),
       max(i.expires_at), min(i.created_at)
  FROM pgpulse.push_intents_per_job i
  LEFT JOIN pgpulse.outbox o ON o.job_id = i.job_id
 GROUP BY i.region, coalesce(o.region, i.region);

DROP TABLE pgpulse.push_intents_per_job;
