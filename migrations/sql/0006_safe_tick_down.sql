-- Revision 0006 downgrade: the tick and its functions as revision 0005 left them, without
-- the triggers that make edits reach the outbox and without the new run-record columns.
-- Rows stay. (The roles stay: they are the cluster's; the pg_cron job keeps its user.)

DROP TRIGGER monitors_rephase ON public.monitors;
DROP TRIGGER monitors_update_jobs ON public.monitors;
DROP TRIGGER monitors_deactivated_drop_jobs ON public.monitors;
DROP TRIGGER monitors_deleted_drop_jobs ON public.monitors;
DROP TRIGGER outbox_requeue_current ON pgpulse.outbox;
DROP FUNCTION pgpulse._monitor_rephase();
DROP FUNCTION pgpulse._monitor_drop_jobs();
DROP FUNCTION pgpulse._monitor_update_jobs();
DROP FUNCTION pgpulse._outbox_requeue_current();
DROP FUNCTION pgpulse._grid_slot(text, integer, timestamptz);
DROP FUNCTION pgpulse._tick_begin(text, interval, interval, integer);
DROP FUNCTION pgpulse._tick_time_up(timestamptz, interval);
DROP FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval);
DROP FUNCTION pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[]);
DROP FUNCTION pgpulse._tick_bound_lock_wait(timestamptz);
DROP FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text);
DROP FUNCTION pgpulse._unrouted(timestamptz, jsonb, integer);

ALTER TABLE pgpulse.tick_runs DROP COLUMN skipped, DROP COLUMN skip_detail, DROP COLUMN stop_reason;
ALTER TABLE public.monitors DROP CONSTRAINT monitor_next_check_at_finite;

-- pgpulse's roles lose what 0006 granted them
DO $$
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_roles
         WHERE rolname IN ('pgpulse_relay', 'pgpulse_ticker')) = 2 THEN
        REVOKE ALL ON public.monitors FROM pgpulse_relay, pgpulse_ticker;
        REVOKE ALL ON ALL TABLES IN SCHEMA pgpulse FROM pgpulse_relay, pgpulse_ticker;
        REVOKE ALL ON ALL ROUTINES IN SCHEMA pgpulse FROM pgpulse_relay, pgpulse_ticker;
        REVOKE ALL ON SCHEMA pgpulse FROM pgpulse_relay, pgpulse_ticker;
    END IF;
END
$$;

DO $$
DECLARE
    v_function regprocedure;
BEGIN
    FOR v_function IN SELECT p.oid FROM pg_catalog.pg_proc p
                       WHERE p.pronamespace = 'pgpulse'::regnamespace AND p.prokind = 'f' LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', v_function);
    END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION pgpulse._routing() TO PUBLIC;
GRANT EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) TO PUBLIC;

-- the tick and the slot functions as revision 0005 made them
-- The phase of a monitor inside its interval, from a hash of its id (spreads new monitors),
-- in milliseconds. The hash goes to bigint before abs(): abs() of the smallest integer would
-- overflow.
CREATE OR REPLACE FUNCTION pgpulse._slot_phase(p_id uuid, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0
$$;

-- The first slot at or after p_from on the monitor's phase grid.
CREATE OR REPLACE FUNCTION pgpulse.next_slot(p_id uuid, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds))
$$;

