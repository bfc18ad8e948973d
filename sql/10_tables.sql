-- pgpulse schema, part 1 of 8: the schema and its tables.
-- The canonical schema is sql/NN_*.sql applied in name order (relay.resources.schema_sql):
-- what a fresh install holds after `pgpulse migrate`.
-- public.monitors is the product's table (created here on a fresh database, adopted when
-- it exists); everything else pgpulse owns lives in schema pgpulse, Alembic's version
-- table included. pg_cron jobs are installed by sql/cron.sql.

CREATE SCHEMA pgpulse;
COMMENT ON SCHEMA pgpulse IS 'pgpulse scheduler: outbox, dead letters, tick runs and the tick';

-- ===================================================================== tables

-- Regions are rows; each region's Upstash endpoint comes from the relay's environment.
CREATE TABLE pgpulse.regions (
    code               text PRIMARY KEY
                       CONSTRAINT region_code_format CHECK (code ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    enabled            boolean NOT NULL DEFAULT true,
    is_default         boolean NOT NULL DEFAULT false,
    fallback_region    text REFERENCES pgpulse.regions (code) ON UPDATE CASCADE ON DELETE SET NULL
                       CONSTRAINT region_fallback_not_self CHECK (fallback_region <> code),
    healthy            boolean NOT NULL DEFAULT true,      -- written by the relay's breaker
    healthy_changed_at timestamptz NOT NULL DEFAULT now(),
    degraded           boolean NOT NULL DEFAULT false,     -- queue backlog over threshold
    weight             integer NOT NULL DEFAULT 1
                       CONSTRAINT region_weight_0_to_100 CHECK (weight BETWEEN 0 AND 100),
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- written by the relay: the region had workers (heartbeats) and has none now, or they
    -- take no job; routing treats it as unhealthy for monitors that may fall back
    workers_absent     boolean NOT NULL DEFAULT false,
    workers_absent_since timestamptz
);
CREATE UNIQUE INDEX regions_single_default ON pgpulse.regions (is_default) WHERE is_default;

-- The product's monitors (created here on a fresh database; an existing one is adopted). It
-- is the product's: pgpulse reads it through its triggers and never writes, constrains or
-- indexes it. What pgpulse schedules from it lives in pgpulse.schedule.
CREATE TABLE public.monitors (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url                    text NOT NULL,
    method                 text NOT NULL DEFAULT 'GET',
    timeout_ms             integer NOT NULL DEFAULT 10000,
    expected_status        integer[] NOT NULL DEFAULT '{200}',
    check_retries          smallint NOT NULL DEFAULT 1,         -- the worker's own retries
    check_retry_delay_ms   integer NOT NULL DEFAULT 2000,
    check_interval_minutes integer NOT NULL DEFAULT 5,
    is_active              boolean NOT NULL DEFAULT true,
    preferred_region       text,
    allow_fallback         boolean NOT NULL DEFAULT true,        -- false: wait for preferred region
    criticality            text NOT NULL DEFAULT 'normal',
    next_check_at          timestamptz,      -- a change moves the next slot there ("check now")
    last_scheduled_at      timestamptz,      -- kept for the product; pgpulse.monitor_schedule has it
    created_at             timestamptz NOT NULL DEFAULT now(),
    -- NULL: check_interval_minutes; else the interval in seconds (sub-minute checks)
    check_interval_seconds integer,
    -- NULL: one job per slot, routed by preferred_region; else one job per listed region
    check_regions          text[]
);

-- What pgpulse schedules, one narrow row per monitor of the product's table, kept in step by
-- the triggers of sql/30_monitor_triggers.sql when the product's transaction commits. The
-- tick reads and locks only these rows. A row pgpulse cannot schedule (its interval, URL or
-- check out of range) is parked: kept, with the reason, never due.
CREATE TABLE pgpulse.schedule (
    monitor_id             uuid PRIMARY KEY,       -- the product's id, of its type
    is_active              boolean NOT NULL,
    parked                 text,                   -- why it is not scheduled (NULL: it is)
    next_check_at          timestamptz NOT NULL
                           CONSTRAINT schedule_next_check_at_finite CHECK (isfinite(next_check_at)),
    last_scheduled_at      timestamptz,
    check_interval_seconds integer NOT NULL,
    preferred_region       text,
    allow_fallback         boolean NOT NULL,
    criticality            text NOT NULL,
    check_regions          text[],
    check_spec             jsonb NOT NULL          -- the check as workers receive it
);
-- The tick's lookup: only what it may schedule, in due order.
CREATE INDEX schedule_due ON pgpulse.schedule (next_check_at) WHERE is_active AND parked IS NULL;
-- Parked rows are few: counted and listed for every health read.
CREATE INDEX schedule_parked ON pgpulse.schedule (parked) WHERE parked IS NOT NULL;
COMMENT ON TABLE pgpulse.schedule IS
    'pgpulse''s schedule, one row per product monitor; written only by pgpulse';

-- Product writes handed over to be followed a moment later, in the order they were made
-- (seq: one per statement): a bulk INSERT's rows (old_id NULL), and every UPDATE that
-- changed a followed column (its new values, and the old ones the follow compares with).
-- The product's statement pays one plain append per row here instead of pgpulse's checks,
-- phase and schedule row; an UPDATE of up to 500 rows is followed at once, in its statement,
-- from these rows; the rest pgpulse.follow_apply() (the relay, woken by NOTIFY
-- pgpulse_follow, and every tick) follows. The columns are the product's followed ones, of
-- its own types (made from its table), so an append never fails where the product's row did
-- not. No key and no index: an append is all a bulk write pays (REPLICA IDENTITY FULL, for
-- publications).
CREATE SEQUENCE pgpulse.follow_log_seq;
CREATE TABLE pgpulse.follow_log AS
SELECT id, url, method, timeout_ms, expected_status, check_retries, check_retry_delay_ms,
       check_interval_minutes, check_interval_seconds, is_active, preferred_region,
       allow_fallback, criticality, next_check_at, check_regions,
       id AS old_id, check_interval_minutes AS old_check_interval_minutes,
       check_interval_seconds AS old_check_interval_seconds,
       preferred_region AS old_preferred_region, check_regions AS old_check_regions,
       next_check_at AS old_next_check_at
  FROM public.monitors WITH NO DATA;
ALTER TABLE pgpulse.follow_log
    ADD COLUMN logged_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN seq bigint NOT NULL DEFAULT nextval('pgpulse.follow_log_seq'),
    REPLICA IDENTITY FULL;
ALTER SEQUENCE pgpulse.follow_log_seq OWNED BY pgpulse.follow_log.seq;
COMMENT ON TABLE pgpulse.follow_log IS
    'product writes waiting for pgpulse.follow_apply() to follow them into the schedule';

-- One row per job waiting to be published. Rows are deleted when published.
CREATE TABLE pgpulse.outbox (
    job_id        uuid NOT NULL,                  -- derived from (monitor, region, slot)
    monitor_id    uuid NOT NULL,
    region        text NOT NULL,
    criticality   text NOT NULL,
    scheduled_for timestamptz NOT NULL,           -- the slot
    deliver_at    timestamptz NOT NULL,           -- publish not before this
    expires_at    timestamptz NOT NULL,           -- drop instead of publishing after this
    payload       jsonb NOT NULL,                 -- the check, as the worker receives it
    allow_fallback boolean NOT NULL DEFAULT true, -- may go to the fallback region's queue
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- a slot is never emitted twice; also the only key, which keeps the tick's writes cheap
    CONSTRAINT outbox_one_job_per_slot PRIMARY KEY (monitor_id, region, scheduled_for)
);
-- The relay's claim: per region, in delivery order.
CREATE INDEX outbox_claim ON pgpulse.outbox (region, deliver_at);

CREATE TABLE pgpulse.dead_letters (
    job_id        uuid PRIMARY KEY,
    monitor_id    uuid NOT NULL,
    region        text NOT NULL,
    criticality   text NOT NULL,
    scheduled_for timestamptz NOT NULL,
    deliver_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    payload       jsonb NOT NULL,
    attempts      integer NOT NULL,
    last_error    text NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now(),
    allow_fallback boolean NOT NULL DEFAULT true  -- as the job left: `dlq retry` keeps it
);

-- Pushes that may have happened: before a push request the relay records which jobs it
-- is about to push to which region (one row per request), and deletes the row once the
-- outcome is known. A job named in such a row goes only to that region, or waits for it
-- (PGPULSE_UNCLEAR_PUSH). Jobs named here never move to another region's outbox.
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

-- Region health as each live relay sees it; regions.healthy is decided from the recent
-- observations (healthy unless most relays see the region down), not by the last writer.
CREATE TABLE pgpulse.region_observations (
    region      text NOT NULL,
    relay       text NOT NULL,                    -- one id per relay process
    healthy     boolean NOT NULL,
    observed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT region_observations_one_per_relay PRIMARY KEY (region, relay)
);

CREATE TABLE pgpulse.tick_runs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger           text NOT NULL,              -- pg_cron, cli, http, bench, ...
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz,                -- NULL: running, or died
    budget_ms         integer NOT NULL,
    lookahead_ms      integer NOT NULL,
    monitors_claimed  integer NOT NULL DEFAULT 0,
    jobs_written      integer NOT NULL DEFAULT 0,
    chunks            integer NOT NULL DEFAULT 0,
    cut_short         boolean NOT NULL DEFAULT false,
    unrouted          integer NOT NULL DEFAULT 0, -- due monitors left for lack of a region
    maintenance_skipped integer NOT NULL DEFAULT 0, -- slots not checked: inside a maintenance window
    skipped           integer NOT NULL DEFAULT 0, -- due monitors whose row could not be scheduled
    skip_detail       text,                       -- the first of them and its error
    stop_reason       text                        -- drained, budget, lock_timeout (NULL: running)
);
CREATE INDEX tick_runs_started ON pgpulse.tick_runs (started_at);
-- dead-letter retention (the tick prunes by age)
CREATE INDEX dead_letters_failed ON pgpulse.dead_letters (failed_at);

