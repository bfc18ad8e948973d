-- Release 0.2.0 (unreleased), downgrade to 0016: the inverse of each change in 0.2.0.sql,
-- the latest change first. 0009_roles.sql and 0007_cron.sql, applied after this file, give
-- the roles and the pg_cron jobs back their 0016 rights and commands.

-- Check results and absent workers (issue 24), undone.
DROP VIEW pgpulse.slot_results;
DROP VIEW pgpulse.latest_slot_results;
DROP VIEW pgpulse.latest_results;
DROP FUNCTION pgpulse.results_maintain();
DROP TABLE pgpulse.results_history;
DROP TABLE pgpulse.results_latest;
CREATE OR REPLACE FUNCTION pgpulse._routing(OUT route jsonb, OUT wheel text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_default     text;
    v_any_healthy boolean;
BEGIN
    SELECT min(code) FILTER (WHERE is_default AND enabled AND healthy),
           coalesce(bool_or(enabled AND healthy), false)
      INTO v_default, v_any_healthy
      FROM pgpulse.regions;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN p.enabled AND p.healthy THEN p.code END,
               CASE WHEN f.enabled AND f.healthy THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_healthy THEN p.code END))
      INTO route
      FROM pgpulse.regions p
      LEFT JOIN pgpulse.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (healthy AND NOT degraded) DESC, healthy DESC) AS tier
              FROM pgpulse.regions WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;

ALTER TABLE pgpulse.regions DROP COLUMN workers_absent_since, DROP COLUMN workers_absent;

-- Issue 25, undone: the adoption record's lines for what 0003 and 0.2.0 added (the steps
-- below and 0003's downgrade remove those), the operator role's rights, the record of
-- what pgpulse created, the alert evaluator's lease.
DO $adopted$
BEGIN
    IF to_regclass('pgpulse.adoption') IS NOT NULL THEN
        DELETE FROM pgpulse.adoption
         WHERE (kind, name) IN (('column', 'check_interval_seconds'), ('column', 'check_regions'),
                                ('trigger', 'pgpulse_follow_insert'), ('trigger', 'pgpulse_follow_update'),
                                ('trigger', 'pgpulse_follow_update_named'),
                                ('trigger', 'pgpulse_follow_update_id_named'),
                                ('trigger', 'pgpulse_follow_delete'), ('trigger', 'pgpulse_follow_truncate'));
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_monitor') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA pgpulse FROM pgpulse_monitor;
        REVOKE ALL ON SCHEMA pgpulse FROM pgpulse_monitor;
    END IF;
END
$adopted$;
DROP TABLE pgpulse.created;
DROP TABLE pgpulse.leases;

