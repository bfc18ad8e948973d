-- pgpulse schema, part 7 of 8: the tick, and new monitors scheduled at once.

-- Whether a schedule row is due by p_horizon: active, not parked (the rows the index
-- schedule_due holds), its next slot not after p_horizon.
CREATE FUNCTION pgpulse._is_due(s pgpulse.schedule, p_horizon timestamptz)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN s.is_active AND s.parked IS NULL AND s.next_check_at <= p_horizon;

-- What a tick claims: a row due by its horizon that a region can take now (p_route,
-- p_wheel: from _routing), unless it is one of the monitors this tick could not schedule
-- (p_skip: their ids as text, see _tick_step).
CREATE FUNCTION pgpulse._is_claimable(
    s pgpulse.schedule, p_horizon timestamptz, p_route jsonb, p_wheel text[], p_skip text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pgpulse._is_due(s, p_horizon) AND pgpulse._is_routable(s, p_route, p_wheel)
       AND (cardinality(p_skip) = 0 OR s.monitor_id::text <> ALL (p_skip));

-- A job's id, from its monitor (its id as text), region and slot: whoever writes that job
-- again (a reroute, a tick redoing a chunk) writes the same id.
CREATE FUNCTION pgpulse._job_id(p_monitor text, p_region text, p_slot timestamptz)
RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
RETURN md5(p_monitor || '/' || p_region || '/' || extract(epoch FROM p_slot)::text)::uuid;

-- Claims one chunk of due monitors, writes their jobs, bumps their slots; returns counts.
-- One statement (set-based: the functions it names are inlined), in steps:
-- - due: the claim, oldest first (_is_claimable; rows another transaction holds are
--   skipped); each monitor's first slot now (_catch_up_slot) and, for a monitor with one
--   region, where its jobs go (_routed_region; NULL: the round-robin wheel).
-- - routed: the regions of its jobs: that region, else the wheel's next (a running count of
--   the wheel's monitors from p_rr, where the previous chunk left off; wheeled counts
--   them); a multi-region monitor (check_regions) one job per listed region, each routed,
--   without duplicates. n: its slots up to the horizon (several for sub-minute intervals).
-- - slot: every slot, and the maintenance window it falls in (windows: their occurrences,
--   read only when there is a window). A slot in a window is not written: in_windows
--   counts it, appended to pgpulse.maintenance_skips (skips, counted).
-- - job, inserted: one outbox row per slot and region, with its exact deliver_at. A slot
--   can only be in the outbox already when next_check_at was moved back by hand: the tick
--   tries a plain INSERT first (about 10% faster than ON CONFLICT's per-row check) and,
--   should that hit the unique key, redoes the chunk with p_keep_existing
--   (inserted_keeping), which keeps the jobs already there.
-- - bumped: each monitor's next slot, the first past the horizon.
-- Routing is read per chunk: the relay writes region health while a tick runs. A monitor
-- no region can take is not claimed (it stays due; the tick counts it unrouted). p_now: the
-- clock, for tests that move it (NULL: clock_timestamp()). p_skip: see _is_claimable.
-- p_only: just these schedule rows (a product's write schedules the monitors it changed,
-- never the tick's backlog). It reads and locks rows of pgpulse.schedule only, never the
-- product's table.
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_keep_existing boolean,
    p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}', p_only tid[] DEFAULT NULL,
    OUT claimed integer, OUT written integer, OUT wheeled integer, OUT in_windows integer)
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
    v_route   jsonb;
    v_wheel   text[];
