-- Revision 0008: what the relay needs to lose nothing on the way to the queues (issue 9):
-- dead letters keep allow_fallback, pushes under way are recorded before they happen, and
-- region health is agreed from every live relay's observations.

ALTER TABLE pgpulse.dead_letters ADD COLUMN allow_fallback boolean NOT NULL DEFAULT true;

CREATE TABLE pgpulse.push_intents (
    job_id      uuid PRIMARY KEY,
    region      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgpulse.region_observations (
    region      text NOT NULL,
    relay       text NOT NULL,
    healthy     boolean NOT NULL,
    observed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT region_observations_one_per_relay PRIMARY KEY (region, relay)
);
