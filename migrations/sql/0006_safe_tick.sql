-- Revision 0006: a tick that is safe inside a product's database.
-- * every function pins search_path; the tick procedure (it commits) only calls them
-- * pg_cron runs the tick as pgpulse_ticker (0006_roles.sql, then sql/cron.sql)
-- * non-finite next_check_at refused; one monitor's bad row never stops the others, the
--   tick records what it skipped and why it stopped
-- * lock waits end at the tick's deadline; arguments are range-checked
-- * an edited, deactivated or deleted monitor's waiting jobs follow the edit

-- "check now" and "never" sentinels become finite: -infinity is due now, +infinity is
-- far enough never to fall due
UPDATE public.monitors SET next_check_at = now() WHERE next_check_at = '-infinity';
UPDATE public.monitors SET next_check_at = '9999-12-31 00:00:00+00' WHERE next_check_at = 'infinity';
ALTER TABLE public.monitors
    ADD CONSTRAINT monitor_next_check_at_finite CHECK (isfinite(next_check_at));

ALTER TABLE pgpulse.tick_runs
    ADD COLUMN skipped     integer NOT NULL DEFAULT 0,
    ADD COLUMN skip_detail text,
    ADD COLUMN stop_reason text;

-- SQL-standard bodies below are bound now: nothing planted in public may be bound
SET LOCAL search_path = pg_catalog, pg_temp;

-- replaced by functions with other arguments
DROP FUNCTION pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz);
DROP FUNCTION pgpulse._unrouted(timestamptz, jsonb);

-- The phase of a monitor inside its interval, from a hash of its id (spreads new monitors),
-- in milliseconds. The hash goes to bigint before abs(): abs() of the smallest integer would
-- overflow.
CREATE OR REPLACE FUNCTION pgpulse._slot_phase(p_id uuid, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0;

-- The first slot at or after p_from on the monitor's phase grid.
CREATE OR REPLACE FUNCTION pgpulse.next_slot(p_id uuid, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds));

-- The same two for a product's own ids that are not uuids (bigint, text: an adopted
-- monitors table), by the hash of their text form; a uuid still takes the uuid ones.
-- (Polymorphic: no SQL-standard body, so these pin search_path; they run per insert.)
CREATE OR REPLACE FUNCTION pgpulse._slot_phase(p_id anyelement, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0
$$;

CREATE OR REPLACE FUNCTION pgpulse.next_slot(p_id anyelement, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds))
$$;

