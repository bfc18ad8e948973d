-- Named queries the relay and the CLI run (callers write queries()["name"]). Not all of
-- pgpulse's SQL is here: doctor's catalog checks and a few one-line statements stay inline,
-- and the throwaway stack, demo and benchmarks write their own SQL, some built in Python.
-- Timestamps in job JSON are ISO 8601 UTC with a Z. Each runs in a transaction that pins
-- search_path to pg_catalog, pg_temp first (relay.db), so names here resolve in pg_catalog
-- and pgpulse's objects are always qualified.

-- claim_due --
-- Claims up to %(limit)s due jobs of one region and deletes them; the caller publishes,
-- then commits (or rolls back, which puts them back). MATERIALIZED: each subquery runs once.
-- The push intents (see push_intents) of this region's jobs: to this region, read only when
-- rerouting (held_by); to other regions (pinned), normally none.
WITH held AS MATERIALIZED (
    SELECT u.job_id
      FROM pgpulse.push_intents i, unnest(i.job_ids) u(job_id)
     WHERE %(held_by)s::text IS NOT NULL AND i.from_region = %(region)s
       AND i.region = %(held_by)s::text
), pinned AS MATERIALIZED (
    SELECT u.job_id, i.region, i.id
      FROM pgpulse.push_intents i, unnest(i.job_ids) u(job_id)
     WHERE i.from_region = %(region)s AND i.region <> %(region)s
), sel AS MATERIALIZED (
    SELECT ctid AS row_ref
      FROM pgpulse.outbox
     WHERE region = %(region)s AND deliver_at <= now()
       AND (%(fallback_only)s IS FALSE OR allow_fallback)
       -- rerouting (held_by set): not the jobs whose push to the region may have happened
       AND (%(held_by)s::text IS NULL OR job_id NOT IN (SELECT h.job_id FROM held h))
     ORDER BY deliver_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
DELETE FROM pgpulse.outbox o
 WHERE o.ctid = ANY (ARRAY(SELECT row_ref FROM sel))
-- (times as unix seconds: exact to the microsecond both ways, and cheap to read)
RETURNING o.job_id::text, o.monitor_id::text, o.region, o.criticality,
          date_part('epoch', o.scheduled_for) AS scheduled_for_s,
          date_part('epoch', o.deliver_at) AS deliver_at_s,
          date_part('epoch', o.expires_at) AS expires_at_s,
          o.attempts,
          -- the payload only when job_json does not hold it (job_json minus the job's fields,
          -- see requeue), not converted to text a second time
          CASE WHEN jsonb_typeof(o.payload) = 'object'
                    AND NOT o.payload ?| ARRAY['v', 'job_id', 'monitor_id', 'region',
                                               'criticality', 'scheduled_for', 'expires_at',
                                               'attempt']
               THEN NULL ELSE o.payload::text END AS payload,
          o.allow_fallback,
          o.expires_at <= now() AS expired,
          -- a push of this job may have happened there: it goes there or waits
          (SELECT p.region FROM pinned p WHERE p.job_id = o.job_id
            ORDER BY p.id DESC LIMIT 1) AS pinned_to,
          -- the job's JSON: the payload's text with the job's fields spliced in (a tenth of
          -- the relay's database time per job less than building it as jsonb); a payload
          -- that is not an object with keys (a hand-written row) is left out. Plain
          -- concatenation: the job id is a uuid and the region the claimed one (a code checked
          -- on entry); a monitor id (an adopted table's may be text) and the criticality of a
          -- hand-written row are escaped
          CASE WHEN jsonb_typeof(o.payload) = 'object' AND o.payload <> '{}'
               THEN left(o.payload::text, -1) || ', ' ELSE '{' END
          || '"v": 1, "job_id": "' || o.job_id || '", "monitor_id": ' || to_json(o.monitor_id::text)
          || ', "region": "' || o.region || '", "criticality": ' || to_json(o.criticality)
          || ', "scheduled_for": "'
          || to_char(o.scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          || '", "expires_at": "'
          || to_char(o.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
          || '", "attempt": ' || (o.attempts + 1) || '}' AS job_json

-- record_intent --
-- Before a push request: these jobs, claimed from from_region, may be in this region's
-- queue from now on. job_ids: an array literal; expires_at: the latest job's, unix seconds.
INSERT INTO pgpulse.push_intents (region, from_region, job_ids, expires_at)
VALUES (%(region)s, %(from_region)s, %(job_ids)s::uuid[], to_timestamp(%(expires_at)s::float8))
RETURNING id

-- forget_intent --
-- The outcome of these requests' pushes is known (pushed and committed, or surely not
-- pushed). ids: an array literal.
DELETE FROM pgpulse.push_intents WHERE id = ANY (%(ids)s::bigint[])

-- sweep_records --
-- Push intents of expired jobs, and observations of relays long gone.
WITH intents AS (
    DELETE FROM pgpulse.push_intents WHERE expires_at < now() RETURNING 1
), observations AS (
    DELETE FROM pgpulse.region_observations WHERE observed_at < now() - interval '1 hour'
    RETURNING 1
)
SELECT (SELECT count(*) FROM intents) AS intents, (SELECT count(*) FROM observations) AS observations

-- observe_region --
-- One relay's view of a region's health; the region is healthy unless most of the relays
-- that observed it within %(ttl_s)s seconds see it down (a tie counts as healthy).
-- Returns the region's health when this changed it.
WITH seen AS (
    INSERT INTO pgpulse.region_observations (region, relay, healthy, observed_at)
    VALUES (%(region)s, %(relay)s, %(healthy)s, now())
    ON CONFLICT ON CONSTRAINT region_observations_one_per_relay
    DO UPDATE SET healthy = EXCLUDED.healthy, observed_at = EXCLUDED.observed_at
    RETURNING region
), verdict AS (
    -- the other relays' recent views, and this one's
    SELECT (count(*) FILTER (WHERE NOT o.healthy) + (NOT %(healthy)s)::int) * 2
               <= count(*) + 1 AS healthy
      FROM pgpulse.region_observations o
     WHERE o.region = %(region)s AND o.relay <> %(relay)s
       AND o.observed_at > now() - make_interval(secs => %(ttl_s)s)
)
UPDATE pgpulse.regions r
   SET healthy = v.healthy, healthy_changed_at = now()
  FROM verdict v, seen
 WHERE r.code = seen.region AND r.healthy IS DISTINCT FROM v.healthy
RETURNING r.healthy

-- claim_lease --
-- How long the claim's transaction may sit idle (publishing) before PostgreSQL ends it and
-- the rows go back: a frozen relay must not strand its claim. Local to the transaction.
SELECT pg_catalog.set_config('idle_in_transaction_session_timeout', %(ms)s, true)

-- undelivered --
-- `relay --once`'s verdict: per region, live jobs that were due when it started, and jobs
-- it put back for a later attempt, still in the outbox.
SELECT region,
       count(*) AS due,
       count(*) FILTER (WHERE job_id = ANY (%(requeued)s::uuid[])) AS requeued
  FROM pgpulse.outbox
 WHERE expires_at > now()
   AND (deliver_at <= %(due_before)s OR job_id = ANY (%(requeued)s::uuid[]))
 GROUP BY region ORDER BY region

-- requeue --
-- Puts a job whose publish failed back with one more attempt, due again after a backoff.
-- Times in unix seconds; a NULL payload is the job's JSON without the job's own fields.
INSERT INTO pgpulse.outbox
       (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
        allow_fallback, payload, attempts, last_error)
VALUES (%(job_id)s, %(monitor_id)s, %(region)s, %(criticality)s,
        to_timestamp(%(scheduled_for_s)s::float8),
        now() + make_interval(secs => %(backoff_s)s), to_timestamp(%(expires_at_s)s::float8),
        %(allow_fallback)s,
        coalesce(%(payload)s::jsonb,
                 %(job_json)s::jsonb - ARRAY['v', 'job_id', 'monitor_id', 'region', 'criticality',
                                             'scheduled_for', 'expires_at', 'attempt']),
        %(attempts)s, %(error)s)

-- dead_letter --
-- A job that failed its last allowed attempt, kept with its last error. Times in unix
-- seconds; a NULL payload as in requeue.
INSERT INTO pgpulse.dead_letters
       (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
        payload, attempts, last_error, allow_fallback)
VALUES (%(job_id)s, %(monitor_id)s, %(region)s, %(criticality)s,
        to_timestamp(%(scheduled_for_s)s::float8), to_timestamp(%(deliver_at_s)s::float8),
        to_timestamp(%(expires_at_s)s::float8),
        coalesce(%(payload)s::jsonb,
                 %(job_json)s::jsonb - ARRAY['v', 'job_id', 'monitor_id', 'region', 'criticality',
                                             'scheduled_for', 'expires_at', 'attempt']),
        %(attempts)s, %(error)s, %(allow_fallback)s)
ON CONFLICT (job_id) DO UPDATE
   SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now(),
       allow_fallback = EXCLUDED.allow_fallback

-- next_due --
-- Seconds until the earliest job of a region falls due (NULL: none waiting); with
-- fallback_only (the region's breaker is open), only jobs that may go to its fallback.
SELECT extract(epoch FROM min(deliver_at) - now())::float8 AS seconds
  FROM pgpulse.outbox
 WHERE region = %(region)s AND (%(fallback_only)s IS FALSE OR allow_fallback)

-- listen_outbox --
-- The relay's wake-ups: the tick (and a reroute) notify when jobs are written.
LISTEN pgpulse_outbox

-- listen_follow --
-- The product's bulk writes notify when they logged rows for pgpulse to follow.
LISTEN pgpulse_follow

-- follow_apply --
-- Follows up to %(limit)s rows the product's bulk writes logged; returns how many.
SELECT pgpulse.follow_apply(%(limit)s) AS followed

-- notify_outbox --
-- Wakes every relay: jobs were written (rerouted) outside a tick.
NOTIFY pgpulse_outbox

-- now --
-- The database's clock (`relay --once` delivers what was due by then).
SELECT now() AS now

-- clock --
-- The database's clock at this instant, unix seconds (clock skew: relay.clocks).
SELECT extract(epoch FROM clock_timestamp())::float8 AS t

-- regions --
-- Every region with its routing settings.
SELECT code, enabled, is_default, fallback_region, healthy, degraded, weight, workers_absent,
       extract(epoch FROM now() - workers_absent_since)::float8 AS workers_absent_s
  FROM pgpulse.regions ORDER BY code

-- set_region_health --
-- The relay's breaker state, read by the tick's routing. Only writes on a change (and
-- then returns the code).
UPDATE pgpulse.regions
   SET healthy = %(healthy)s, healthy_changed_at = now()
 WHERE code = %(region)s AND healthy IS DISTINCT FROM %(healthy)s
RETURNING code

-- set_region_workers --
-- The relay's verdict on a region's workers (docs/results.md, "Regions whose workers are
-- gone"): absent, routing treats the region as unhealthy for monitors that may fall back.
-- Only writes on a change (and then returns the code).
UPDATE pgpulse.regions
   SET workers_absent = %(absent)s,
       workers_absent_since = CASE WHEN %(absent)s THEN now() END
 WHERE code = %(region)s AND workers_absent IS DISTINCT FROM %(absent)s
RETURNING code

-- set_region_degraded --
-- Queue backlog over the threshold: round-robin prefers other regions.
UPDATE pgpulse.regions
   SET degraded = %(degraded)s
 WHERE code = %(region)s AND degraded IS DISTINCT FROM %(degraded)s

-- tick --
-- One scheduler tick (autocommit connection: the procedure commits per chunk). Outside a
-- transaction search_path cannot be pinned for it alone: every name here is qualified.
CALL pgpulse.tick(NULL, %(trigger)s, pg_catalog.make_interval(secs => %(budget_s)s),
                  pg_catalog.make_interval(secs => %(lookahead_s)s), %(chunk)s)

-- tick_run --
-- One tick's record.
SELECT id, trigger, started_at, finished_at, budget_ms, lookahead_ms, monitors_claimed,
       jobs_written, chunks, cut_short, unrouted,
       round(extract(epoch FROM finished_at - started_at) * 1000)::bigint AS duration_ms
  FROM pgpulse.tick_runs WHERE id = %(id)s

-- recent_ticks --
-- The latest tick runs, newest first.
SELECT id, trigger, started_at, finished_at, monitors_claimed, jobs_written, chunks, cut_short,
       round(extract(epoch FROM finished_at - started_at) * 1000)::bigint AS duration_ms
  FROM pgpulse.tick_runs ORDER BY id DESC LIMIT %(limit)s

-- backlog --
-- Jobs waiting per region: all, due now, expired, and the age of the oldest live due job.
-- Regions the outbox still names but the regions table no longer has (deleted, renamed)
-- are listed too: nothing waits unseen.
WITH codes AS (
    SELECT code FROM pgpulse.regions
     UNION
    SELECT DISTINCT region FROM pgpulse.outbox
)
SELECT c.code AS region,
       count(o.job_id) AS waiting,
       count(o.job_id) FILTER (WHERE o.deliver_at <= now() AND o.expires_at > now()) AS due,
       count(o.job_id) FILTER (WHERE o.expires_at <= now()) AS expired,
       coalesce(extract(epoch FROM now() - min(o.deliver_at)
                        FILTER (WHERE o.deliver_at <= now() AND o.expires_at > now())), 0)
           AS oldest_due_age_s
  FROM codes c
  LEFT JOIN pgpulse.outbox o ON o.region = c.code
 GROUP BY c.code ORDER BY c.code

-- sweep_expired --
-- Deletes expired jobs (every region, also ones no relay drains), a bounded chunk at a
-- time; returns how many per region, for the expired counters.
WITH sel AS MATERIALIZED (
    SELECT ctid AS row_ref
      FROM pgpulse.outbox
     WHERE expires_at <= now()
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM pgpulse.outbox o
     WHERE o.ctid = ANY (ARRAY(SELECT row_ref FROM sel))
    RETURNING o.region
)
SELECT region, count(*) AS expired FROM gone GROUP BY region ORDER BY region

-- reroute_orphans --
-- Jobs of a region that is no longer an enabled region (deleted, renamed, disabled) move
-- to where their monitor's jobs go now (its preferred region's route, else the round-robin
-- wheel), under the job id of that region. Jobs with nowhere to go stay until they expire.
WITH routing AS (
    SELECT route, wheel FROM pgpulse._routing()
), sel AS MATERIALIZED (
    SELECT o.ctid AS row_ref,
           coalesce(pgpulse._routed_region(m.preferred_region, m.allow_fallback, routing.route),
                    pgpulse._wheel_region(routing.wheel,
                                          pgpulse._id_hash(o.monitor_id::text))) AS target
      FROM pgpulse.outbox o
      JOIN pgpulse.schedule m ON m.monitor_id = o.monitor_id
     CROSS JOIN routing
     WHERE NOT EXISTS (SELECT 1 FROM pgpulse.regions r WHERE r.code = o.region AND r.enabled)
       AND o.expires_at > now()
       AND m.check_regions IS NULL  -- a job per listed region: those stay, and expire
       AND o.job_id NOT IN (SELECT unnest(i.job_ids) FROM pgpulse.push_intents i)
     LIMIT %(limit)s
       FOR UPDATE OF o SKIP LOCKED
), moved AS (
    DELETE FROM pgpulse.outbox o
     USING sel
     WHERE o.ctid = sel.row_ref AND sel.target IS NOT NULL AND sel.target <> o.region
    RETURNING o.*, sel.target
), inserted AS (
    INSERT INTO pgpulse.outbox
           (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
            allow_fallback, payload, attempts, last_error)
    SELECT pgpulse._job_id(monitor_id::text, target, scheduled_for), monitor_id, target,
           criticality, scheduled_for, deliver_at, expires_at, allow_fallback, payload,
           attempts, last_error
      FROM moved
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM inserted) AS inserted

-- reroute_home --
-- A region is back (enabled and healthy): its monitors' jobs that an earlier tick routed
-- elsewhere, not yet tried anywhere, come home under that region's job id.
WITH sel AS MATERIALIZED (
    SELECT o.ctid AS row_ref
      FROM pgpulse.schedule m
      JOIN pgpulse.outbox o ON o.monitor_id = m.monitor_id
      JOIN pgpulse.regions r ON r.code = m.preferred_region
     WHERE m.preferred_region = %(region)s AND pgpulse._takes_jobs(r)
       AND m.check_regions IS NULL  -- one job per slot: the one routed away is the one
       AND o.region <> m.preferred_region AND o.attempts = 0 AND o.last_error IS NULL
       AND o.expires_at > now()
       AND o.job_id NOT IN (SELECT unnest(i.job_ids) FROM pgpulse.push_intents i)
       FOR UPDATE OF o SKIP LOCKED
), moved AS (
    DELETE FROM pgpulse.outbox o
     WHERE o.ctid = ANY (ARRAY(SELECT row_ref FROM sel))
    RETURNING o.*
), inserted AS (
    INSERT INTO pgpulse.outbox
           (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
            allow_fallback, payload, attempts, last_error)
    SELECT pgpulse._job_id(monitor_id::text, %(region)s, scheduled_for), monitor_id, %(region)s,
           criticality, scheduled_for, deliver_at, expires_at, allow_fallback, payload,
           attempts, last_error
      FROM moved
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM inserted) AS inserted

-- reroute_away --
-- A region whose workers are absent: its waiting jobs that may fall back (of one-job-a-slot
-- monitors, not tried anywhere yet) go where its jobs go now (its route, else the
-- round-robin wheel), under that region's job id. Jobs of multi-region monitors stay.
WITH routing AS (
    SELECT route, wheel FROM pgpulse._routing()
), sel AS MATERIALIZED (
    SELECT o.ctid AS row_ref,
           coalesce(routing.route ->> o.region,
                    pgpulse._wheel_region(routing.wheel,
                                          pgpulse._id_hash(o.monitor_id::text))) AS target
      FROM pgpulse.outbox o
      JOIN pgpulse.schedule m ON m.monitor_id = o.monitor_id
     CROSS JOIN routing
     WHERE o.region = %(region)s AND o.allow_fallback
       AND o.attempts = 0 AND o.last_error IS NULL AND o.expires_at > now()
       AND m.check_regions IS NULL
       AND o.job_id NOT IN (SELECT unnest(i.job_ids) FROM pgpulse.push_intents i)
       FOR UPDATE OF o SKIP LOCKED
), moved AS (
    DELETE FROM pgpulse.outbox o
     USING sel
     WHERE o.ctid = sel.row_ref AND sel.target IS NOT NULL AND sel.target <> o.region
    RETURNING o.*, sel.target
), inserted AS (
    INSERT INTO pgpulse.outbox
           (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
            allow_fallback, payload, attempts, last_error)
    SELECT pgpulse._job_id(monitor_id::text, target, scheduled_for), monitor_id, target,
           criticality, scheduled_for, deliver_at, expires_at, allow_fallback, payload,
           attempts, last_error
      FROM moved
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS moved, (SELECT count(*) FROM inserted) AS inserted

-- region_list --
-- Regions with their routing state and waiting jobs.
SELECT r.code, r.enabled, r.is_default, r.fallback_region, r.healthy, r.healthy_changed_at,
       r.degraded, r.weight, r.workers_absent, r.workers_absent_since,
       (SELECT count(*) FROM pgpulse.outbox o WHERE o.region = r.code) AS waiting
  FROM pgpulse.regions r ORDER BY r.code

-- region_add --
-- A new region (its endpoint comes from the relay's environment, never from here).
INSERT INTO pgpulse.regions (code, enabled, fallback_region, weight)
VALUES (%(code)s, %(enabled)s, %(fallback)s, %(weight)s)

-- region_set_enabled --
-- Enables or disables a region; returns the code when it exists.
UPDATE pgpulse.regions SET enabled = %(enabled)s WHERE code = %(code)s RETURNING code

-- region_clear_default --
-- No region is the default (run before region_set_default, in one transaction).
UPDATE pgpulse.regions SET is_default = false WHERE is_default

-- region_set_default --
-- Makes one region the default; returns the code when it exists.
UPDATE pgpulse.regions SET is_default = true WHERE code = %(code)s RETURNING code

-- dlq_list --
-- Dead letters, newest first.
SELECT job_id, monitor_id, region, criticality, scheduled_for, attempts, last_error, failed_at
  FROM pgpulse.dead_letters ORDER BY failed_at DESC LIMIT %(limit)s

-- dlq_retry --
-- Moves dead letters (all, or one job) back to the outbox as they left (allow_fallback
-- too), due now, expiring one interval from now (so their dedup keys live that long).
-- A dead letter whose slot is in the outbox already stays where it is and is counted.
WITH picked AS (
    SELECT * FROM pgpulse.dead_letters
     WHERE %(job_id)s::uuid IS NULL OR job_id = %(job_id)s::uuid
       FOR UPDATE
), requeued AS (
    INSERT INTO pgpulse.outbox (job_id, monitor_id, region, criticality, scheduled_for,
                                deliver_at, expires_at, allow_fallback, payload, attempts,
                                last_error)
    SELECT job_id, monitor_id, region, criticality, scheduled_for, now(),
           now() + (expires_at - scheduled_for), allow_fallback, payload, 0, last_error
      FROM picked
    ON CONFLICT DO NOTHING
    RETURNING job_id
), moved AS (
    DELETE FROM pgpulse.dead_letters d USING requeued r WHERE d.job_id = r.job_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS retried,
       (SELECT count(*) FROM picked) - (SELECT count(*) FROM moved) AS kept

-- dlq_purge --
-- Deletes dead letters (all, or one job); returns how many.
WITH gone AS (
    DELETE FROM pgpulse.dead_letters
     WHERE %(job_id)s::uuid IS NULL OR job_id = %(job_id)s::uuid
    RETURNING 1
)
SELECT count(*) AS purged FROM gone

-- dead_letter_count --
-- How many jobs are dead-lettered.
SELECT count(*) AS dead_letters FROM pgpulse.dead_letters

-- cron_job --
-- The pg_cron job that ticks a database (NULL: this one), its schedule, state and latest
-- run (no rows without pg_cron). Read in pg_cron's database, which may be another one
-- (cron.schedule_in_database): its jobs for other databases are then filtered out.
SELECT j.jobname, j.schedule, j.active, d.status AS last_status, d.start_time AS last_start,
       d.end_time AS last_end, d.return_message AS last_message
  FROM cron.job j
  LEFT JOIN LATERAL (SELECT status, start_time, end_time, return_message
                       FROM cron.job_run_details r WHERE r.jobid = j.jobid
                      ORDER BY r.start_time DESC NULLS LAST LIMIT 1) d ON true
 WHERE j.jobname = 'pgpulse-tick'
   AND j.database = coalesce(%(database)s::text, current_database())

-- cron_access --
-- What this role may see of pg_cron here, read without touching schema cron: whether its
-- extension is in this database, whether this role may read its schema, whether it sees
-- every role's jobs (pg_cron's row security shows others only its own), and how long ago
-- pg_cron last started a tick here (what shows it runs, seen from this side).
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') AS here,
       coalesce((SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace
                  WHERE nspname = 'cron'), false) AS readable,
       (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) AS sees_all,
       (SELECT extract(epoch FROM now() - max(started_at))::float8
          FROM pgpulse.tick_runs WHERE trigger = 'pg_cron') AS last_cron_tick_age_s

-- last_cron_tick --
-- How long ago pg_cron last started a tick here (what shows it runs, seen from this side).
SELECT extract(epoch FROM now() - max(started_at))::float8 AS age_s
  FROM pgpulse.tick_runs WHERE trigger = 'pg_cron'

-- last_good_tick --
-- When the latest tick that finished started, and how long ago that was.
SELECT max(started_at) AS started_at,
       extract(epoch FROM now() - max(started_at))::float8 AS age_s
  FROM pgpulse.tick_runs WHERE finished_at IS NOT NULL

-- latest_tick --
-- The newest tick run and the share of its budget it used.
SELECT id, started_at, finished_at, cut_short, monitors_claimed, jobs_written,
       extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at)::float8 AS duration_s,
       extract(epoch FROM coalesce(finished_at, clock_timestamp()) - started_at)::float8
           / nullif(budget_ms / 1000.0, 0)::float8 AS budget_used
  FROM pgpulse.tick_runs ORDER BY id DESC LIMIT 1

-- latest_finished_tick --
-- The newest tick that finished (any trigger), for the tick gauges and the dead-man rule.
SELECT id, trigger, started_at, finished_at, cut_short, monitors_claimed, jobs_written, budget_ms,
       extract(epoch FROM finished_at - started_at)::float8 AS duration_s
  FROM pgpulse.tick_runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1

-- schedule_health --
-- Monitors pgpulse does not schedule, for the health surfaces: active ones parked (with the
-- commonest reason), active ones overdue (due more than 90 s ago: no tick scheduled them),
-- and what the latest finished tick skipped or could not route; product rows bulk writes
-- logged and nobody followed yet (and for how long).
SELECT (SELECT count(*) FROM pgpulse.schedule WHERE parked IS NOT NULL AND is_active) AS parked,
       (SELECT parked FROM pgpulse.schedule WHERE parked IS NOT NULL AND is_active
         GROUP BY parked ORDER BY count(*) DESC, parked LIMIT 1) AS parked_reason,
       (SELECT count(*) FROM pgpulse.schedule
         WHERE is_active AND parked IS NULL
           AND next_check_at < now() - interval '90 seconds') AS overdue,
       t.id AS tick_id, coalesce(t.skipped, 0) AS skipped, t.skip_detail,
       coalesce(t.unrouted, 0) AS unrouted,
       f.pending AS follow_pending, f.oldest_s AS follow_oldest_s
  FROM pgpulse.follow_pending() f
  LEFT JOIN LATERAL (SELECT id, skipped, skip_detail, unrouted FROM pgpulse.tick_runs
                      WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1) t ON true

-- following --
-- Whether pgpulse's triggers follow the product's monitors (all there and enabled).
SELECT ok, detail FROM pgpulse.following()

-- drift --
-- The schedule against the product's table, read as the caller (doctor).
SELECT * FROM pgpulse.drift()

-- resync --
-- Repairs the drift (changes nothing with dry_run), read and written as the caller.
SELECT * FROM pgpulse.resync(%(dry_run)s)

-- dead_letters_by_region --
-- Dead letters per region, every region listed (0 when none).
SELECT r.code AS region, count(d.job_id) AS dead_letters
  FROM pgpulse.regions r
  LEFT JOIN pgpulse.dead_letters d ON d.region = r.code
 GROUP BY r.code ORDER BY r.code

-- absent_workers --
-- Regions whose workers are absent (the relay's verdict), for how long, and where the
-- jobs of their monitors that may fall back go now (its fallback, else the default region;
-- NULL: round-robin, or nowhere: see pgpulse._routing).
SELECT r.code AS region,
       extract(epoch FROM now() - r.workers_absent_since)::float8 AS absent_s,
       coalesce((SELECT f.code FROM pgpulse.regions f
                  WHERE f.code = r.fallback_region AND pgpulse._takes_jobs(f)),
                (SELECT min(d.code) FROM pgpulse.regions d
                  WHERE d.is_default AND pgpulse._takes_jobs(d)))
           AS routed_to
  FROM pgpulse.regions r WHERE r.enabled AND r.workers_absent ORDER BY r.code

-- unhealthy_regions --
-- Regions some relay's breaker marked unhealthy, and for how long.
SELECT code AS region, extract(epoch FROM now() - healthy_changed_at)::float8 AS unhealthy_s
  FROM pgpulse.regions WHERE enabled AND NOT healthy

-- take_lease --
-- Takes lease `name` for `holder` until ttl_s seconds from now when it is free, expired or
-- already that holder's (a renewal); a row only when the holder has it now. The database's
-- clock judges expiry for every holder alike.
INSERT INTO pgpulse.leases AS l (name, holder, taken_at, expires_at)
VALUES (%(name)s, %(holder)s, clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(ttl_s)s))
ON CONFLICT (name) DO UPDATE
   SET holder = excluded.holder, expires_at = excluded.expires_at,
       taken_at = CASE WHEN l.holder = excluded.holder THEN l.taken_at ELSE excluded.taken_at END
 WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
RETURNING holder

-- drop_lease --
-- Gives a lease up (a process that stops): the next one takes it at once, not at expiry.
DELETE FROM pgpulse.leases WHERE name = %(name)s AND holder = %(holder)s

-- maintenance_add --
-- A maintenance window (once: starts/ends; weekly: weekdays/start_time/duration), local
-- times in time_zone; monitor_ids NULL: every monitor. Returns its id.
INSERT INTO pgpulse.maintenance_windows
       (name, monitor_ids, time_zone, starts_local, ends_local, weekdays, start_time, duration)
VALUES (%(name)s, %(monitor_ids)s::text[], %(time_zone)s, %(starts)s::timestamp,
        %(ends)s::timestamp, %(weekdays)s::smallint[], %(start_time)s::time,
        %(duration)s::interval)
RETURNING id

-- maintenance_list --
-- Every maintenance window: whether it is on now, when it next starts and ends (local time
-- of its zone), and how many slots it skipped.
SELECT w.id, w.name, w.monitor_ids, w.time_zone,
       CASE WHEN w.starts_local IS NOT NULL THEN 'once' ELSE 'weekly' END AS kind,
       w.starts_local, w.ends_local, w.weekdays, w.start_time, w.duration::text AS duration,
       w.skipped_slots,
       EXISTS (SELECT 1 FROM pgpulse._maintenance_occurrences(now(), now()) o
                WHERE o.window_id = w.id
                  AND pgpulse._inside_occurrence(now(), w.time_zone, o.local_start,
                                                 o.local_end)) AS active_now,
       (SELECT min(o.local_end) FROM pgpulse._maintenance_occurrences(now(), now() + interval '8 days') o
         WHERE o.window_id = w.id AND o.local_end > (now() AT TIME ZONE w.time_zone)) AS next_end_local,
       (SELECT min(o.local_start) FROM pgpulse._maintenance_occurrences(now(), now() + interval '8 days') o
         WHERE o.window_id = w.id AND o.local_start > (now() AT TIME ZONE w.time_zone)) AS next_start_local
  FROM pgpulse.maintenance_windows w
 ORDER BY w.id

-- maintenance_remove --
-- Deletes one maintenance window; returns its id when it existed.
DELETE FROM pgpulse.maintenance_windows WHERE id = %(id)s RETURNING id

-- maintenance_skipped --
-- Slots skipped by maintenance windows, all time (still defined) and in the last hour of ticks.
SELECT (SELECT coalesce(sum(skipped_slots), 0) FROM pgpulse.maintenance_windows)::bigint AS total,
       (SELECT coalesce(sum(maintenance_skipped), 0) FROM pgpulse.tick_runs
         WHERE started_at > now() - interval '1 hour')::bigint AS last_hour

-- vacuum_horizon --
-- What holds back vacuum of pgpulse's tables (the tick and the relay churn every row of the
-- schedule and the outbox): the oldest transaction id another session of this database, a
-- prepared transaction or a replication slot still needs. Dead rows newer than it stay.
-- Every snapshot taken while a transaction runs needs that transaction's id too: among
-- equals the transaction that owns the id holds it (the others only see it), then the
-- oldest. Its age in transactions is always known; held_s, how long, only where PostgreSQL
-- shows it (a session this role may see, a prepared transaction): else NULL. Autovacuum
-- workers (no user) are left out: vacuum's own snapshot holds nothing back. No row:
-- nothing holds it.
WITH holders AS (
    SELECT 'session' AS kind, a.pid::text AS holder,
           CASE WHEN age(a.backend_xid) >= coalesce(age(a.backend_xmin), 0)
                THEN a.backend_xid ELSE a.backend_xmin END AS xid,
           age(a.backend_xid) >= coalesce(age(a.backend_xmin), 0) AS owns,
           extract(epoch FROM clock_timestamp() - a.xact_start)::float8 AS held_s,
           a.application_name AS detail
      FROM pg_stat_activity a
     WHERE (a.datname = current_database() OR a.datid IS NULL)
       AND a.usesysid IS NOT NULL AND a.pid <> pg_backend_pid()
       AND (a.backend_xid IS NOT NULL OR a.backend_xmin IS NOT NULL)
    UNION ALL
    SELECT 'prepared transaction', p.gid, p.transaction, true,
           extract(epoch FROM clock_timestamp() - p.prepared)::float8, p.owner::text
      FROM pg_prepared_xacts p
     WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication slot', s.slot_name::text, s.xmin, false, NULL::float8, s.slot_type
      FROM pg_replication_slots s
     WHERE s.xmin IS NOT NULL
)
SELECT kind, holder, xid::text AS xid, age(xid) AS xid_age, held_s, detail
  FROM holders
 ORDER BY age(xid) DESC, coalesce(owns, false) DESC, held_s DESC NULLS LAST
 LIMIT 1

-- dead_tuples --
-- Dead rows per pgpulse table (as the statistics count them): vacuum removes them unless
-- something holds it back (vacuum_horizon).
SELECT relname AS "table", n_dead_tup AS dead, n_live_tup AS live,
       extract(epoch FROM now() - greatest(last_autovacuum, last_vacuum))::float8
           AS vacuumed_s_ago
  FROM pg_stat_all_tables
 WHERE schemaname = 'pgpulse'
 ORDER BY relname

-- results_id_type --
-- The product's monitor id type, as the results tables hold it (uuid, bigint, integer, text).
SELECT format_type(atttypid, atttypmod) AS id_type
  FROM pg_attribute
 WHERE attrelid = 'pgpulse.results_latest'::regclass AND attname = 'monitor_id'

-- results_maintain --
-- The results history's partitions made ahead and dropped past retention; whether history
-- is kept, and the span of scheduled_for its partitions cover (sql/90_results.sql).
SELECT * FROM pgpulse.results_maintain()

-- ingest_results --
-- One batch of a region's results (a JSON array of results_latest rows the relay checked).
-- Results of monitors pgpulse does not schedule (deleted since) are left out. The latest
-- table keeps, per monitor and region, a newer slot or the same slot finished later; the
-- history (only within history_from .. history_until, its partitions: NULL while off)
-- keeps each slot once, the result that finished last. The same batch again changes
-- nothing, so a batch ingested twice (a relay killed before it removed it) is harmless.
WITH batch AS MATERIALIZED (
    SELECT b.*
      FROM json_populate_recordset(NULL::pgpulse.results_latest, %(rows)s::json) b
     WHERE EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = b.monitor_id)
), latest AS (
    INSERT INTO pgpulse.results_latest AS l
           (monitor_id, region, scheduled_for, checked_from, job_id, slot_regions, ok, status,
            latency_ms, error, detail, attempts, run, started_at, finished_at, worker)
    SELECT DISTINCT ON (monitor_id, region)
           monitor_id, region, scheduled_for, checked_from, job_id, slot_regions, ok, status,
           latency_ms, error, detail, attempts, run, started_at, finished_at, worker
      FROM batch
     ORDER BY monitor_id, region, scheduled_for DESC, finished_at DESC
    ON CONFLICT (monitor_id, region) DO UPDATE
       SET scheduled_for = EXCLUDED.scheduled_for, checked_from = EXCLUDED.checked_from,
           job_id = EXCLUDED.job_id, slot_regions = EXCLUDED.slot_regions, ok = EXCLUDED.ok,
           status = EXCLUDED.status, latency_ms = EXCLUDED.latency_ms, error = EXCLUDED.error,
           detail = EXCLUDED.detail, attempts = EXCLUDED.attempts, run = EXCLUDED.run,
           started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
           worker = EXCLUDED.worker, received_at = now()
     WHERE (EXCLUDED.scheduled_for, EXCLUDED.finished_at) > (l.scheduled_for, l.finished_at)
    RETURNING 1
), history AS (
    INSERT INTO pgpulse.results_history AS h
           (monitor_id, region, scheduled_for, checked_from, job_id, slot_regions, ok, status,
            latency_ms, error, detail, attempts, run, started_at, finished_at, worker)
    SELECT DISTINCT ON (monitor_id, region, scheduled_for)
           monitor_id, region, scheduled_for, checked_from, job_id, slot_regions, ok, status,
           latency_ms, error, detail, attempts, run, started_at, finished_at, worker
      FROM batch
     WHERE scheduled_for >= %(history_from)s::timestamptz
       AND scheduled_for < %(history_until)s::timestamptz
     ORDER BY monitor_id, region, scheduled_for, finished_at DESC
    ON CONFLICT (monitor_id, region, scheduled_for) DO UPDATE
       SET checked_from = EXCLUDED.checked_from, job_id = EXCLUDED.job_id,
           slot_regions = EXCLUDED.slot_regions, ok = EXCLUDED.ok, status = EXCLUDED.status,
           latency_ms = EXCLUDED.latency_ms, error = EXCLUDED.error, detail = EXCLUDED.detail,
           attempts = EXCLUDED.attempts, run = EXCLUDED.run, started_at = EXCLUDED.started_at,
           finished_at = EXCLUDED.finished_at, worker = EXCLUDED.worker, received_at = now()
     WHERE EXCLUDED.finished_at > h.finished_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS known,
       (SELECT count(*) FROM latest) AS latest_written,
       (SELECT count(*) FROM history) AS history_written,
       (SELECT count(*) FROM batch
         WHERE %(history_from)s::timestamptz IS NOT NULL
           AND NOT (scheduled_for >= %(history_from)s::timestamptz
                    AND scheduled_for < %(history_until)s::timestamptz)) AS outside_history

-- results_orphans --
-- Latest results of monitors pgpulse no longer schedules (deleted), a bounded chunk.
WITH gone AS (
    DELETE FROM pgpulse.results_latest l
     WHERE l.ctid = ANY (ARRAY(
           SELECT x.ctid FROM pgpulse.results_latest x
            WHERE NOT EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = x.monitor_id)
            LIMIT %(limit)s))
    RETURNING 1
)
SELECT count(*) AS deleted FROM gone