BEGIN
    SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
    WITH due AS MATERIALIZED (
        SELECT m.ctid AS row_ref, m.monitor_id AS id, m.check_spec, m.criticality,
               m.allow_fallback, m.check_regions, m.check_interval_seconds AS iv_s,
               pgpulse._catch_up_slot(m.monitor_id::text, m.check_interval_seconds,
                                      m.next_check_at, v_now) AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN pgpulse._routed_region(m.preferred_region, m.allow_fallback, v_route)
               END AS routed
          FROM pgpulse.schedule m
         WHERE pgpulse._is_claimable(m, p_horizon, v_route, v_wheel, p_skip)
           AND (p_only IS NULL OR m.ctid = ANY (p_only))
         ORDER BY m.next_check_at
         LIMIT p_chunk
           FOR UPDATE OF m SKIP LOCKED
    ), routed AS (
        SELECT d.*,
               floor(extract(epoch FROM p_horizon - d.slot) / d.iv_s)::integer + 1 AS n,
               CASE WHEN d.check_regions IS NULL THEN
                   ARRAY[coalesce(d.routed, pgpulse._wheel_region(
                       v_wheel, p_rr + count(*) FILTER (WHERE d.routed IS NULL
                                                          AND d.check_regions IS NULL)
                                           OVER (ROWS UNBOUNDED PRECEDING)))]
               ELSE (SELECT array_agg(DISTINCT r.code ORDER BY r.code)
                       FROM unnest(d.check_regions) c(code)
                      CROSS JOIN LATERAL (SELECT pgpulse._routed_region(c.code, d.allow_fallback,
                                                                        v_route)) r(code)
                      WHERE r.code IS NOT NULL) END AS regions
          FROM due d
    ), windows AS MATERIALIZED (
        SELECT * FROM pgpulse._maintenance_occurrences(v_now - interval '1 day', p_horizon)
         WHERE v_windows
    ), slot AS NOT MATERIALIZED (
        SELECT r.*, s.at,
               CASE WHEN v_windows THEN (
                   SELECT min(w.window_id) FROM windows w
                    WHERE (w.monitor_ids IS NULL OR r.id::text = ANY (w.monitor_ids))
                      AND s.at >= w.lo AND s.at < w.hi
                      AND pgpulse._inside_occurrence(s.at, w.time_zone, w.local_start,
                                                     w.local_end)) END AS window_id
          FROM routed r
         CROSS JOIN LATERAL (SELECT r.slot + make_interval(secs => r.iv_s) * k AS at
                               FROM generate_series(0, r.n - 1) k) s
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT pgpulse._job_id(s.id::text, g.region, s.at), s.id, g.region, s.criticality,
               s.at, s.at, s.at + make_interval(secs => s.iv_s), s.allow_fallback,
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
      INTO claimed, wheeled, written, in_windows
      FROM (SELECT count(*) AS claimed,
                   count(*) FILTER (WHERE routed IS NULL AND check_regions IS NULL) AS wheeled
              FROM due) d;
END
$$;

-- After a chunk failed on some monitor's row: the same claim one monitor at a time, each in
-- its own subtransaction, so that one bad row never stops the others. The rows that fail
-- are skipped: their ids join skip, the first error is the detail. The same error on five
-- rows in a row is not about a row: it is said once, and the rest stay due for the next
-- tick. Up to p_limit monitors.
CREATE FUNCTION pgpulse._tick_chunk_one_by_one(
    p_horizon timestamptz, p_limit integer, p_rr bigint, INOUT skip text[],
    OUT claimed integer, OUT written integer, OUT wheeled integer, OUT in_windows integer,
    OUT skipped integer, OUT detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_route      jsonb;
    v_wheel      text[];
    v_row        tid;
    v_id         text;
    v_last_error text;
    v_same       integer := 0;
    c            record;
BEGIN
    claimed := 0;
    written := 0;
    wheeled := 0;
    in_windows := 0;
    skipped := 0;
    SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
    FOR i IN 1 .. p_limit LOOP
        -- the monitor a one-monitor chunk would claim, locked: the chunk takes just its row
        SELECT m.ctid, m.monitor_id::text INTO v_row, v_id
          FROM pgpulse.schedule m
         WHERE pgpulse._is_claimable(m, p_horizon, v_route, v_wheel, skip)
         ORDER BY m.next_check_at
         LIMIT 1
           FOR UPDATE OF m SKIP LOCKED;
        EXIT WHEN NOT FOUND;
        BEGIN
            SELECT * INTO c FROM pgpulse._tick_chunk(p_horizon, 1, p_rr + wheeled, true,
                                                     p_skip => skip, p_only => ARRAY[v_row]);
            EXIT WHEN c.claimed = 0;
            claimed := claimed + c.claimed;
            written := written + c.written;
            wheeled := wheeled + c.wheeled;
            in_windows := in_windows + c.in_windows;
        EXCEPTION
            WHEN lock_not_available OR query_canceled THEN
                RAISE;
            WHEN OTHERS THEN
                skip := skip || v_id;
                skipped := skipped + 1;
                detail := coalesce(detail, format('monitor %s: %s', v_id, SQLERRM));
                v_same := CASE WHEN SQLSTATE || SQLERRM = v_last_error THEN v_same + 1 ELSE 1 END;
                v_last_error := SQLSTATE || SQLERRM;
                IF v_same >= 5 THEN
                    detail := detail || format(' (the same error on %s rows in a row: '
                                               'the rest of this chunk was not tried)', v_same);
                    EXIT;
                END IF;
        END;
    END LOOP;
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

-- A tick's horizon: one for the whole tick, from its start (a horizon that moved on with
-- each chunk claimed sub-minute monitors again and again while the tick ran).
CREATE FUNCTION pgpulse._tick_horizon(p_run_id bigint, p_lookahead interval)
RETURNS timestamptz
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT coalesce((SELECT r.started_at + make_interval(secs => r.lookahead_ms / 1000.0)
                       FROM pgpulse.tick_runs r WHERE r.id = p_run_id),
                    clock_timestamp() + p_lookahead);
END;

-- One step of the tick: one chunk of due monitors (the first one small, as nothing is
-- known about the speed yet), counted in the run record. Should the chunk fail on some
-- monitor's row, the step goes one monitor at a time (_tick_chunk_one_by_one); skip: the
-- monitors skipped so far in this tick. done: nothing was left to claim. A lock wait past
-- the deadline raises lock_not_available.
CREATE FUNCTION pgpulse._tick_step(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_chunk integer,
    p_rr bigint, p_skip text[], p_slowest interval,
    OUT done boolean, OUT next_rr bigint, OUT skip text[], OUT slowest interval)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t0         timestamptz := clock_timestamp();
    v_chunk      integer := CASE WHEN p_slowest IS NULL THEN least(p_chunk, 500) ELSE p_chunk END;
    v_horizon    timestamptz := pgpulse._tick_horizon(p_run_id, p_lookahead);
    v_claimed    integer;
    v_written    integer;
    v_wheeled    integer;
    v_in_windows integer;  -- slots inside a maintenance window, not written
    v_skipped    integer := 0;
    v_detail     text;
    v_failed     boolean := false;
BEGIN
    skip := coalesce(p_skip, '{}');
    PERFORM pgpulse._tick_bound_lock_wait(p_deadline);
    BEGIN
        BEGIN
            SELECT c.claimed, c.written, c.wheeled, c.in_windows
              INTO v_claimed, v_written, v_wheeled, v_in_windows
              FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, false, NULL, skip) c;
        EXCEPTION WHEN unique_violation THEN
            -- a slot of this chunk is in the outbox already: redo it, keeping those jobs
            SELECT c.claimed, c.written, c.wheeled, c.in_windows
              INTO v_claimed, v_written, v_wheeled, v_in_windows
              FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, true, NULL, skip) c;
        END;
    EXCEPTION
        WHEN lock_not_available OR query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            v_failed := true;
    END;
    IF v_failed THEN
        SELECT o.claimed, o.written, o.wheeled, o.in_windows, o.skipped, o.detail, o.skip
          INTO v_claimed, v_written, v_wheeled, v_in_windows, v_skipped, v_detail, skip
          FROM pgpulse._tick_chunk_one_by_one(v_horizon, v_chunk, p_rr, skip) o;
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