-- The same two for an interval in minutes (kept for callers of revision 0001).
CREATE OR REPLACE FUNCTION pgpulse._phase_seconds(p_id uuid, p_interval_minutes integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pgpulse._slot_phase(p_id, p_interval_minutes * 60);

CREATE OR REPLACE FUNCTION pgpulse.first_slot(p_id uuid, p_interval_minutes integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pgpulse.next_slot(p_id, p_interval_minutes * 60, p_from);

-- A changed interval re-phases the next check onto the new interval's grid: never later
-- than one new interval from now (1440 -> 1 minutes does not wait for the old slot). A
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
-- been in flight while its monitor changed: it is dropped when the monitor is inactive,
-- and otherwise carries the monitor's check as it is now. (A job without a monitor row was
-- not written by the tick, or its monitor was deleted while it was in flight: kept.)
CREATE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT m.is_active, m.check_spec, m.criticality, m.allow_fallback INTO v_monitor
      FROM public.monitors m WHERE m.id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active THEN
        RETURN NULL;
    END IF;
    NEW.payload := v_monitor.check_spec || jsonb_strip_nulls(
        jsonb_build_object('slot_regions', NEW.payload -> 'slot_regions'));
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;

-- The region a monitor's job goes to (see _routing), or NULL for round-robin.
CREATE OR REPLACE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_allow_fallback THEN p_route ->> p_preferred ELSE p_preferred END;

-- The regions a multi-region monitor's slot goes to: each listed region routed by its own
-- fallback rules (see _route), without duplicates (two listed regions whose jobs would land
-- in one region make one job there), sorted; NULL when none can take a job.
CREATE OR REPLACE FUNCTION pgpulse._route_each(p_regions text[], p_allow_fallback boolean, p_route jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(DISTINCT r ORDER BY r)
      FROM unnest(p_regions) c, pgpulse._route(c, p_allow_fallback, p_route) r
     WHERE r IS NOT NULL;
END;

-- The first slot at or after p_from on the phase grid of a monitor whose id, as text, is
-- p_key: the grid next_slot gives a uuid id, for any id type (an adopted table's bigint).
CREATE FUNCTION pgpulse._grid_slot(p_key text, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_timestamp(
        ceil((extract(epoch FROM p_from)
              - (abs(hashtext(p_key)::bigint) % (p_interval_seconds * 1000)) / 1000.0)
             / p_interval_seconds) * p_interval_seconds
        + (abs(hashtext(p_key)::bigint) % (p_interval_seconds * 1000)) / 1000.0);

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
-- tick could not schedule (see _tick_step).
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}',
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
           AND CASE WHEN m.check_regions IS NULL
                    THEN p_wheel IS NOT NULL
                         OR CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                 ELSE m.preferred_region END IS NOT NULL
                    ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NOT NULL
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
               ELSE pgpulse._route_each(d.check_regions, d.allow_fallback, p_route) END AS regions
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

-- Lock waits end at the tick's deadline (a LOCK TABLE or an index build elsewhere cannot
-- hold the tick past its minute); a shorter lock_timeout of the session is kept. Local to
-- the transaction: a commit ends it.
CREATE FUNCTION pgpulse._tick_bound_lock_wait(p_deadline timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_left_ms bigint := greatest(1, ceil(extract(epoch FROM p_deadline - clock_timestamp()) * 1000));
    v_session_ms bigint := extract(epoch FROM current_setting('lock_timeout')::interval) * 1000;
BEGIN
    IF v_session_ms > 0 THEN
        v_left_ms := least(v_left_ms, v_session_ms);
    END IF;
    PERFORM set_config('lock_timeout', v_left_ms || 'ms', true);
END
$$;

-- Checks a tick's arguments and opens its run record; returns its deadline.
CREATE FUNCTION pgpulse._tick_begin(
    p_trigger text, p_budget interval, p_lookahead interval, p_chunk integer,
    OUT run_id bigint, OUT deadline timestamptz, OUT rr bigint)
LANGUAGE plpgsql
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

-- 'budget' when a chunk as slow as the slowest so far would end past the deadline.
CREATE FUNCTION pgpulse._tick_time_up(p_deadline timestamptz, p_slowest interval)
RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN clock_timestamp() + coalesce(p_slowest, interval '0') >= p_deadline
                THEN 'budget' END
$$;

-- One step of the tick: one chunk of due monitors (the first one small, as nothing is
-- known about the speed yet), counted in the run record. Should the chunk fail on some
-- monitor's row, the step goes one monitor at a time and skips the rows that fail, so
-- one bad row never stops the others; skip: the monitors skipped so far in this tick.
-- done: nothing was left to claim. A lock wait past the deadline raises lock_not_available.
CREATE FUNCTION pgpulse._tick_step(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_chunk integer,
    p_rr bigint, p_skip text[], p_slowest interval,
    OUT done boolean, OUT next_rr bigint, OUT skip text[], OUT slowest interval)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t0       timestamptz := clock_timestamp();
    v_chunk    integer := CASE WHEN p_slowest IS NULL THEN least(p_chunk, 500) ELSE p_chunk END;
    v_horizon  timestamptz := clock_timestamp() + p_lookahead;
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
CREATE FUNCTION pgpulse._unrouted(p_horizon timestamptz, p_route jsonb, p_limit integer)
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
-- monitors no region could take.
CREATE FUNCTION pgpulse._tick_finish(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_stop text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_route    jsonb;
    v_unrouted integer := 0;
BEGIN
    -- the record itself may wait a little past the deadline, never long
    PERFORM pgpulse._tick_bound_lock_wait(greatest(p_deadline, clock_timestamp() + interval '1 second'));
    IF p_stop = 'drained' THEN
        SELECT r.route INTO v_route FROM pgpulse._routing() r;
        v_unrouted := pgpulse._unrouted(clock_timestamp() + p_lookahead, v_route, 1000000);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left, the time budget is nearly spent, or a lock held elsewhere would keep it
-- past its deadline; records the run and why it stopped in pgpulse.tick_runs.
-- Must be CALLed outside a transaction block (autocommit), as pg_cron does.
CREATE OR REPLACE PROCEDURE pgpulse.tick(
    INOUT run_id bigint DEFAULT NULL,
    p_trigger text DEFAULT 'manual',
    p_budget interval DEFAULT '45 seconds',
    p_lookahead interval DEFAULT '60 seconds',
    p_chunk integer DEFAULT 5000)
LANGUAGE plpgsql
AS $$
DECLARE
    v_deadline timestamptz;
    v_rr       bigint;
    v_skip     text[];
    v_slowest  interval;   -- NULL until a chunk ran
    v_done     boolean;
    v_stop     text;
BEGIN
    SELECT b.run_id, b.deadline, b.rr INTO run_id, v_deadline, v_rr
      FROM pgpulse._tick_begin(p_trigger, p_budget, p_lookahead, p_chunk) b;
    COMMIT;
    LOOP
        v_stop := pgpulse._tick_time_up(v_deadline, v_slowest);
        EXIT WHEN v_stop IS NOT NULL;
        BEGIN
            SELECT s.done, s.next_rr, s.skip, s.slowest INTO v_done, v_rr, v_skip, v_slowest
              FROM pgpulse._tick_step(run_id, v_deadline, p_lookahead, p_chunk, v_rr, v_skip,
                                      v_slowest) s;
        EXCEPTION WHEN lock_not_available THEN
            v_stop := 'lock_timeout';
        END;
        EXIT WHEN v_stop IS NOT NULL;
        COMMIT;
        IF v_done THEN
            v_stop := 'drained';
            EXIT;
        END IF;
    END LOOP;
    PERFORM pgpulse._tick_finish(run_id, v_deadline, p_lookahead, v_stop);
    COMMIT;
END
$$;

-- after monitors_interval (triggers fire in name order), which sets the seconds
CREATE TRIGGER monitors_rephase
    BEFORE UPDATE OF check_interval_minutes, check_interval_seconds ON public.monitors
    FOR EACH ROW WHEN (NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds)
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

-- The tick writes jobs without last_error: it never fires this.
CREATE TRIGGER outbox_requeue_current
    BEFORE INSERT ON pgpulse.outbox
    FOR EACH ROW WHEN (NEW.last_error IS NOT NULL)
    EXECUTE FUNCTION pgpulse._outbox_requeue_current();

-- every plpgsql function pgpulse has, and every polymorphic SQL one (an adopted table's
-- too), pins search_path; other SQL functions got SQL-standard bodies above
DO $$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN SELECT p.oid FROM pg_catalog.pg_proc p
                       WHERE p.pronamespace = 'pgpulse'::regnamespace AND p.prokind = 'f'
                         AND (p.prolang = (SELECT oid FROM pg_catalog.pg_language
                                            WHERE lanname = 'plpgsql')
                              OR 'anyelement'::regtype = ANY (p.proargtypes)) LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', v_function);
    END LOOP;
END
$$;
ALTER FUNCTION pgpulse._maintenance_occurrences(timestamptz, timestamptz)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION pgpulse.maintenance_window_at(text, timestamptz)
    SET search_path = pg_catalog, pg_temp;

-- ================================================================= privileges
-- Functions are executable by PUBLIC by default: the tick and its parts are not (the
-- roles in sql/roles.sql grant them). The slot functions stay public: the product's own
-- role inserts and edits monitors, whose triggers call them.
REVOKE EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    pgpulse._tick_begin(text, interval, interval, integer),
    pgpulse._tick_time_up(timestamptz, interval),
    pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval),
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[]),
    pgpulse._tick_bound_lock_wait(timestamptz),
    pgpulse._tick_finish(bigint, timestamptz, interval, text),
    pgpulse._routing(),
    pgpulse._unrouted(timestamptz, jsonb, integer),
    pgpulse._monitor_rephase(),
    pgpulse._monitor_drop_jobs(),
    pgpulse._monitor_update_jobs(),
    pgpulse._outbox_requeue_current()
    FROM PUBLIC;
