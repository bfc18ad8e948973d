-- Revision 0004: what the relay needs to lose nothing on the way to the queues (issue 9):
-- dead letters keep allow_fallback, pushes under way are recorded before they happen, and
-- region health is agreed from every live relay's observations.

ALTER TABLE pgpulse.dead_letters ADD COLUMN allow_fallback boolean NOT NULL DEFAULT true;

CREATE TABLE pgpulse.push_intents (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region      text NOT NULL,
    job_ids     uuid[] NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_intents_region ON pgpulse.push_intents (region);
CREATE INDEX push_intents_jobs ON pgpulse.push_intents USING gin (job_ids);

CREATE TABLE pgpulse.region_observations (
    region      text NOT NULL,
    relay       text NOT NULL,
    healthy     boolean NOT NULL,
    observed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT region_observations_one_per_relay PRIMARY KEY (region, relay)
);
