-- Revision 0013 down: one push intent per job again (the latest intent of a job wins).

ALTER TABLE pgpulse.push_intents RENAME TO push_intents_per_request;
ALTER TABLE pgpulse.push_intents_per_request
    RENAME CONSTRAINT push_intents_pkey TO push_intents_per_request_pkey;

CREATE TABLE pgpulse.push_intents (
    job_id      uuid PRIMARY KEY,
    region      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO pgpulse.push_intents (job_id, region, expires_at, created_at)
SELECT DISTINCT ON (u.job_id) u.job_id, i.region, i.expires_at, i.created_at
  FROM pgpulse.push_intents_per_request i, unnest(i.job_ids) u(job_id)
 ORDER BY u.job_id, i.id DESC;

DROP TABLE pgpulse.push_intents_per_request;