-- Checks a tick's arguments and opens its run record; returns its deadline.
CREATE OR REPLACE FUNCTION pgpulse._tick_begin(
    p_trigger text, p_budget interval, p_lookahead interval, p_chunk integer,
    OUT run_id bigint, OUT deadline timestamptz, OUT rr bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
BEGIN
    -- a tick runs every minute and must end inside it
    IF p_budget IS NULL OR p_budget <= interval '0' OR p_budget > interval '55 seconds' THEN
        RAISE EXCEPTION 'pgpulse.tick: budget must be more than 0 and at most 55 seconds, not %',
            coalesce(p_budget::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lookahead IS NULL OR p_lookahead < interval '0' OR p_lookahead > interval '10 minutes' THEN
        RAISE EXCEPTION 'pgpulse.tick: lookahead must be 0 to 10 minutes, not %',
            coalesce(p_lookahead::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_chunk IS NULL OR p_chunk NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'pgpulse.tick: chunk must be 1 to 100000 monitors, not %',
            coalesce(p_chunk::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    deadline := v_started + p_budget;
    rr := floor(random() * 1000000)::bigint;
    PERFORM pgpulse._tick_bound_lock_wait(deadline);
    INSERT INTO pgpulse.tick_runs (trigger, started_at, budget_ms, lookahead_ms)
    VALUES (p_trigger, v_started, round(extract(epoch FROM p_budget) * 1000),
            round(extract(epoch FROM p_lookahead) * 1000))
    RETURNING id INTO run_id;
END
$$;

-- rows bulk writes logged are followed first: what the schedule holds goes back into the
-- product's table below
DO $follow$
BEGIN
    WHILE pgpulse.follow_apply(100000) > 0 LOOP
    END LOOP;
END
$follow$;
DROP FUNCTION pgpulse.follow_apply(integer), pgpulse.follow_pending(),
    pgpulse._follow_entries(pgpulse.follow_log[]), pgpulse._follow_change(pgpulse.follow_log),
    pgpulse._seen_at(public.monitors), pgpulse._seen_at(pgpulse.follow_log);
DROP TABLE pgpulse.follow_log;

-- The schedule in pgpulse's own table (issue 22), undone: pgpulse's state goes back into the
-- product's monitors (the downgrade writes them), with the triggers, constraints, index
-- and check_spec 0016 had. A row 0.2.0 parked for a value 0016 refused (an interval out of
-- range, say) makes the downgrade fail on that constraint, naming it.
DROP VIEW pgpulse.monitor_schedule;
REVOKE USAGE ON SCHEMA pgpulse FROM PUBLIC;
LOCK TABLE public.monitors IN SHARE ROW EXCLUSIVE MODE;
DROP TRIGGER pgpulse_follow_insert ON public.monitors;
DROP TRIGGER pgpulse_follow_update ON public.monitors;
DROP TRIGGER pgpulse_follow_update_named ON public.monitors;
DROP TRIGGER pgpulse_follow_update_id_named ON public.monitors;
DROP TRIGGER pgpulse_follow_delete ON public.monitors;
DROP TRIGGER pgpulse_follow_truncate ON public.monitors;
DROP TRIGGER regions_renamed ON pgpulse.regions;

UPDATE public.monitors m
   SET next_check_at = CASE WHEN s.parked LIKE 'url:%' THEN '9999-12-31 23:59:59+00'
                            ELSE s.next_check_at END,
       last_scheduled_at = s.last_scheduled_at,
       check_interval_seconds = s.check_interval_seconds
  FROM pgpulse.schedule s
 WHERE s.monitor_id = m.id;
-- the folded counts of skipped slots
UPDATE pgpulse.maintenance_windows w SET skipped_slots = w.skipped_slots + k.slots
  FROM (SELECT window_id, sum(slots) AS slots FROM pgpulse.maintenance_skips GROUP BY window_id) k
 WHERE w.id = k.window_id;

DO $restore$
DECLARE
    v record;
BEGIN
    IF to_regclass('pgpulse.adoption') IS NULL THEN
        -- a table pgpulse created: as 0016 made it
        ALTER TABLE public.monitors ADD COLUMN check_spec jsonb;
        UPDATE public.monitors m SET check_spec = s.check_spec
          FROM pgpulse.schedule s WHERE s.monitor_id = m.id;
        ALTER TABLE public.monitors
            ALTER COLUMN check_spec SET NOT NULL,
            ALTER COLUMN next_check_at SET NOT NULL,
            ALTER COLUMN check_interval_seconds SET NOT NULL,
            ADD CONSTRAINT monitor_method_known CHECK (
                method IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')),
            ADD CONSTRAINT monitor_timeout_100ms_to_120s CHECK (timeout_ms BETWEEN 100 AND 120000),
            ADD CONSTRAINT monitor_expected_status_http CHECK (
                cardinality(expected_status) BETWEEN 1 AND 32
                AND 100 <= ALL (expected_status) AND 599 >= ALL (expected_status)),
            ADD CONSTRAINT monitor_check_retries_0_to_5 CHECK (check_retries BETWEEN 0 AND 5),
            ADD CONSTRAINT monitor_check_retry_delay CHECK (check_retry_delay_ms BETWEEN 0 AND 60000),
            ADD CONSTRAINT monitor_interval_1_to_1440_minutes CHECK (check_interval_minutes BETWEEN 1 AND 1440),
            ADD CONSTRAINT monitors_preferred_region_fkey FOREIGN KEY (preferred_region)
                REFERENCES pgpulse.regions (code) ON UPDATE CASCADE ON DELETE SET NULL,
            ADD CONSTRAINT monitor_criticality_known CHECK (
                criticality IN ('critical', 'high', 'normal', 'low')),
            ADD CONSTRAINT monitor_interval_seconds_10_to_86400 CHECK (
                check_interval_seconds BETWEEN 10 AND 86400),
            ADD CONSTRAINT monitor_check_regions_list CHECK (
                cardinality(check_regions) BETWEEN 1 AND 16
                AND array_position(check_regions, NULL) IS NULL),
            ADD CONSTRAINT monitor_next_check_at_finite CHECK (isfinite(next_check_at));
    ELSE
        FOR v IN SELECT step, name FROM pgpulse.adoption WHERE kind = 'released' ORDER BY step LOOP
            EXECUTE 'ALTER TABLE public.monitors ' || v.name;
        END LOOP;
        DELETE FROM pgpulse.adoption WHERE kind = 'released';
        ALTER TABLE pgpulse.adoption DROP CONSTRAINT adoption_kind_known;
        ALTER TABLE pgpulse.adoption ADD CONSTRAINT adoption_kind_known
            CHECK (kind IN ('column', 'index', 'trigger'));
        INSERT INTO pgpulse.adoption (kind, name)
        VALUES ('column', 'check_spec'), ('index', 'monitors_due'), ('trigger', 'monitors_set_phase');
    END IF;
END
$restore$;
-- The tick's lookup: only active monitors, in due order.
CREATE INDEX monitors_due ON public.monitors (next_check_at) WHERE is_active;

DROP FUNCTION pgpulse.resync(boolean), pgpulse.drift(), pgpulse.following(),
    pgpulse._follow_insert(),
    pgpulse._follow_update(),
    pgpulse._follow_delete(),
    pgpulse._follow_truncate(),
    pgpulse._follow_update_named(),
    pgpulse._region_renamed(),
    pgpulse.check_now(text),
    pgpulse._schedule_now(tid[]),
    pgpulse._schedule_insert(anyarray, boolean),
    pgpulse._schedule_problem_now(pgpulse.schedule),
    pgpulse._schedule_problem(bigint, text, text, integer, integer[], integer, integer, text, text[]),
    pgpulse._check_spec(text, text, integer, integer[], integer, integer),
    pgpulse._interval_s(integer, integer),
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], tid[]);

-- Gives a new monitor without next_check_at its first slot on its phase grid. An interval
-- out of range gets now() instead, so that the row's CHECK constraint names the problem
-- (rather than a division by zero here, or a NULL next_check_at).
CREATE FUNCTION pgpulse._monitor_set_phase() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.next_check_at := CASE
        WHEN NEW.check_interval_seconds BETWEEN 10 AND 86400
            THEN pgpulse.next_slot(NEW.id, NEW.check_interval_seconds, now())
        ELSE now()
    END;
    RETURN NEW;
END
$$;

-- Builds a monitor's check_spec from the check's columns.
CREATE FUNCTION pgpulse._monitor_check_spec() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.check_spec := jsonb_build_object(
        'url', NEW.url, 'method', NEW.method, 'timeout_ms', NEW.timeout_ms,
        'expected_status', to_jsonb(NEW.expected_status),
        'retry', jsonb_build_object('max_attempts', NEW.check_retries + 1,
                                    'delay_ms', NEW.check_retry_delay_ms));
    RETURN NEW;
END
$$;

-- Keeps check_interval_seconds and check_interval_minutes in step: the one an INSERT or
-- UPDATE sets wins (seconds when both); minutes is the nearest whole minute, 1 to 1440.
-- Fires before monitors_set_phase (triggers fire in name order), which needs the seconds.
CREATE FUNCTION pgpulse._monitor_interval() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' AND NEW.check_interval_seconds IS NOT NULL)
       OR (TG_OP = 'UPDATE' AND NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds) THEN
        NEW.check_interval_minutes := least(1440, greatest(1, round(NEW.check_interval_seconds / 60.0)));
    ELSE
        NEW.check_interval_seconds := NEW.check_interval_minutes * 60;
    END IF;
    RETURN NEW;
END
$$;

-- check_regions names regions that exist (a region removed later is skipped by the tick).
CREATE FUNCTION pgpulse._monitor_check_regions() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unknown text;
BEGIN
    SELECT min(c) INTO v_unknown
      FROM unnest(NEW.check_regions) c
     WHERE NOT EXISTS (SELECT 1 FROM pgpulse.regions r WHERE r.code = c);
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'check_regions: unknown region "%"', v_unknown
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;

-- A changed interval re-phases the next check onto the new interval's grid: never later
-- than one new interval from now (1440 -> 1 minutes does not wait for the old slot); so
-- does re-activation (its next slot, not a catch-up for the time it was off). A
-- next_check_at set by the same UPDATE wins.
CREATE FUNCTION pgpulse._monitor_rephase() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.next_check_at IS NOT DISTINCT FROM OLD.next_check_at
       AND NEW.check_interval_seconds BETWEEN 10 AND 86400 THEN
        NEW.next_check_at := pgpulse._grid_slot(NEW.id::text, NEW.check_interval_seconds, now());
    END IF;
    RETURN NEW;
END
$$;

-- A deactivated or deleted monitor's waiting jobs go; a deleted one's dead letters too (a
-- retry would bring them back). SECURITY DEFINER: the product's own role changes monitors
-- and need not be allowed to touch pgpulse's tables.
CREATE FUNCTION pgpulse._monitor_drop_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgpulse.outbox WHERE monitor_id = OLD.id;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM pgpulse.dead_letters WHERE monitor_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;

-- A changed check (or criticality, or fallback choice) reaches the jobs still waiting.
CREATE FUNCTION pgpulse._monitor_update_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a multi-region job keeps the regions of its slot
    UPDATE pgpulse.outbox
       SET payload = NEW.check_spec || jsonb_strip_nulls(
               jsonb_build_object('slot_regions', payload -> 'slot_regions')),
           criticality = NEW.criticality, allow_fallback = NEW.allow_fallback
     WHERE monitor_id = NEW.id;
    RETURN NULL;
END
$$;

-- A job put back after a failure (the relay's requeue, a dead letter retried) may have
-- been in flight while its monitor changed: it is dropped when the monitor is inactive or
-- parked (its URL refused), and otherwise carries the monitor's check as it is now. (A job
-- without a monitor row was not written by the tick, or its monitor was deleted while it
-- was in flight: kept.)
CREATE OR REPLACE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT m.is_active, m.check_spec, m.criticality, m.allow_fallback, m.next_check_at
      INTO v_monitor
      FROM public.monitors m WHERE m.id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active OR v_monitor.next_check_at = '9999-12-31 23:59:59+00' THEN
        RETURN NULL;
    END IF;
    NEW.payload := v_monitor.check_spec || jsonb_strip_nulls(
        jsonb_build_object('slot_regions', NEW.payload -> 'slot_regions'));
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;

-- Refuses a monitor whose URL url_problem refuses (check_violation, one line naming the
-- problem). A parked monitor (its URL was refused when revision 0010 or
-- recheck_monitor_urls found it) is scheduled again when its URL is fixed, and refused
-- when something else would make it due (a re-activation, a new interval, a "check now").
CREATE FUNCTION pgpulse._monitor_url_checked() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_problem text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.url IS NOT DISTINCT FROM OLD.url
       AND NOT (OLD.next_check_at = '9999-12-31 23:59:59+00'
                AND NEW.next_check_at IS DISTINCT FROM OLD.next_check_at) THEN
        RETURN NEW;
    END IF;
    v_problem := pgpulse.url_problem(NEW.url);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'monitor url: %', v_problem
            USING ERRCODE = 'check_violation', CONSTRAINT = 'monitor_url_http',
                  SCHEMA = 'public', TABLE = 'monitors', COLUMN = 'url',
                  DETAIL = format('monitor %s', NEW.id);
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.next_check_at = '9999-12-31 23:59:59+00'
       AND NEW.next_check_at = OLD.next_check_at THEN
        NEW.next_check_at := pgpulse._grid_slot(NEW.id::text, NEW.check_interval_seconds, now());
    END IF;
    RETURN NEW;
END
$$;

-- Checks every monitor's URL again under the rules as they are now (after a change of
-- pgpulse.allow_private_targets): parks those refused now, dropping their waiting jobs, and
-- schedules again the parked ones accepted now.
CREATE OR REPLACE FUNCTION pgpulse.recheck_monitor_urls(OUT parked integer, OUT resumed integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH refused AS (
        UPDATE public.monitors m SET next_check_at = '9999-12-31 23:59:59+00'
         WHERE m.next_check_at <> '9999-12-31 23:59:59+00'
           AND pgpulse.url_problem(m.url) IS NOT NULL
        RETURNING m.id::text AS id
    ), dropped AS (
        DELETE FROM pgpulse.outbox o USING refused r WHERE o.monitor_id::text = r.id
    )
    SELECT count(*) INTO parked FROM refused;
    UPDATE public.monitors m
       SET next_check_at = pgpulse._grid_slot(m.id::text, m.check_interval_seconds, now())
     WHERE m.next_check_at = '9999-12-31 23:59:59+00' AND pgpulse.url_problem(m.url) IS NULL;
    GET DIAGNOSTICS resumed = ROW_COUNT;
END
$$;

-- Monitors whose URL the rules refuse now, and whether they are parked.
CREATE OR REPLACE FUNCTION pgpulse.monitor_url_problems()
RETURNS TABLE (monitor_id text, url text, problem text, parked boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.id::text, m.url, p.problem, m.next_check_at = '9999-12-31 23:59:59+00'
      FROM public.monitors m
     CROSS JOIN LATERAL pgpulse.url_problem(m.url) p(problem)
     WHERE p.problem IS NOT NULL
     ORDER BY m.id::text
$$;

-- The region a monitor's job goes to (see _routing), or NULL for round-robin.
CREATE OR REPLACE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_allow_fallback THEN p_route ->> p_preferred ELSE p_preferred END;

-- Claims one chunk of due monitors, writes their jobs, bumps their slots; returns counts.
-- Every slot of a monitor up to the horizon is written at once (several for sub-minute
-- intervals), each with its exact deliver_at; a multi-region monitor (check_regions) gets
-- one job per slot and region (see _route_each). p_route, p_wheel: from _routing. A
-- single-region monitor's region is route ->> preferred_region when it allows fallback,
-- else its preferred region (_route, spelled out); NULL: the wheel (round-robin). With no
-- wheel, monitors that no region can take are not claimed (they stay due; the tick counts
-- them). p_rr: the round-robin position this chunk starts at; wheeled: monitors routed by
-- the wheel. p_keep_existing: a slot can only be in the outbox already when next_check_at
-- was moved back by hand; the tick first tries a plain INSERT (about 10% faster than ON
-- CONFLICT's per-row check) and, should that hit the unique key, redoes the chunk with
-- p_keep_existing, which keeps the jobs already there. Slots inside a maintenance window
-- are not written (skipped counts them, and so does the window). p_now: the clock, for
-- tests that move it (NULL: clock_timestamp()). p_skip: ids (as text) of monitors this
-- tick could not schedule (see _tick_step). p_only: only these monitors (ids as text), for
-- the triggers that schedule a new or re-activated monitor at once.
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}',
    p_only text[] DEFAULT NULL,
    OUT claimed integer, OUT written integer, OUT wheeled integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- a chunk is small next to the table: join it row by row, never hash the whole table
SET enable_hashjoin = off
SET enable_mergejoin = off
-- the planner cannot know how many slots a monitor has this tick and guesses 1000: JIT
-- compiling for that guess costs seconds and never pays off
SET jit = off
AS $$
DECLARE
    v_now     timestamptz := coalesce(p_now, clock_timestamp());
    -- without any window (the usual case) the tick never looks for one per slot
    v_windows boolean := EXISTS (SELECT 1 FROM pgpulse.maintenance_windows);
BEGIN
    WITH due AS MATERIALIZED (
        SELECT m.ctid AS row_ref, m.id, m.check_spec, m.criticality, m.allow_fallback,
               m.check_regions, m.check_interval_seconds AS iv_s,
               CASE
                   -- more than a year late (or a -infinity that slipped past the CHECK):
                   -- restart on the phase grid, the latest slot not after now
                   WHEN m.next_check_at < v_now - interval '1 year'
                       THEN pgpulse._grid_slot(m.id::text, m.check_interval_seconds,
                                               v_now - make_interval(secs => m.check_interval_seconds))
                   -- catch-up: the latest slot not after now, never one per missed slot
                   ELSE m.next_check_at + make_interval(secs => m.check_interval_seconds)
                        * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                            / m.check_interval_seconds))::float8
               END AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                              ELSE m.preferred_region END
               END AS routed
          FROM public.monitors m
         WHERE m.is_active AND m.next_check_at <= p_horizon
           AND (p_only IS NULL OR m.id::text = ANY (p_only))
           AND CASE WHEN m.check_regions IS NULL
                    THEN p_wheel IS NOT NULL
                         OR CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                 ELSE m.preferred_region END IS NOT NULL
                    -- (_route_each spelled out: a SQL function starts an executor per call)
                    ELSE EXISTS (SELECT 1 FROM unnest(m.check_regions) c(code)
                                  WHERE CASE WHEN m.allow_fallback THEN p_route ->> c.code
                                             ELSE c.code END IS NOT NULL)
               END
           AND (cardinality(p_skip) = 0 OR m.id::text <> ALL (p_skip))
         ORDER BY m.next_check_at
         LIMIT p_chunk
           FOR UPDATE OF m SKIP LOCKED
    ), routed AS (
        -- the wheel continues where the previous chunk left it: a running count of the
        -- wheel's rows (no sort needed)
        SELECT d.*,
               -- the slots up to the horizon: the first one, and n - 1 more
               floor(extract(epoch FROM p_horizon - d.slot) / d.iv_s)::integer + 1 AS n,
               CASE WHEN d.check_regions IS NULL THEN
                   ARRAY[coalesce(d.routed,
                       p_wheel[1 + ((p_rr + count(*) FILTER (WHERE d.routed IS NULL
                                                               AND d.check_regions IS NULL)
                                                OVER (ROWS UNBOUNDED PRECEDING))
                                    % cardinality(p_wheel))::integer])]
               ELSE (SELECT array_agg(DISTINCT r.code ORDER BY r.code)
                       FROM unnest(d.check_regions) c(code)
                      CROSS JOIN LATERAL (SELECT CASE WHEN d.allow_fallback THEN p_route ->> c.code
                                                      ELSE c.code END) r(code)
                      WHERE r.code IS NOT NULL) END AS regions
          FROM due d
    ), windows AS MATERIALIZED (
        SELECT * FROM pgpulse._maintenance_occurrences(v_now - interval '1 day', p_horizon)
         WHERE v_windows
    ), slot AS NOT MATERIALIZED (
        -- every slot up to the horizon, and the maintenance window it falls in
        SELECT r.*, s.at,
               CASE WHEN v_windows THEN (
                   SELECT min(w.window_id) FROM windows w
                    WHERE (w.monitor_ids IS NULL OR r.id::text = ANY (w.monitor_ids))
                      AND s.at >= w.lo AND s.at < w.hi
                      AND (s.at AT TIME ZONE w.time_zone) >= w.local_start
                      AND (s.at AT TIME ZONE w.time_zone) < w.local_end) END AS window_id
          FROM routed r
         CROSS JOIN LATERAL (SELECT r.slot + make_interval(secs => r.iv_s) * k AS at
                               FROM generate_series(0, r.n - 1) k) s
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT md5(s.id::text || '/' || g.region || '/' || extract(epoch FROM s.at)::text)::uuid,
               s.id, g.region, s.criticality, s.at, s.at,
               s.at + make_interval(secs => s.iv_s), s.allow_fallback,
               CASE WHEN s.check_regions IS NULL THEN s.check_spec
                    ELSE s.check_spec || jsonb_build_object('slot_regions', s.regions) END
          FROM slot s
         CROSS JOIN LATERAL unnest(s.regions) g(region)
         WHERE s.window_id IS NULL
    ), skips AS (
        SELECT window_id, count(*) AS n FROM slot
         WHERE v_windows AND window_id IS NOT NULL GROUP BY window_id
    ), counted AS (
        UPDATE pgpulse.maintenance_windows w
           SET skipped_slots = w.skipped_slots + k.n
          FROM skips k
         WHERE w.id = k.window_id
    ), inserted AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE NOT p_keep_existing
        RETURNING 1
    ), inserted_keeping AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE p_keep_existing
            ON CONFLICT DO NOTHING
        RETURNING 1
    ), bumped AS (
        UPDATE public.monitors m
           SET next_check_at = r.slot + make_interval(secs => r.iv_s) * r.n,
               last_scheduled_at = v_now
          FROM routed r
         WHERE m.ctid = r.row_ref
    )
    SELECT d.claimed, d.wheeled,
           (SELECT count(*) FROM inserted) + (SELECT count(*) FROM inserted_keeping),
           (SELECT coalesce(sum(n), 0) FROM skips)
      INTO claimed, wheeled, written, skipped
      FROM (SELECT count(*) AS claimed,
                   count(*) FILTER (WHERE routed IS NULL AND check_regions IS NULL) AS wheeled
              FROM due) d;