-- Times when monitors are not checked: once (from starts_local to ends_local) or weekly (on
-- the ISO weekdays, 1 = Monday, from start_time for duration), in wall-clock time of an IANA
-- time zone. A slot is inside when its local time there is: across a DST change a window
-- keeps its wall-clock hours (a local time that occurs twice is inside both times, one that
-- is skipped never occurs). monitor_ids NULL: every monitor.
CREATE TABLE pgpulse.maintenance_windows (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL DEFAULT ''
                  CONSTRAINT maintenance_name_length CHECK (length(name) <= 200),
    monitor_ids   text[]                          -- monitors' ids as text (any id type)
                  CONSTRAINT maintenance_monitor_ids_list CHECK (
                      cardinality(monitor_ids) >= 1 AND array_position(monitor_ids, NULL) IS NULL),
    time_zone     text NOT NULL,                  -- checked by a trigger: an IANA name
    starts_local  timestamp,                      -- once
    ends_local    timestamp,
    weekdays      smallint[],                     -- weekly
    start_time    time,
    duration      interval,
    skipped_slots bigint NOT NULL DEFAULT 0,      -- slots not checked because of this window
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- coalesce: a NULL in a part that must be there fails the check instead of passing it
    CONSTRAINT maintenance_once_or_weekly CHECK (coalesce(
        (starts_local IS NOT NULL AND ends_local > starts_local
         AND weekdays IS NULL AND start_time IS NULL AND duration IS NULL)
        OR (starts_local IS NULL AND ends_local IS NULL
            AND cardinality(weekdays) BETWEEN 1 AND 7
            AND 1 <= ALL (weekdays) AND 7 >= ALL (weekdays)
            AND start_time IS NOT NULL
            AND duration > interval '0' AND duration <= interval '7 days'), false))
);

