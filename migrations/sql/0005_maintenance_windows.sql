-- Revision 0005: maintenance windows (pgpulse.maintenance_windows): the tick skips and
-- counts the slots inside them (tick_runs.maintenance_skipped).

ALTER TABLE pgpulse.tick_runs
    ADD COLUMN maintenance_skipped integer NOT NULL DEFAULT 0;

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

CREATE FUNCTION pgpulse._maintenance_occurrences(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (window_id bigint, monitor_ids text[], time_zone text, local_start timestamp,
               local_end timestamp, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT w.id, w.monitor_ids, w.time_zone, o.local_start, o.local_end,
           (o.local_start AT TIME ZONE w.time_zone) - interval '3 hours',
           (o.local_end AT TIME ZONE w.time_zone) + interval '3 hours'
      FROM pgpulse.maintenance_windows w
      CROSS JOIN LATERAL (
          SELECT w.starts_local AS local_start, w.ends_local AS local_end
           WHERE w.starts_local IS NOT NULL
          UNION ALL
          SELECT d + w.start_time, d + w.start_time + w.duration
            FROM generate_series(date_trunc('day', p_from AT TIME ZONE w.time_zone)
                                     - interval '8 days',
                                 date_trunc('day', p_to AT TIME ZONE w.time_zone),
                                 interval '1 day') d
           WHERE w.starts_local IS NULL
             AND extract(isodow FROM d)::smallint = ANY (w.weekdays)
      ) o
     WHERE o.local_end > (p_from AT TIME ZONE w.time_zone) - interval '1 day'
       AND o.local_start <= (p_to AT TIME ZONE w.time_zone) + interval '1 day'
$$;

CREATE FUNCTION pgpulse.maintenance_window_at(p_monitor text, p_at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT min(o.window_id)
      FROM pgpulse._maintenance_occurrences(p_at, p_at) o
     WHERE (o.monitor_ids IS NULL OR p_monitor = ANY (o.monitor_ids))
       AND (p_at AT TIME ZONE o.time_zone) >= o.local_start
       AND (p_at AT TIME ZONE o.time_zone) < o.local_end
$$;

CREATE FUNCTION pgpulse._maintenance_check_zone() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.time_zone) THEN
        RAISE EXCEPTION 'maintenance window: unknown time zone "%" (an IANA name such as '
            'Europe/Berlin)', NEW.time_zone USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION pgpulse._maintenance_take_back_jobs() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_slots bigint;
BEGIN
    WITH gone AS (
        DELETE FROM pgpulse.outbox j
         USING pgpulse._maintenance_occurrences(now() - interval '2 days',
                                                now() + interval '1 day') o
         WHERE o.window_id = NEW.id
           AND (NEW.monitor_ids IS NULL OR j.monitor_id::text = ANY (NEW.monitor_ids))
           AND j.scheduled_for >= o.lo AND j.scheduled_for < o.hi
           AND (j.scheduled_for AT TIME ZONE o.time_zone) >= o.local_start
           AND (j.scheduled_for AT TIME ZONE o.time_zone) < o.local_end
        RETURNING j.monitor_id, j.scheduled_for
    )
    SELECT count(DISTINCT (monitor_id, scheduled_for)) INTO v_slots FROM gone;
    IF v_slots > 0 THEN
        UPDATE pgpulse.maintenance_windows SET skipped_slots = skipped_slots + v_slots
         WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER maintenance_windows_check_zone
    BEFORE INSERT OR UPDATE OF time_zone ON pgpulse.maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION pgpulse._maintenance_check_zone();

CREATE TRIGGER maintenance_windows_take_back_jobs
    AFTER INSERT OR UPDATE OF monitor_ids, time_zone, starts_local, ends_local, weekdays,
                              start_time, duration
    ON pgpulse.maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION pgpulse._maintenance_take_back_jobs();

DROP FUNCTION pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean);

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