END
$$;

-- One step of the tick: one chunk of due monitors (the first one small, as nothing is
-- known about the speed yet), counted in the run record. Should the chunk fail on some
-- monitor's row, the step goes one monitor at a time and skips the rows that fail, so
-- one bad row never stops the others; skip: the monitors skipped so far in this tick.
-- done: nothing was left to claim. A lock wait past the deadline raises lock_not_available.
CREATE OR REPLACE FUNCTION pgpulse._tick_step(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_chunk integer,
    p_rr bigint, p_skip text[], p_slowest interval,
    OUT done boolean, OUT next_rr bigint, OUT skip text[], OUT slowest interval)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t0       timestamptz := clock_timestamp();
    v_chunk    integer := CASE WHEN p_slowest IS NULL THEN least(p_chunk, 500) ELSE p_chunk END;
    -- one horizon for the whole tick, from its start: a horizon that moved on with each
    -- chunk claimed sub-minute monitors again and again while the tick ran
    v_horizon  timestamptz := coalesce(
        (SELECT r.started_at + make_interval(secs => r.lookahead_ms / 1000.0)
           FROM pgpulse.tick_runs r WHERE r.id = p_run_id),
        clock_timestamp() + p_lookahead);
    v_route    jsonb;
    v_wheel    text[];
    v_claimed  integer := 0;
    v_written  integer := 0;
    v_wheeled  integer := 0;
    v_skipped  integer := 0;
    v_detail   text;
    v_in_windows integer := 0;  -- slots inside a maintenance window, not written
    v_failed   boolean := false;
    v_id       text;
    c          record;