-- Slots that a tick or a "schedule now" did not write because they fell in a maintenance
-- window, appended per chunk (a product's transaction may write jobs: it never locks a row
-- the tick updates); the tick folds them into maintenance_windows.skipped_slots.
CREATE TABLE pgpulse.maintenance_skips (
    -- a key: a table without one cannot be deleted from under a FOR ALL TABLES publication
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    window_id bigint NOT NULL REFERENCES pgpulse.maintenance_windows (id) ON DELETE CASCADE,
    slots     bigint NOT NULL
);
CREATE INDEX maintenance_skips_window ON pgpulse.maintenance_skips (window_id);

-- One row per task that one process of many does at a time (the built-in alerts'
-- evaluator: 'alert-evaluator'), held until expires_at unless its holder renews it first.
-- A row, not a session advisory lock: behind a transaction-mode pooler a session's lock
-- stays on whichever server connection took it, for the next client that gets it.
CREATE TABLE pgpulse.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,                     -- host:pid:nonce of the process
    taken_at   timestamptz NOT NULL,              -- since when this holder has it
    expires_at timestamptz NOT NULL
);

-- What `pgpulse migrate` created outside schema pgpulse (a role is the cluster's, the pg_cron
-- extension this database's), recorded when it did: `--downgrade base` removes these and
-- nothing else, and only when nothing else uses them.
CREATE TABLE pgpulse.created (
    kind       text NOT NULL CONSTRAINT created_kind_known CHECK (kind IN ('role', 'extension')),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT created_once PRIMARY KEY (kind, name)
);