-- Due monitors that no region can take now (_is_routable: the tick's own rule), counted up
-- to p_limit so that the count stays inside the budget.
CREATE FUNCTION pgpulse._unrouted(
    p_horizon timestamptz, p_route jsonb, p_wheel text[], p_limit integer)
RETURNS integer
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*)::integer
      FROM (SELECT 1
              FROM pgpulse.schedule m
             WHERE pgpulse._is_due(m, p_horizon)
               AND NOT pgpulse._is_routable(m, p_route, p_wheel)
             LIMIT p_limit) u;
END;

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
    v_wheel     text[];
    v_unrouted  integer := 0;
    v_retention interval := coalesce(
        nullif(current_setting('pgpulse.dead_letter_retention', true), '')::interval,
        interval '14 days');
BEGIN
    -- the record itself may wait a little past the deadline, never long
    PERFORM pgpulse._tick_bound_lock_wait(greatest(p_deadline, clock_timestamp() + interval '1 second'));
    IF p_stop = 'drained' THEN
        SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
        -- up to this tick's horizon, not past what it was to claim
        v_unrouted := pgpulse._unrouted(pgpulse._tick_horizon(p_run_id, p_lookahead),
                                        v_route, v_wheel, 1000000);
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
    v_written integer := 0;
    c         record;
BEGIN
    IF v_horizon IS NULL OR v_horizon < clock_timestamp() THEN
        RETURN 0;
    END IF;
    BEGIN
        -- rows locked by a tick or another writer are theirs to schedule
        FOR i IN 1 .. 20 LOOP
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, 5000,
                                                     floor(random() * 1000000)::bigint, true,
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