BEGIN
    skip := coalesce(p_skip, '{}');
    PERFORM pgpulse._tick_bound_lock_wait(p_deadline);
    -- regions change while a tick runs (the relay writes their health): read per chunk
    SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
    BEGIN
        BEGIN
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, v_route, v_wheel,
                                                     false, NULL, skip);
        EXCEPTION WHEN unique_violation THEN
            -- a slot of this chunk is in the outbox already: redo it, keeping those jobs
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, v_route, v_wheel,
                                                     true, NULL, skip);
        END;
        v_claimed := c.claimed;
        v_written := c.written;
        v_wheeled := c.wheeled;
        v_in_windows := c.skipped;
    EXCEPTION
        WHEN lock_not_available OR query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            v_failed := true;
    END;
    IF v_failed THEN
        FOR i IN 1 .. v_chunk LOOP
            -- the monitor the next one-monitor chunk claims (the same query, as _tick_chunk)
            SELECT m.id::text INTO v_id
              FROM public.monitors m
             WHERE m.is_active AND m.next_check_at <= v_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN v_wheel IS NOT NULL
                             OR CASE WHEN m.allow_fallback THEN v_route ->> m.preferred_region
                                     ELSE m.preferred_region END IS NOT NULL
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, v_route) IS NOT NULL
                   END
               AND (cardinality(skip) = 0 OR m.id::text <> ALL (skip))
             ORDER BY m.next_check_at
             LIMIT 1
               FOR UPDATE OF m SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            BEGIN
                SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, 1, p_rr + v_wheeled, v_route,
                                                         v_wheel, true, NULL, skip);
                EXIT WHEN c.claimed = 0;
                v_claimed := v_claimed + c.claimed;
                v_written := v_written + c.written;
                v_wheeled := v_wheeled + c.wheeled;
                v_in_windows := v_in_windows + c.skipped;
            EXCEPTION
                WHEN lock_not_available OR query_canceled THEN
                    RAISE;
                WHEN OTHERS THEN
                    skip := skip || v_id;
                    v_skipped := v_skipped + 1;
                    v_detail := coalesce(v_detail, format('monitor %s: %s', v_id, SQLERRM));
            END;
        END LOOP;
    END IF;
    IF v_claimed > 0 OR v_skipped > 0 THEN
        UPDATE pgpulse.tick_runs
           SET monitors_claimed = monitors_claimed + v_claimed,
               jobs_written = jobs_written + v_written,
               maintenance_skipped = maintenance_skipped + v_in_windows,
               chunks = chunks + 1,
               skipped = skipped + v_skipped,
               skip_detail = coalesce(skip_detail, v_detail)
         WHERE id = p_run_id;
    END IF;
    IF v_written > 0 THEN
        PERFORM pg_notify('pgpulse_outbox', v_written::text);
    END IF;
    done := v_claimed = 0 AND v_skipped = 0;
    next_rr := p_rr + v_wheeled;
    slowest := greatest(coalesce(p_slowest, interval '0'), clock_timestamp() - v_t0);
