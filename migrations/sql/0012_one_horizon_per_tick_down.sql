-- Revision 0012 down: the horizon moves on with each chunk again (as revision 0006 made it).
-- One step of the tick: one chunk of due monitors (the first one small, as nothing is
-- known about the speed yet), counted in the run record. Should the chunk fail on some
-- monitor's row, the step goes one monitor at a time and skips the rows that fail, so
-- one bad row never stops the others; skip: the monitors skipped so far in this tick.
-- done: nothing was left to claim. A lock wait past the deadline raises lock_not_available.
CREATE OR REPLACE FUNCTION pgpulse._tick_step(
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
