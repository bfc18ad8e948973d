-- pgpulse schema, part 7 of 8: the tick, and new monitors scheduled at once.

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
-- tick could not schedule (see _tick_step). p_only: just these schedule rows (a product's
-- write schedules the monitors it changed, never the tick's backlog). It reads and locks rows of pgpulse.schedule
-- only, never the product's table. A monitor without fallback whose region no longer
-- exists gets no job (it stays due and is counted unrouted).
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}',
    p_only tid[] DEFAULT NULL, OUT claimed integer, OUT written integer, OUT wheeled integer, OUT skipped integer)
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
        SELECT m.ctid AS row_ref, m.monitor_id AS id, m.check_spec, m.criticality, m.allow_fallback,
               m.check_regions, m.check_interval_seconds AS iv_s,
               CASE
                   -- more than a year late (or a -infinity that slipped past the CHECK):
                   -- restart on the phase grid, the latest slot not after now
                   WHEN m.next_check_at < v_now - interval '1 year'
                       THEN pgpulse._grid_slot(m.monitor_id::text, m.check_interval_seconds,
                                               v_now - make_interval(secs => m.check_interval_seconds))
                   -- catch-up: the latest slot not after now, never one per missed slot
                   ELSE m.next_check_at + make_interval(secs => m.check_interval_seconds)
                        * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                            / m.check_interval_seconds))::float8
               END AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                              WHEN p_route ? m.preferred_region THEN m.preferred_region END
               END AS routed
          FROM pgpulse.schedule m
         WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= p_horizon
           AND CASE WHEN m.check_regions IS NULL
                    -- round-robin only for a monitor that has no region or may fall back
                    THEN (p_wheel IS NOT NULL AND (m.preferred_region IS NULL OR m.allow_fallback))
                         OR CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                 WHEN p_route ? m.preferred_region THEN m.preferred_region
                            END IS NOT NULL
                    -- (_route_each spelled out: a SQL function starts an executor per call)
                    ELSE EXISTS (SELECT 1 FROM unnest(m.check_regions) c(code)
                                  WHERE CASE WHEN m.allow_fallback THEN p_route ->> c.code
                                             WHEN p_route ? c.code THEN c.code END IS NOT NULL)
               END
           AND (cardinality(p_skip) = 0 OR m.monitor_id::text <> ALL (p_skip))
           AND (p_only IS NULL OR m.ctid = ANY (p_only))
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
                                                      WHEN p_route ? c.code THEN c.code END) r(code)
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
        -- appended, not added to the window's row: see pgpulse.maintenance_skips
        INSERT INTO pgpulse.maintenance_skips (window_id, slots)
        SELECT window_id, n FROM skips
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
        UPDATE pgpulse.schedule m
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

-- Checks a tick's arguments, follows what bulk writes logged, and opens its run record;
-- returns its deadline.
CREATE FUNCTION pgpulse._tick_begin(
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
    -- product rows that bulk writes logged are followed first, so this tick schedules them
    -- (the relay, woken when they were logged, has mostly done it already)
    BEGIN
        PERFORM pgpulse.follow_apply(100000);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgpulse.tick: could not follow the rows bulk writes logged (%); the '
            'relay or the next tick will', SQLERRM;
    END;
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
    v_last_error text;
    v_same     integer := 0;
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
            SELECT m.monitor_id::text INTO v_id
              FROM pgpulse.schedule m
             WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= v_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN (v_wheel IS NOT NULL AND (m.preferred_region IS NULL OR m.allow_fallback))
                             OR pgpulse._route(m.preferred_region, m.allow_fallback, v_route) IS NOT NULL
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, v_route) IS NOT NULL
                   END
               AND (cardinality(skip) = 0 OR m.monitor_id::text <> ALL (skip))
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
                    -- the same error row after row is not about a row: say it once, and
                    -- leave the rest due for the next tick instead of trying each alone
                    v_same := CASE WHEN SQLSTATE || SQLERRM = v_last_error THEN v_same + 1 ELSE 1 END;
                    v_last_error := SQLSTATE || SQLERRM;
                    IF v_same >= 5 THEN
                        v_detail := v_detail || format(' (the same error on %s rows in a row: '
                                                       'the rest of this chunk was not tried)', v_same);
                        EXIT;
                    END IF;
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
-- The tick's own rule: a monitor without a region, or one that may fall back, takes the
-- round-robin wheel when there is one.
CREATE FUNCTION pgpulse._unrouted(p_horizon timestamptz, p_route jsonb, p_limit integer)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer
      FROM (SELECT 1
              FROM pgpulse.schedule m
             WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= p_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NULL
                             AND NOT ((m.preferred_region IS NULL OR m.allow_fallback)
                                      AND (SELECT r.wheel IS NOT NULL FROM pgpulse._routing() r))
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NULL
                   END
             LIMIT p_limit) u
$$;