END
$$;

-- Due monitors that no region can take now (none of a multi-region monitor's regions, or
-- no round-robin region), counted up to p_limit so that the count stays inside the budget.
CREATE OR REPLACE FUNCTION pgpulse._unrouted(p_horizon timestamptz, p_route jsonb, p_limit integer)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer
      FROM (SELECT 1
              FROM public.monitors m
             WHERE m.is_active AND m.next_check_at <= p_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                  ELSE m.preferred_region END IS NULL
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NULL
                   END
             LIMIT p_limit) u
$$;

-- Closes a tick's run record: why it stopped and, while its budget lasts, how many due
-- monitors no region could take. A drained tick also prunes, a bounded batch at a time (so
-- growth stays bounded without pg_cron too): run records older than 30 days, and dead
-- letters older than the database setting pgpulse.dead_letter_retention (14 days unless
-- set, e.g. ALTER DATABASE app SET pgpulse.dead_letter_retention = '30 days').
CREATE OR REPLACE FUNCTION pgpulse._tick_finish(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_stop text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_route     jsonb;
    v_unrouted  integer := 0;
    v_retention interval := coalesce(
        nullif(current_setting('pgpulse.dead_letter_retention', true), '')::interval,
        interval '14 days');
BEGIN
    -- the record itself may wait a little past the deadline, never long
    PERFORM pgpulse._tick_bound_lock_wait(greatest(p_deadline, clock_timestamp() + interval '1 second'));
    IF p_stop = 'drained' THEN
        SELECT r.route INTO v_route FROM pgpulse._routing() r;
        v_unrouted := pgpulse._unrouted(clock_timestamp() + p_lookahead, v_route, 1000000);
        DELETE FROM pgpulse.tick_runs
         WHERE id IN (SELECT id FROM pgpulse.tick_runs
                       WHERE started_at < now() - interval '30 days' LIMIT 1000);
        DELETE FROM pgpulse.dead_letters
         WHERE job_id IN (SELECT job_id FROM pgpulse.dead_letters
                           WHERE failed_at < now() - v_retention LIMIT 1000);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;

-- Brings monitors up to where the ticks have written: their slots up to that horizon go to
-- the outbox now (the next tick would write them late), and the relay is woken. A no-op
-- when no tick ran lately or nothing of theirs is due. Returns the jobs written.
CREATE FUNCTION pgpulse._schedule_now(p_ids text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_horizon timestamptz := pgpulse._written_ahead_to();
    v_route   jsonb;
    v_wheel   text[];
    v_written integer;
BEGIN
    IF v_horizon IS NULL OR v_horizon < clock_timestamp() OR cardinality(p_ids) IS NULL THEN
        RETURN 0;
    END IF;
    SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
    SELECT c.written INTO v_written
      FROM pgpulse._tick_chunk(v_horizon, cardinality(p_ids), floor(random() * 1000000)::bigint,
                               v_route, v_wheel, true, p_only => p_ids) c;
    IF v_written > 0 THEN
        PERFORM pg_notify('pgpulse_outbox', v_written::text);
    END IF;
    RETURN v_written;
END
$$;

-- New monitors: their first slots within the written horizon are written at once.
-- SECURITY DEFINER: the product's role inserts monitors and need not write the outbox.
CREATE FUNCTION pgpulse._monitors_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgpulse._schedule_now(
        (SELECT array_agg(n.id::text) FROM new_monitors n WHERE n.is_active));
    RETURN NULL;
END
$$;

-- ... and that slot is written at once when it falls within the written horizon. A new
-- interval first takes back the jobs written ahead for the old one's slots still to come (a
-- monitor moved from 10 s to an hour was otherwise checked every 10 s for another minute).
CREATE FUNCTION pgpulse._monitor_rephased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jobs written ahead on the old interval's grid: a slot already due is still checked
    IF OLD.is_active AND NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = NEW.id AND scheduled_for > now();
    END IF;
    PERFORM pgpulse._schedule_now(ARRAY[NEW.id::text]);
    RETURN NULL;
END
$$;

CREATE TRIGGER monitors_interval
    BEFORE INSERT OR UPDATE OF check_interval_minutes, check_interval_seconds
    ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_interval();

CREATE TRIGGER monitors_check_regions
    BEFORE INSERT OR UPDATE OF check_regions ON public.monitors
    FOR EACH ROW WHEN (NEW.check_regions IS NOT NULL)
    EXECUTE FUNCTION pgpulse._monitor_check_regions();

CREATE TRIGGER monitors_set_phase
    BEFORE INSERT ON public.monitors
    FOR EACH ROW WHEN (NEW.next_check_at IS NULL)
    EXECUTE FUNCTION pgpulse._monitor_set_phase();

-- after monitors_interval (triggers fire in name order), which sets the seconds
CREATE TRIGGER monitors_rephase
    BEFORE UPDATE OF is_active, check_interval_minutes, check_interval_seconds ON public.monitors
    FOR EACH ROW WHEN (NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds
                       OR (NEW.is_active AND NOT OLD.is_active))
    EXECUTE FUNCTION pgpulse._monitor_rephase();

CREATE TRIGGER monitors_update_jobs
    AFTER UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                    check_retry_delay_ms, check_spec, criticality, allow_fallback
    ON public.monitors
    FOR EACH ROW WHEN (NEW.check_spec IS DISTINCT FROM OLD.check_spec
                       OR NEW.criticality IS DISTINCT FROM OLD.criticality
                       OR NEW.allow_fallback IS DISTINCT FROM OLD.allow_fallback)
    EXECUTE FUNCTION pgpulse._monitor_update_jobs();

CREATE TRIGGER monitors_deactivated_drop_jobs
    AFTER UPDATE OF is_active ON public.monitors
    FOR EACH ROW WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION pgpulse._monitor_drop_jobs();

CREATE TRIGGER monitors_deleted_drop_jobs
    AFTER DELETE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_drop_jobs();

-- Last of the BEFORE triggers (name order): it sees the slot monitors_rephase set. The
-- tick's own updates (next_check_at of due monitors) never call it.
CREATE TRIGGER monitors_url_checked
    BEFORE INSERT OR UPDATE OF url ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_url_checked();

CREATE TRIGGER monitors_url_parked
    BEFORE UPDATE OF next_check_at, is_active, check_interval_minutes, check_interval_seconds
    ON public.monitors
    FOR EACH ROW WHEN (OLD.next_check_at = '9999-12-31 23:59:59+00'
                       AND NEW.next_check_at IS DISTINCT FROM OLD.next_check_at)
    EXECUTE FUNCTION pgpulse._monitor_url_checked();

CREATE TRIGGER monitors_inserted_schedule_now
    AFTER INSERT ON public.monitors
    REFERENCING NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._monitors_inserted();

CREATE TRIGGER monitors_rephased_schedule_now
    AFTER UPDATE OF is_active, check_interval_minutes, check_interval_seconds ON public.monitors
    FOR EACH ROW WHEN (NEW.is_active AND (NOT OLD.is_active
                       OR NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds))
    EXECUTE FUNCTION pgpulse._monitor_rephased();

-- (an adopted table's check_spec is a generated column: only a table pgpulse made had this)
DO $check_spec$
BEGIN
    IF to_regclass('pgpulse.adoption') IS NULL THEN
        -- Only the check's own columns: the tick's updates (next_check_at) do not fire it.
        CREATE TRIGGER monitors_check_spec
            BEFORE INSERT OR UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                                       check_retry_delay_ms, check_spec
            ON public.monitors
            FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_check_spec();
    END IF;
END
$check_spec$;
REVOKE EXECUTE ON FUNCTION
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]),
    pgpulse._monitor_rephase(),
    pgpulse._monitor_drop_jobs(),
    pgpulse._monitor_update_jobs(),
    pgpulse._monitor_url_checked()
    FROM PUBLIC;