-- The same two for a product's own ids that are not uuids (bigint, text: an adopted
-- monitors table), by the hash of their text form; a uuid still takes the uuid ones.
CREATE OR REPLACE FUNCTION pgpulse._slot_phase(p_id anyelement, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0
$$;

CREATE OR REPLACE FUNCTION pgpulse.next_slot(p_id anyelement, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
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
AS $$
    SELECT pgpulse._slot_phase(p_id, p_interval_minutes * 60)
$$;

CREATE OR REPLACE FUNCTION pgpulse.first_slot(p_id uuid, p_interval_minutes integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pgpulse.next_slot(p_id, p_interval_minutes * 60, p_from)
$$;

-- The region a monitor's job goes to (see _routing), or NULL for round-robin.
-- Simple enough to be inlined into the tick's queries.
CREATE OR REPLACE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_allow_fallback THEN p_route ->> p_preferred ELSE p_preferred END
$$;

-- The regions a multi-region monitor's slot goes to: each listed region routed by its own
-- fallback rules (see _route), without duplicates (two listed regions whose jobs would land
-- in one region make one job there), sorted; NULL when none can take a job.
CREATE OR REPLACE FUNCTION pgpulse._route_each(p_regions text[], p_allow_fallback boolean, p_route jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT array_agg(DISTINCT r ORDER BY r)
      FROM unnest(p_regions) c, pgpulse._route(c, p_allow_fallback, p_route) r
     WHERE r IS NOT NULL
$$;

-- Claims one chunk of due monitors, writes their jobs, bumps their slots; returns counts.
-- Every slot of a monitor up to the horizon is written at once (several for sub-minute
-- intervals), each with its exact deliver_at; a multi-region monitor (check_regions) gets
-- one job per slot and region (see _route_each). p_route, p_wheel: from _routing. With no
-- wheel, monitors that no region can take are not claimed (they stay due; the tick counts
-- them). p_rr: the round-robin position this chunk starts at; wheeled: monitors routed by
-- the wheel. p_keep_existing: a slot can only be in the outbox already when next_check_at
-- was moved back by hand; the tick first tries a plain INSERT (about 10% faster than ON
-- CONFLICT's per-row check) and, should that hit the unique key, redoes the chunk with
-- p_keep_existing, which keeps the jobs already there. Slots inside a maintenance window
-- are not written (skipped counts them, and so does the window). p_now: the clock, for
-- tests that move it (NULL: clock_timestamp()).
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL,
    OUT claimed integer, OUT written integer, OUT wheeled integer, OUT skipped integer)
LANGUAGE plpgsql
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
               -- catch-up: the latest slot not after now, never one per missed slot
               m.next_check_at + make_interval(secs => m.check_interval_seconds)
                   * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                       / m.check_interval_seconds))::integer AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN pgpulse._route(m.preferred_region, m.allow_fallback, p_route) END AS routed
          FROM public.monitors m
         WHERE m.is_active AND m.next_check_at <= p_horizon
           AND CASE WHEN m.check_regions IS NULL
                    THEN p_wheel IS NOT NULL
                         OR pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NOT NULL
                    ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NOT NULL
               END
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

-- Due monitors that no region can take now (only possible with no round-robin region).
CREATE FUNCTION pgpulse._unrouted(p_horizon timestamptz, p_route jsonb)
RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT count(*)::integer
      FROM public.monitors m
     WHERE m.is_active AND m.next_check_at <= p_horizon
       AND CASE WHEN m.check_regions IS NULL
                THEN pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NULL
                ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NULL
           END
$$;

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left or the time budget is nearly spent; records the run in pgpulse.tick_runs.
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
    v_started   timestamptz := clock_timestamp();
    v_horizon   timestamptz;
    v_chunk_t0  timestamptz;
    v_slowest   interval := '0';
    v_rr        bigint := floor(random() * 1000000)::bigint;
    v_route     jsonb;
    v_wheel     text[];
    v_routed    boolean := false;   -- v_route and v_wheel were read at least once
    v_claimed   integer;
    v_written   integer;
    v_wheeled   integer;
    v_skipped   integer;
    v_unrouted  integer := 0;
    v_cut       boolean := false;
BEGIN
    IF p_chunk < 1 OR p_budget <= '0' OR p_lookahead < '0' THEN
        RAISE EXCEPTION 'pgpulse.tick: chunk must be >= 1, budget > 0, lookahead >= 0';
    END IF;
    INSERT INTO pgpulse.tick_runs (trigger, started_at, budget_ms, lookahead_ms)
    VALUES (p_trigger, v_started, extract(epoch FROM p_budget) * 1000,
            extract(epoch FROM p_lookahead) * 1000)
    RETURNING id INTO run_id;
    COMMIT;

    LOOP
        -- stop before a chunk that, as slow as the slowest so far, would overrun the budget
        IF clock_timestamp() + v_slowest >= v_started + p_budget THEN
            v_cut := true;
            EXIT;
        END IF;
        v_chunk_t0 := clock_timestamp();
        v_horizon := v_chunk_t0 + p_lookahead;
        -- regions change while a tick runs (the relay writes their health): read per chunk
        SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
        v_routed := true;
        BEGIN
            SELECT c.claimed, c.written, c.wheeled, c.skipped
              INTO v_claimed, v_written, v_wheeled, v_skipped
              FROM pgpulse._tick_chunk(v_horizon, p_chunk, v_rr, v_route, v_wheel, false) c;
        EXCEPTION WHEN unique_violation THEN
            -- a slot of this chunk is in the outbox already: redo it, keeping those jobs
            SELECT c.claimed, c.written, c.wheeled, c.skipped
              INTO v_claimed, v_written, v_wheeled, v_skipped
              FROM pgpulse._tick_chunk(v_horizon, p_chunk, v_rr, v_route, v_wheel, true) c;
        END;
        EXIT WHEN v_claimed = 0;
        v_rr := v_rr + v_wheeled;
        UPDATE pgpulse.tick_runs
           SET monitors_claimed = monitors_claimed + v_claimed,
               jobs_written = jobs_written + v_written,
               maintenance_skipped = maintenance_skipped + v_skipped,
               chunks = chunks + 1
         WHERE id = run_id;
        IF v_written > 0 THEN
            PERFORM pg_notify('pgpulse_outbox', v_written::text);
        END IF;
        COMMIT;
        v_slowest := greatest(v_slowest, clock_timestamp() - v_chunk_t0);
    END LOOP;

    -- monitors no region can take now (none of a multi-region monitor's regions, or no
    -- round-robin region) were left due, and are counted once here
    IF v_routed THEN
        v_unrouted := pgpulse._unrouted(v_horizon, v_route);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = v_cut, unrouted = v_unrouted
     WHERE id = run_id;
    COMMIT;
END
$$;