-- Closes a tick's run record: why it stopped and, while its budget lasts, how many due
-- monitors no region could take. A drained tick also prunes, a bounded batch at a time (so
-- growth stays bounded without pg_cron too): run records older than 30 days, and dead
-- letters older than the database setting pgpulse.dead_letter_retention (14 days unless
-- set, e.g. ALTER DATABASE app SET pgpulse.dead_letter_retention = '30 days').
CREATE FUNCTION pgpulse._tick_finish(
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
        -- up to this tick's horizon (from its start), not past what it was to claim
        v_unrouted := pgpulse._unrouted(
            coalesce((SELECT r.started_at + make_interval(secs => r.lookahead_ms / 1000.0)
                        FROM pgpulse.tick_runs r WHERE r.id = p_run_id),
                     clock_timestamp() + p_lookahead),
            v_route, 1000000);
        DELETE FROM pgpulse.tick_runs
         WHERE id IN (SELECT id FROM pgpulse.tick_runs
                       WHERE started_at < now() - interval '30 days' LIMIT 1000);
        DELETE FROM pgpulse.dead_letters
         WHERE job_id IN (SELECT job_id FROM pgpulse.dead_letters
                           WHERE failed_at < now() - v_retention LIMIT 1000);
    END IF;
    -- skipped slots into their windows' counts: only windows no one holds (an edit in
    -- progress keeps its count for the next tick)
    WITH free AS (
        SELECT w.id FROM pgpulse.maintenance_windows w
         WHERE w.id IN (SELECT window_id FROM pgpulse.maintenance_skips)
           FOR NO KEY UPDATE SKIP LOCKED
    ), folded AS (
        DELETE FROM pgpulse.maintenance_skips k USING free f WHERE k.window_id = f.id
        RETURNING k.window_id, k.slots
    )
    UPDATE pgpulse.maintenance_windows w SET skipped_slots = w.skipped_slots + f.slots
      FROM (SELECT window_id, sum(slots) AS slots FROM folded GROUP BY window_id) f
     WHERE w.id = f.window_id;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;

-- How far ahead the scheduler has written jobs: the furthest horizon of the ticks of the
-- last five minutes (NULL: no tick ran lately, nothing is written ahead).
CREATE FUNCTION pgpulse._written_ahead_to()
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT max(coalesce(finished_at, clock_timestamp())
               + make_interval(secs => lookahead_ms / 1000.0))
      FROM pgpulse.tick_runs
     WHERE started_at > now() - interval '5 minutes'
$$;

-- Brings the schedule up to where the ticks have written: slots of new, re-activated or
-- re-phased monitors up to that horizon go to the outbox now (the next tick would write them
-- late), and the relay is woken. Run by the triggers that follow the product's monitors, in
-- the product's transaction, so these first jobs are written when its write commits (a
-- relay woken by NOTIFY could not see them sooner). Every other row is past the horizon
-- already: only those are due. A no-op when no tick ran lately. It never fails the
-- product's write: on any error the next tick schedules them instead. Returns the jobs
-- written. p_only: the schedule rows the write changed (NULL: every due one); planned for
-- the rows given (a TID scan), not as the tick's generic plan that walks the due index.
CREATE FUNCTION pgpulse._schedule_now(p_only tid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_horizon timestamptz := pgpulse._written_ahead_to();
    v_route   jsonb;
    v_wheel   text[];
    v_written integer := 0;
    c         record;
BEGIN
    IF v_horizon IS NULL OR v_horizon < clock_timestamp() THEN
        RETURN 0;
    END IF;
    BEGIN
        SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
        -- rows locked by a tick or another writer are theirs to schedule
        FOR i IN 1 .. 20 LOOP
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, 5000,
                                                     floor(random() * 1000000)::bigint,
                                                     v_route, v_wheel, true,
                                                     p_only => p_only);
            v_written := v_written + c.written;
            EXIT WHEN c.claimed < 5000;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgpulse: could not schedule changed monitors at once (%); the next '
            'tick will', SQLERRM;
        RETURN 0;
    END;
    IF v_written > 0 THEN
        PERFORM pg_notify('pgpulse_outbox', v_written::text);
    END IF;
    RETURN v_written;
END
$$;

-- "Check now": the monitor's next slot is now (its job is written at once when a tick ran
-- lately; else by the next tick). pgpulse's schedule is the source of this: the product's
-- table is not written. Returns false for an unknown, inactive or parked monitor.
CREATE FUNCTION pgpulse.check_now(p_monitor_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row tid;
BEGIN
    -- by the key's own type (a product's uuid, bigint or text id), so by its index
    EXECUTE format('UPDATE pgpulse.schedule SET next_check_at = clock_timestamp()'
                   ' WHERE monitor_id = $1::%s AND is_active AND parked IS NULL RETURNING ctid',
                   (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                     WHERE a.attrelid = 'pgpulse.schedule'::regclass AND a.attname = 'monitor_id'))
       INTO v_row USING p_monitor_id;
    IF v_row IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pgpulse._schedule_now(ARRAY[v_row]);
    RETURN true;
END
$$;

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left, the time budget is nearly spent, or a lock held elsewhere would keep it
-- past its deadline; records the run and why it stopped in pgpulse.tick_runs.
-- Must be CALLed outside a transaction block (autocommit), as pg_cron does. The lookahead
-- reaches 10 s past the next minute: pg_cron starts a minute's tick up to a second late and
-- its first chunk commits a moment after, and the slots of that gap must be written already.
-- Its steps (_tick_begin, _tick_step, _tick_finish) are SECURITY DEFINER, owned by the
-- NOLOGIN role pgpulse_owner (sql/roles.sql): whoever may call the tick (pg_cron's
-- pgpulse_ticker) runs the tick and nothing else, never writing the outbox or the monitors
-- itself. (A procedure that commits cannot be SECURITY DEFINER; it computes nothing.)
CREATE PROCEDURE pgpulse.tick(
    INOUT run_id bigint DEFAULT NULL,
    p_trigger text DEFAULT 'manual',
    p_budget interval DEFAULT '45 seconds',
    p_lookahead interval DEFAULT '70 seconds',
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
