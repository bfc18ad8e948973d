-- Down from revision 0005 to 0004: no maintenance windows.
DROP FUNCTION pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz);

CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean,
    OUT claimed integer, OUT written integer, OUT wheeled integer)
LANGUAGE plpgsql
-- a chunk is small next to the table: join it row by row, never hash the whole table
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_now timestamptz := clock_timestamp();
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
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT md5(r.id::text || '/' || g.region || '/' || extract(epoch FROM s.slot)::text)::uuid,
               r.id, g.region, r.criticality, s.slot, s.slot,
               s.slot + make_interval(secs => r.iv_s), r.allow_fallback,
               CASE WHEN r.check_regions IS NULL THEN r.check_spec
                    ELSE r.check_spec || jsonb_build_object('slot_regions', r.regions) END
          FROM routed r
         CROSS JOIN LATERAL unnest(r.regions) g(region)
         CROSS JOIN LATERAL (SELECT r.slot + make_interval(secs => r.iv_s) * k AS slot
                               FROM generate_series(0, r.n - 1) k) s
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
           (SELECT count(*) FROM inserted) + (SELECT count(*) FROM inserted_keeping)
      INTO claimed, wheeled, written
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
            SELECT c.claimed, c.written, c.wheeled
              INTO v_claimed, v_written, v_wheeled
              FROM pgpulse._tick_chunk(v_horizon, p_chunk, v_rr, v_route, v_wheel, false) c;
        EXCEPTION WHEN unique_violation THEN
            -- a slot of this chunk is in the outbox already: redo it, keeping those jobs
            SELECT c.claimed, c.written, c.wheeled
              INTO v_claimed, v_written, v_wheeled
              FROM pgpulse._tick_chunk(v_horizon, p_chunk, v_rr, v_route, v_wheel, true) c;
        END;
        EXIT WHEN v_claimed = 0;
        v_rr := v_rr + v_wheeled;
        UPDATE pgpulse.tick_runs
           SET monitors_claimed = monitors_claimed + v_claimed,
               jobs_written = jobs_written + v_written,
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

DROP TABLE pgpulse.maintenance_windows;
DROP FUNCTION pgpulse._maintenance_take_back_jobs();
DROP FUNCTION pgpulse._maintenance_check_zone();
DROP FUNCTION pgpulse.maintenance_window_at(text, timestamptz);
DROP FUNCTION pgpulse._maintenance_occurrences(timestamptz, timestamptz);
ALTER TABLE pgpulse.tick_runs DROP COLUMN maintenance_skipped;
