-- Named queries the relay and the CLI run. Python never builds SQL strings.
-- Timestamps in job JSON are ISO 8601 UTC with a Z.

-- claim_due --
-- Claims up to %(limit)s due jobs of one region and deletes them; the caller publishes,
-- then commits (or rolls back, which puts them back). MATERIALIZED: the subquery runs once.
WITH sel AS MATERIALIZED (
    SELECT ctid AS row_ref
      FROM pgpulse.outbox
     WHERE region = %(region)s AND deliver_at <= now()
       AND (%(fallback_only)s IS FALSE OR allow_fallback)
     ORDER BY deliver_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
DELETE FROM pgpulse.outbox o
 WHERE o.ctid = ANY (ARRAY(SELECT row_ref FROM sel))
RETURNING o.job_id::text, o.monitor_id, o.region, o.criticality, o.scheduled_for,
          o.deliver_at, o.expires_at, o.attempts, o.payload, o.allow_fallback,
          o.expires_at <= now() AS expired,
          (o.payload || jsonb_build_object(
              'v', 1,
              'job_id', o.job_id,
              'monitor_id', o.monitor_id,
              'region', o.region,
              'criticality', o.criticality,
              'scheduled_for', to_char(o.scheduled_for AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              'expires_at', to_char(o.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              'attempt', o.attempts + 1))::text AS job_json

-- requeue --
-- Puts a job whose publish failed back with one more attempt, due again after a backoff.
INSERT INTO pgpulse.outbox
       (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
        allow_fallback, payload, attempts, last_error)
VALUES (%(job_id)s, %(monitor_id)s, %(region)s, %(criticality)s, %(scheduled_for)s,
        now() + make_interval(secs => %(backoff_s)s), %(expires_at)s, %(allow_fallback)s,
        %(payload)s, %(attempts)s, %(error)s)

-- dead_letter --
-- A job that failed its last allowed attempt, kept with its last error.
INSERT INTO pgpulse.dead_letters
       (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
        payload, attempts, last_error)
VALUES (%(job_id)s, %(monitor_id)s, %(region)s, %(criticality)s, %(scheduled_for)s,
        %(deliver_at)s, %(expires_at)s, %(payload)s, %(attempts)s, %(error)s)
ON CONFLICT (job_id) DO UPDATE
   SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, failed_at = now()

-- next_due --
-- When the earliest job of a region falls due (NULL: none waiting).
SELECT min(deliver_at) FROM pgpulse.outbox WHERE region = %(region)s

-- regions --
-- Every region with its routing settings.
SELECT code, enabled, is_default, fallback_region, healthy, degraded, weight
  FROM public.regions ORDER BY code

-- set_region_health --
-- The relay's breaker state, read by the tick's routing. Only writes on a change.
UPDATE public.regions
   SET healthy = %(healthy)s, healthy_changed_at = now()
 WHERE code = %(region)s AND healthy IS DISTINCT FROM %(healthy)s

-- set_region_degraded --
-- Queue backlog over the threshold: round-robin prefers other regions.
UPDATE public.regions
   SET degraded = %(degraded)s
 WHERE code = %(region)s AND degraded IS DISTINCT FROM %(degraded)s

-- tick --
-- One scheduler tick (autocommit connection: the procedure commits per chunk).
CALL pgpulse.tick(NULL, %(trigger)s, make_interval(secs => %(budget_s)s),
                  make_interval(secs => %(lookahead_s)s), %(chunk)s)

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
-- Jobs waiting per region: all, due now, and the age of the oldest due job.
SELECT r.code AS region,
       count(o.job_id) AS waiting,
       count(o.job_id) FILTER (WHERE o.deliver_at <= now()) AS due,
       coalesce(extract(epoch FROM now() - min(o.deliver_at) FILTER (WHERE o.deliver_at <= now())), 0)
           AS oldest_due_age_s
  FROM public.regions r
  LEFT JOIN pgpulse.outbox o ON o.region = r.code
 GROUP BY r.code ORDER BY r.code