DROP TABLE pgpulse.maintenance_skips;
DROP TABLE pgpulse.schedule;

-- URL checks (issue 26), undone: url_problem as 0016 had it; the monitors only the new rules
-- refused are scheduled again.
CREATE OR REPLACE FUNCTION pgpulse.url_problem(p_url text)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_switch   text := lower(coalesce(current_setting('pgpulse.allow_private_targets', true), ''));
    v_private  boolean;
    v_parts    text[];
    v_bracketed boolean;
    v_host     text;
    v_shown    text;   -- the host as the URL writes it
    v_name     text;
    v_port     text;
    v_ip       inet;
    v_v4       inet;
    v_label    text;
    v_value    numeric;
    v_address  numeric := 0;
    v_kind     text;
    m          text[];
BEGIN
    IF v_switch IN ('on', 'true', 'yes', '1') THEN
        v_private := true;
    ELSIF v_switch IN ('', 'off', 'false', 'no', '0') THEN
        v_private := false;
    ELSE
        RAISE EXCEPTION 'pgpulse.allow_private_targets must be on or off, not "%"', v_switch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_url IS NULL THEN
        RETURN NULL;
    ELSIF length(p_url) <= 2048
          -- the usual URL, a public-looking DNS name in lower case (up to 63 characters
          -- with the port), port 1-9999 or none, printable ASCII without a backslash after
          -- it, is fine: no need to take it apart (a tenth of the time)
          AND length(split_part(p_url, '/', 3)) <= 63
          AND p_url ~ '^https?://([a-z0-9-]+\.)+[a-z][a-z0-9-]*(:[1-9][0-9]?[0-9]?[0-9]?)?([/?#][!-\[\]-~]*)?$'
          AND p_url !~ '^https?://[^/?#]*\.(localhost|internal|local|localdomain|lan|intranet|corp|arpa|goog)(:|/|\?|#|$)' THEN
        RETURN NULL;
    ELSIF length(p_url) > 2048 THEN
        RETURN format('%s characters long, over the limit of 2048', length(p_url));
    ELSIF p_url ~ '[[:space:][:cntrl:]\u0080-\u009f\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]' THEN
        RETURN 'has whitespace or control characters';
    ELSIF strpos(p_url, '\') > 0 THEN
        -- URL parsers disagree on it (a WHATWG parser reads it as "/"): percent-encode it
        RETURN 'has a backslash (write it as %5C)';
    END IF;

    m := regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*):(//)?([^/?#]*)');
    IF m IS NULL OR (lower(m[1]) IN ('http', 'https') AND m[2] IS NULL) THEN
        RETURN 'must start with http:// or https://';
    ELSIF lower(m[1]) NOT IN ('http', 'https') THEN
        RETURN format('scheme %s, not http or https', m[1]);
    ELSIF m[1] NOT IN ('http', 'https') THEN
        RETURN format('scheme %s in lower case, please (http or https)', m[1]);
    ELSIF strpos(m[3], '@') > 0 THEN
        RETURN 'has a user name or password before the host (userinfo is refused)';
    END IF;

    -- host and port
    v_bracketed := left(m[3], 1) = '[';
    IF v_bracketed THEN
        m := regexp_match(m[3], '^\[([^\]]*)\](:(.*))?$');
        IF m IS NULL THEN
            RETURN 'an IPv6 address without its closing bracket';
        END IF;
    ELSE
        m := regexp_match(m[3], '^([^:]*)(:(.*))?$');
    END IF;
    v_host := m[1];
    v_port := m[3];
    v_shown := CASE WHEN v_bracketed THEN '[' || v_host || ']' ELSE v_host END;
    IF m[2] IS NOT NULL THEN
        IF v_port = '' THEN
            RETURN 'empty port after ":" (give 1-65535 or none)';
        ELSIF v_port !~ '^[0-9]+$' THEN
            RETURN format('port "%s" is not a number 1-65535', v_port);
        ELSIF length(ltrim(v_port, '0')) > 5 OR v_port::integer NOT BETWEEN 1 AND 65535 THEN
            RETURN format('port %s out of range 1-65535', v_port);
        END IF;
    END IF;
    IF v_host = '' THEN
        RETURN 'no host';
    END IF;

    IF v_bracketed THEN
        -- a bracketed IPv6 address (a zone id, %25..., is refused with the rest)
        IF v_host !~ '^[0-9A-Fa-f:.]+$' THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END IF;
        BEGIN
            v_ip := v_host::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END;
        IF family(v_ip) <> 6 THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END IF;
    ELSE
        -- a name, as a worker's URL parser sees it: IDNA maps full-width characters and
        -- ideographic full stops to ASCII (１２７。０。０。１ is 127.0.0.1); a final dot
        -- names the same host
        v_name := lower(v_host);
        IF v_name ~ '[^\x01-\x7f]' THEN
            IF current_setting('server_encoding') <> 'UTF8' THEN
                RETURN format('host %s is not ASCII (write it as punycode, xn--...)', v_host);
            END IF;
            v_name := translate(lower(normalize(v_name, NFKC)), '。．｡', '...');
        END IF;
        IF right(v_name, 1) = '.' THEN
            v_name := left(v_name, -1);
        END IF;
        IF v_name = '' OR v_name ~ '(^|\.)(\.|$)' THEN
            RETURN format('host %s has an empty label', v_host);
        ELSIF regexp_replace(v_name, '[^\x01-\x7f]', '', 'g') !~ '^[a-z0-9._-]*$' THEN
            RETURN format('host %s has characters a host name cannot have', v_host);
        ELSIF length(v_name) > 253 OR v_name ~ '[^.]{64}' THEN
            RETURN format('host %s is longer than DNS allows', left(v_host, 80));
        END IF;
        v_parts := string_to_array(v_name, '.');
        IF v_parts[cardinality(v_parts)] ~ '^(0x[0-9a-f]*|[0-9]+)$' THEN
            -- ends in a number: an IPv4 address, 1 to 4 parts, each decimal, octal (0...)
            -- or hex (0x...), the last filling the bytes left
            IF cardinality(v_parts) > 4 THEN
                RETURN format('host %s is not an IPv4 address', v_host);
            END IF;
            FOR i IN 1 .. cardinality(v_parts) LOOP
                v_label := v_parts[i];
                IF v_label ~ '^0x[0-9a-f]*$' THEN
                    v_label := ltrim(substr(v_label, 3), '0');
                    IF length(v_label) > 8 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_value := ('x' || lpad(v_label, 16, '0'))::bit(64)::bigint;
                ELSIF v_label ~ '^0[0-7]+$' THEN
                    v_label := ltrim(v_label, '0');
                    IF length(v_label) > 11 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_value := 0;
                    FOR j IN 1 .. length(v_label) LOOP
                        v_value := v_value * 8 + substr(v_label, j, 1)::integer;
                    END LOOP;
                ELSIF v_label ~ '^(0|[1-9][0-9]{0,9})$' THEN
                    v_value := v_label::numeric;
                ELSE
                    RETURN format('host %s is not an IPv4 address', v_host);
                END IF;
                IF i < cardinality(v_parts) THEN
                    IF v_value > 255 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_address := v_address + v_value * 256 ^ (4 - i);
                ELSIF v_value >= 256 ^ (5 - i) THEN
                    RETURN format('host %s is not an IPv4 address', v_host);
                ELSE
                    v_address := v_address + v_value;
                END IF;
            END LOOP;
            v_ip := '0.0.0.0'::inet + v_address::bigint;
        ELSIF v_name IN ('metadata', 'metadata.google.internal', 'metadata.goog',
                         'instance-data', 'instance-data.ec2.internal') THEN
            RETURN format('host %s is a cloud metadata endpoint (always refused)', v_host);
        ELSIF v_private THEN
            RETURN NULL;
        ELSIF v_name IN ('localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback')
              OR v_name LIKE '%.localhost' THEN
            RETURN format('host %s is loopback (allowed only with pgpulse.allow_private_targets = on)',
                          v_host);
        ELSIF v_name ~ '(^|\.)(internal|local|localdomain|lan|intranet|corp|home\.arpa)$' THEN
            RETURN format('host %s is a private network name (allowed only with '
                          'pgpulse.allow_private_targets = on)', v_host);
        ELSE
            RETURN NULL;
        END IF;
    END IF;

    -- an IPv6 address that embeds an IPv4 one (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
    -- NAT64 64:ff9b::a.b.c.d) reaches that one
    v_v4 := v_ip;
    IF family(v_ip) = 6 AND (v_ip << '::ffff:0:0/96' OR v_ip << '64:ff9b::/96'
                             OR (v_ip << '::/96' AND v_ip > '::1')) THEN
        v_v4 := '0.0.0.0'::inet + (v_ip - network(set_masklen(v_ip, 96)));
    END IF;
    v_kind := CASE
        WHEN v_v4 IN ('169.254.169.254', '169.254.170.2', '100.100.100.200', 'fd00:ec2::254')
            THEN 'a cloud metadata endpoint'
        WHEN v_v4 << '127.0.0.0/8' OR v_v4 = '::1' THEN 'loopback'
        WHEN v_v4 << '169.254.0.0/16' OR v_v4 << 'fe80::/10' THEN 'link-local'
        WHEN v_v4 << '0.0.0.0/8' OR v_v4 = '0.0.0.0' OR v_v4 = '::' THEN 'the unspecified address'
        WHEN v_v4 << '10.0.0.0/8' OR v_v4 << '172.16.0.0/12' OR v_v4 << '192.168.0.0/16'
             OR v_v4 << '100.64.0.0/10' OR v_v4 << 'fc00::/7' OR v_v4 << 'fec0::/10' THEN 'private'
        WHEN v_v4 << '224.0.0.0/4' OR v_v4 << 'ff00::/8' THEN 'multicast'
        WHEN v_v4 << '240.0.0.0/4' OR v_v4 << '192.0.0.0/24' OR v_v4 << '198.18.0.0/15'
            THEN 'reserved'
    END;
    IF v_kind IS NULL OR (v_private AND v_kind <> 'a cloud metadata endpoint') THEN
        RETURN NULL;
    END IF;
    RETURN format('host %s is %s%s', v_shown,
                  CASE WHEN host(v_v4) <> v_host THEN host(v_v4) || ', ' END,
                  CASE WHEN v_kind = 'a cloud metadata endpoint'
                       THEN v_kind || ' (always refused)'
                       ELSE v_kind || ' (allowed only with pgpulse.allow_private_targets = on)' END);
END
$$;

DO $$
DECLARE
    v_resumed integer;
BEGIN
    SELECT r.resumed INTO v_resumed FROM pgpulse.recheck_monitor_urls() r;
    IF v_resumed > 0 THEN
        RAISE NOTICE 'pgpulse: % parked monitor(s) whose URL 0016 accepts are scheduled again',
            v_resumed;
    END IF;
END
$$;

-- The tick's steps and the monitors' job triggers go back to the migrating role; the owner
-- role keeps no right here (roles belong to the cluster: it stays). The relay's grants that
-- 0009_roles.sql makes after the ticker's are taken first, to come back in 0016's order.
ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
    SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) SECURITY INVOKER;
DO $owner$
BEGIN
    IF to_regrole('pgpulse_owner') IS NULL THEN
        RETURN;
    END IF;
    ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
        OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_drop_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_update_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._outbox_requeue_current() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitors_inserted() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_rephased() OWNER TO CURRENT_USER;
    REVOKE ALL ON public.monitors, pgpulse.regions, pgpulse.outbox, pgpulse.tick_runs,
        pgpulse.dead_letters, pgpulse.maintenance_windows FROM pgpulse_owner;
    REVOKE ALL ON FUNCTION
        pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, integer)
        FROM pgpulse_owner;
    REVOKE ALL ON SCHEMA pgpulse FROM pgpulse_owner;
    IF to_regrole('pgpulse_relay') IS NOT NULL THEN
        REVOKE SELECT ON pgpulse.maintenance_windows FROM pgpulse_relay;
        REVOKE EXECUTE ON FUNCTION pgpulse._routing() FROM pgpulse_relay;
    END IF;
END
$owner$;
