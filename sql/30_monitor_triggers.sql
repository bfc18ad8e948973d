-- pgpulse schema, part 3 of 8: following the product's monitors into pgpulse.schedule.
--
-- The product's INSERT, UPDATE, DELETE and TRUNCATE reach the schedule in the product's own
-- transaction (so when it commits), whatever row-level security, grants and triggers the
-- product has: AFTER triggers whose functions are SECURITY DEFINER, owned by the NOLOGIN
-- role pgpulse_owner (sql/roles.sql), with rights on pgpulse's tables only; they read the
-- product's new and old rows from the trigger, never the table, and write only pgpulse's
-- tables (which fire no product code). A product write never fails because of pgpulse: a row
-- pgpulse cannot schedule is parked with its reason (pgpulse.monitor_schedule shows it).
-- Who owns each field: docs/adopting.md.

-- The check as workers receive it (docs/queue-contract.md), from the check's columns.
CREATE FUNCTION pgpulse._check_spec(
    p_url text, p_method text, p_timeout_ms integer, p_expected integer[], p_retries integer,
    p_delay_ms integer)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object(
    'url', p_url, 'method', p_method, 'timeout_ms', p_timeout_ms,
    'expected_status', to_jsonb(p_expected),
    'retry', jsonb_build_object('max_attempts', p_retries + 1, 'delay_ms', p_delay_ms));

-- An interval in seconds as the product states it: seconds when set, else minutes (bigint:
-- a product's 2^31 minutes is out of range, not an overflow that fails its write).
CREATE FUNCTION pgpulse._interval_s(p_minutes integer, p_seconds integer)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(p_seconds::bigint, p_minutes::bigint * 60);

-- The interval pgpulse.schedule holds (integer seconds): one out of range parks the row
-- (_schedule_problem says why) and is kept inside 0 .. 2^31 - 1 (none: 0).
CREATE FUNCTION pgpulse._interval_held(p_interval_s bigint)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN least(greatest(p_interval_s, 0), 2147483647)::integer;

-- A waiting job's payload with its monitor's check as it is now: the slot's regions of a
-- multi-region job stay.
CREATE FUNCTION pgpulse._payload_with_check(p_payload jsonb, p_check jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_check
       || jsonb_strip_nulls(jsonb_build_object('slot_regions', p_payload -> 'slot_regions'));

-- When pgpulse saw a product row: now for one followed at once, the product's write for one
-- a bulk write logged (its first slot is the next one after the write, not after the relay
-- got to it).
CREATE FUNCTION pgpulse._seen_at(p_row public.monitors)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN now();

CREATE FUNCTION pgpulse._seen_at(p_row pgpulse.follow_log)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN p_row.logged_at;

-- Schedule rows for product rows pgpulse has not seen (new ones, or all of them in a
-- resync), given as product rows or as rows of pgpulse.follow_log: the first slot is the
-- product's next_check_at, or the next one on the monitor's phase grid. A row there already
-- takes every field anew, or with p_replace false is kept (a logged row is older than what
-- a later write of the product put there). Returns the rows written.
CREATE FUNCTION pgpulse._schedule_insert(p_rows anyarray, p_replace boolean DEFAULT true)
RETURNS tid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows tid[];
BEGIN
    WITH written AS (
        INSERT INTO pgpulse.schedule AS s
               (monitor_id, is_active, parked, next_check_at, check_interval_seconds,
                preferred_region, allow_fallback, criticality, check_regions, check_spec)
        SELECT n.id, coalesce(n.is_active, false), f.problem,
               CASE WHEN isfinite(n.next_check_at) THEN n.next_check_at
                    WHEN f.problem IS NULL
                        THEN pgpulse._grid_slot(n.id::text, i.interval_s::integer,
                                                pgpulse._seen_at(n))
                    ELSE now() END,
               pgpulse._interval_held(i.interval_s), n.preferred_region,
               coalesce(n.allow_fallback, true), coalesce(n.criticality, ''), n.check_regions,
               pgpulse._check_spec(n.url, n.method, n.timeout_ms, n.expected_status,
                                   n.check_retries, n.check_retry_delay_ms)
          FROM unnest(p_rows) n
         CROSS JOIN LATERAL (SELECT pgpulse._interval_s(n.check_interval_minutes,
                                                        n.check_interval_seconds) AS interval_s) i
         -- OFFSET 0: the problem is found once a row, not again at each use (3x slower)
         CROSS JOIN LATERAL (SELECT pgpulse._schedule_problem(
                                        i.interval_s, n.url, n.method, n.timeout_ms,
                                        n.expected_status, n.check_retries, n.check_retry_delay_ms,
                                        n.criticality, n.check_regions) AS problem OFFSET 0) f
            ON CONFLICT (monitor_id) DO UPDATE
           SET is_active = excluded.is_active, parked = excluded.parked,
               next_check_at = excluded.next_check_at,
               check_interval_seconds = excluded.check_interval_seconds,
               preferred_region = excluded.preferred_region, allow_fallback = excluded.allow_fallback,
               criticality = excluded.criticality, check_regions = excluded.check_regions,
               check_spec = excluded.check_spec
         WHERE p_replace
        RETURNING s.ctid
    )
    SELECT array_agg(ctid) INTO v_rows FROM written;
    RETURN v_rows;
END
$$;

-- New monitors. A statement of up to 500 rows (a product's form, an API call) is followed
-- at once: their schedule rows, and their first slots within the horizon the ticks have
-- written go to the outbox, in this transaction (see _schedule_now). A bulk write (an
-- import) only appends its rows to pgpulse.follow_log and wakes the relay, which follows
-- them a moment later: its cost per row stays near the product's own (pgpulse bench
-- follow).
CREATE FUNCTION pgpulse._follow_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_monitors OFFSET 500) THEN
        INSERT INTO pgpulse.follow_log
               (id, url, method, timeout_ms, expected_status, check_retries,
                check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
                preferred_region, allow_fallback, criticality, next_check_at, check_regions)
        SELECT n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
               n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
               n.is_active, n.preferred_region, n.allow_fallback, n.criticality,
               n.next_check_at, n.check_regions
          FROM new_monitors n;
        PERFORM pg_notify('pgpulse_follow', '');
    ELSE
        PERFORM pgpulse._schedule_now(
            pgpulse._schedule_insert(ARRAY(SELECT n::public.monitors FROM new_monitors n)));
    END IF;
    RETURN NULL;
END
$$;

-- A changed monitor, from its logged change (pgpulse.follow_log: the new values and the old
-- ones): the fields whose columns changed follow (the others keep what pgpulse holds: a
-- region renamed in pgpulse.regions stays renamed). A changed interval re-phases the next
-- slot onto the new grid and takes back the jobs written ahead for the old one (a slot
-- already due is still checked); so does a re-activation or an unparked row (its next slot
-- after the product's write, not a catch-up). A next_check_at the product changed wins: its
-- next slot is there. A deactivated or newly parked monitor's waiting jobs go; a changed
-- check, criticality or fallback choice reaches the jobs still waiting. Returns whether its
-- slots up to the horizon may be missing (re-activated, unparked, or its slot moved).
CREATE FUNCTION pgpulse._follow_change(e pgpulse.follow_log)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s          pgpulse.schedule%ROWTYPE;
    v_old      pgpulse.schedule%ROWTYPE;
    v_interval bigint;
BEGIN
    SELECT * INTO v_old FROM pgpulse.schedule WHERE monitor_id = e.id FOR UPDATE;
    IF NOT FOUND THEN
        -- a row pgpulse never saw (following was off): follow it anew, from this version
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id;
        PERFORM pgpulse._schedule_insert(ARRAY[e]);
        RETURN true;
    END IF;
    s := v_old;
    IF e.check_interval_seconds IS DISTINCT FROM e.old_check_interval_seconds
       OR e.check_interval_minutes IS DISTINCT FROM e.old_check_interval_minutes THEN
        -- the one of the two this UPDATE changed wins (seconds when both; NULL seconds:
        -- minutes again)
        v_interval := CASE
            WHEN e.check_interval_seconds IS DISTINCT FROM e.old_check_interval_seconds
                THEN pgpulse._interval_s(e.check_interval_minutes, e.check_interval_seconds)
            ELSE e.check_interval_minutes::bigint * 60 END;
        s.check_interval_seconds := pgpulse._interval_held(v_interval);
    ELSE
        v_interval := v_old.check_interval_seconds;
    END IF;
    IF e.preferred_region IS DISTINCT FROM e.old_preferred_region THEN
        s.preferred_region := e.preferred_region;
    END IF;
    IF e.check_regions IS DISTINCT FROM e.old_check_regions THEN
        s.check_regions := e.check_regions;
    END IF;
    s.is_active := coalesce(e.is_active, false);
    s.allow_fallback := coalesce(e.allow_fallback, true);
    s.criticality := coalesce(e.criticality, '');
    s.check_spec := pgpulse._check_spec(e.url, e.method, e.timeout_ms, e.expected_status,
                                        e.check_retries, e.check_retry_delay_ms);
    s.parked := pgpulse._schedule_problem(v_interval, e.url, e.method, e.timeout_ms,
                                          e.expected_status, e.check_retries,
                                          e.check_retry_delay_ms, e.criticality,
                                          s.check_regions);
    IF s.parked IS NULL AND s.is_active
       AND (NOT v_old.is_active OR v_old.parked IS NOT NULL
            OR s.check_interval_seconds IS DISTINCT FROM v_old.check_interval_seconds) THEN
        s.next_check_at := pgpulse._grid_slot(e.id::text, s.check_interval_seconds,
                                              e.logged_at);
    END IF;
    IF e.next_check_at IS DISTINCT FROM e.old_next_check_at AND isfinite(e.next_check_at) THEN
        s.next_check_at := e.next_check_at;
    END IF;

    IF NOT s.is_active OR s.parked IS NOT NULL THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id;
    ELSIF s.check_interval_seconds IS DISTINCT FROM v_old.check_interval_seconds THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id AND scheduled_for > now();
    END IF;
    IF s.is_active AND s.parked IS NULL
       AND (s.check_spec IS DISTINCT FROM v_old.check_spec
            OR s.criticality IS DISTINCT FROM v_old.criticality
            OR s.allow_fallback IS DISTINCT FROM v_old.allow_fallback) THEN
        UPDATE pgpulse.outbox
           SET payload = pgpulse._payload_with_check(payload, s.check_spec),
               criticality = s.criticality, allow_fallback = s.allow_fallback
         WHERE monitor_id = e.id;
    END IF;
    UPDATE pgpulse.schedule
       SET is_active = s.is_active, parked = s.parked, next_check_at = s.next_check_at,
           check_interval_seconds = s.check_interval_seconds,
           preferred_region = s.preferred_region, allow_fallback = s.allow_fallback,
           criticality = s.criticality, check_regions = s.check_regions,
           check_spec = s.check_spec
     WHERE monitor_id = e.id;
    RETURN s.is_active AND s.parked IS NULL
       AND (NOT v_old.is_active OR v_old.parked IS NOT NULL
            OR s.next_check_at IS DISTINCT FROM v_old.next_check_at);
END
$$;

-- Follows logged product writes in the order they were made (new rows a run at a time,
-- each change by itself), then writes the slots they made due up to the horizon the ticks
-- have written.
CREATE FUNCTION pgpulse._follow_entries(p_entries pgpulse.follow_log[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e       pgpulse.follow_log;
    v_new   pgpulse.follow_log[] := '{}';
    v_moved pgpulse.follow_log[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_entries) u WHERE u.old_id IS NOT NULL) THEN
        -- only new rows (a bulk INSERT): all at once
        PERFORM pgpulse._schedule_now(pgpulse._schedule_insert(p_entries, false));
        RETURN;
    END IF;
    FOR e IN SELECT u.* FROM unnest(p_entries) u ORDER BY u.seq LOOP
        IF e.old_id IS NULL THEN
            v_new := v_new || e;
            CONTINUE;
        END IF;
        IF cardinality(v_new) > 0 THEN
            PERFORM pgpulse._schedule_insert(v_new, false);
            v_moved := v_moved || v_new;
            v_new := '{}';
        END IF;
        IF pgpulse._follow_change(e) THEN
            v_moved := v_moved || e;
        END IF;
    END LOOP;
    IF cardinality(v_new) > 0 THEN
        PERFORM pgpulse._schedule_insert(v_new, false);
        v_moved := v_moved || v_new;
    END IF;
    IF cardinality(v_moved) > 0 THEN
        PERFORM pgpulse._schedule_now(ARRAY(
            SELECT s.ctid FROM pgpulse.schedule s
             WHERE s.monitor_id IN (SELECT m.id FROM unnest(v_moved) m)));
    END IF;
END
$$;

-- Changed monitors, after the statement (its old and new rows as transition tables): the
-- rows whose followed columns changed are logged, and followed at once, in this transaction
-- (their slots that became due written as for a new monitor), when they are up to 500 and
-- nothing older waits in the log (the log's order is each monitor's order). A bulk UPDATE is
-- left to follow_apply, like a bulk INSERT, so its cost per row stays near the product's
-- own. An UPDATE that names no followed column returns at once (_follow_update_mark marks
-- those that do): an ORM's full-row save that writes back what it read logs nothing either.
-- A changed id: the old one is gone (as deleted), the new one is a new monitor.
CREATE FUNCTION pgpulse._follow_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a bulk statement's rows: planned without JIT (its compile time would be most of the
-- cost), joined in memory
SET jit = off SET work_mem = '64MB'
AS $$
DECLARE
    v_flag  text := 'pgpulse.follow_named_' || pg_trigger_depth();
    v_named text := current_setting(v_flag, true);
    v_seq   bigint;
    v_rows  bigint;
    v_ids   bigint := 0;
    v_taken pgpulse.follow_log[];
BEGIN
    IF v_named IS NULL OR v_named NOT IN ('columns', 'id') THEN
        RETURN NULL;
    END IF;
    PERFORM set_config(v_flag, '', true);
    v_seq := nextval('pgpulse.follow_log_seq');
    IF v_named = 'id' THEN
        DELETE FROM pgpulse.follow_log l USING old_monitors o
         WHERE l.id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        DELETE FROM pgpulse.outbox j USING old_monitors o
         WHERE j.monitor_id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        DELETE FROM pgpulse.schedule s USING old_monitors o
         WHERE s.monitor_id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        INSERT INTO pgpulse.follow_log
               (seq, id, url, method, timeout_ms, expected_status, check_retries,
                check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
                preferred_region, allow_fallback, criticality, next_check_at, check_regions)
        SELECT v_seq, n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
               n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
               n.is_active, n.preferred_region, n.allow_fallback, n.criticality,
               n.next_check_at, n.check_regions
          FROM new_monitors n
         WHERE NOT EXISTS (SELECT 1 FROM old_monitors o WHERE o.id = n.id);
        GET DIAGNOSTICS v_ids = ROW_COUNT;
    END IF;
    INSERT INTO pgpulse.follow_log
           (seq, id, url, method, timeout_ms, expected_status, check_retries,
            check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
            preferred_region, allow_fallback, criticality, next_check_at, check_regions,
            old_id, old_check_interval_minutes, old_check_interval_seconds,
            old_preferred_region, old_check_regions, old_next_check_at)
    SELECT v_seq, n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
           n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
           n.is_active, n.preferred_region, n.allow_fallback, n.criticality, n.next_check_at,
           n.check_regions, o.id, o.check_interval_minutes, o.check_interval_seconds,
           o.preferred_region, o.check_regions, o.next_check_at
      FROM new_monitors n JOIN old_monitors o ON o.id = n.id
     WHERE n.url IS DISTINCT FROM o.url OR n.method IS DISTINCT FROM o.method
        OR n.timeout_ms IS DISTINCT FROM o.timeout_ms
        OR n.expected_status IS DISTINCT FROM o.expected_status
        OR n.check_retries IS DISTINCT FROM o.check_retries
        OR n.check_retry_delay_ms IS DISTINCT FROM o.check_retry_delay_ms
        OR n.check_interval_minutes IS DISTINCT FROM o.check_interval_minutes
        OR n.check_interval_seconds IS DISTINCT FROM o.check_interval_seconds
        OR n.is_active IS DISTINCT FROM o.is_active
        OR n.preferred_region IS DISTINCT FROM o.preferred_region
        OR n.allow_fallback IS DISTINCT FROM o.allow_fallback
        OR n.criticality IS DISTINCT FROM o.criticality
        OR n.next_check_at IS DISTINCT FROM o.next_check_at
        OR n.check_regions IS DISTINCT FROM o.check_regions;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_rows := v_rows + v_ids;
    IF v_rows = 0 THEN
        RETURN NULL;
    ELSIF v_rows <= 500 AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.seq < v_seq) THEN
        WITH taken AS (DELETE FROM pgpulse.follow_log l WHERE l.seq = v_seq RETURNING l)
        SELECT array_agg(t.l) INTO v_taken FROM taken t;
        PERFORM pgpulse._follow_entries(v_taken);
    ELSE
        PERFORM pg_notify('pgpulse_follow', '');
    END IF;
    RETURN NULL;
END
$$;

-- Before an UPDATE that names a followed column (TG_ARGV[0] 'columns') or the id ('id'):
-- marks the statement, so that its _follow_update looks at its rows (an UPDATE of other
-- columns pays only for the transition tables). The mark is per trigger depth: an UPDATE
-- that a product trigger runs inside another statement has its own.
CREATE FUNCTION pgpulse._follow_update_mark() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flag text := 'pgpulse.follow_named_' || pg_trigger_depth();
BEGIN
    IF TG_ARGV[0] = 'id' OR current_setting(v_flag, true) IS DISTINCT FROM 'id' THEN
        PERFORM set_config(v_flag, TG_ARGV[0], true);
    END IF;
    RETURN NULL;
END
$$;

-- Deleted monitors: their schedule rows, waiting jobs and dead letters go (a retry would
-- bring them back).
CREATE FUNCTION pgpulse._follow_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a bulk statement's rows: planned without JIT (its compile time would be most of the
-- cost), joined in memory
SET jit = off SET work_mem = '64MB'
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgpulse.follow_log) THEN
        DELETE FROM pgpulse.follow_log l USING old_monitors o WHERE l.id = o.id;
    END IF;
    DELETE FROM pgpulse.schedule s USING old_monitors o WHERE s.monitor_id = o.id;
    DELETE FROM pgpulse.outbox j USING old_monitors o WHERE j.monitor_id = o.id;
    DELETE FROM pgpulse.dead_letters d USING old_monitors o WHERE d.monitor_id = o.id;
    RETURN NULL;
END
$$;

-- Follows the product writes logged in pgpulse.follow_log, up to p_limit of them, oldest
-- first: their schedule rows, and their first slots up to the horizon the ticks have
-- written. One caller at a time (relays and ticks may call it at once: the others wait):
-- the log's order is each monitor's order. A new row the product changed since (its UPDATE
-- followed it anew) keeps what that wrote. Returns the rows taken.
CREATE FUNCTION pgpulse.follow_apply(p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_rows pgpulse.follow_log[];
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'pgpulse.follow_apply: limit must be 1 to 1000000, not %',
            coalesce(p_limit::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgpulse.follow_log) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpulse.follow_apply'));
    WITH taken AS (
        DELETE FROM pgpulse.follow_log l
         WHERE l.ctid = ANY (ARRAY(SELECT f.ctid FROM pgpulse.follow_log f
                                    ORDER BY f.seq LIMIT p_limit FOR UPDATE))
        RETURNING l
    )
    SELECT array_agg(t.l) INTO v_rows FROM taken t;
    IF v_rows IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pgpulse._follow_entries(v_rows);
    RETURN cardinality(v_rows);
END
$$;

-- What bulk writes left to follow, for the health surfaces (readable by any role: counts
-- only): rows waiting, and the age of the oldest in seconds.
CREATE FUNCTION pgpulse.follow_pending(OUT pending bigint, OUT oldest_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT count(*), coalesce(extract(epoch FROM now() - min(logged_at))::float8, 0)
      FROM pgpulse.follow_log;
END;

-- A truncated monitors table: nothing is left to schedule.
CREATE FUNCTION pgpulse._follow_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgpulse.follow_log;
    DELETE FROM pgpulse.schedule;
    DELETE FROM pgpulse.outbox;
    DELETE FROM pgpulse.dead_letters;
    RETURN NULL;
END
$$;

-- A job put back after a failure (the relay's requeue, a dead letter retried) may have
-- been in flight while its monitor changed: it is dropped when the monitor is inactive or
-- parked, and otherwise carries the monitor's check as it is now. (A job without a schedule
-- row was not written by the tick, or its monitor was deleted while it was in flight: kept.)
CREATE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT s.is_active, s.parked, s.check_spec, s.criticality, s.allow_fallback
      INTO v_monitor
      FROM pgpulse.schedule s WHERE s.monitor_id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active OR v_monitor.parked IS NOT NULL THEN
        RETURN NULL;
    END IF;
    NEW.payload := pgpulse._payload_with_check(NEW.payload, v_monitor.check_spec);
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;

CREATE TRIGGER pgpulse_follow_insert
    AFTER INSERT ON public.monitors
    REFERENCING NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_insert();

-- An UPDATE: _follow_update after the statement, with its old and new rows, told by
-- _follow_update_mark (before it) whether the statement names a followed column or the id
-- (an UPDATE of the product's other columns pays only for the transition tables).
CREATE TRIGGER pgpulse_follow_update_id_named
    BEFORE UPDATE OF id ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update_mark('id');

CREATE TRIGGER pgpulse_follow_update_named
    BEFORE UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                     check_retry_delay_ms, check_interval_minutes, check_interval_seconds,
                     is_active, preferred_region, allow_fallback, criticality, next_check_at,
                     check_regions
    ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update_mark('columns');

CREATE TRIGGER pgpulse_follow_update
    AFTER UPDATE ON public.monitors
    REFERENCING OLD TABLE AS old_monitors NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update();

CREATE TRIGGER pgpulse_follow_delete
    AFTER DELETE ON public.monitors
    REFERENCING OLD TABLE AS old_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_delete();

CREATE TRIGGER pgpulse_follow_truncate
    AFTER TRUNCATE ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_truncate();

-- The tick writes jobs without last_error: it never fires this.
CREATE TRIGGER outbox_requeue_current
    BEFORE INSERT ON pgpulse.outbox
    FOR EACH ROW WHEN (NEW.last_error IS NOT NULL)
    EXECUTE FUNCTION pgpulse._outbox_requeue_current();


-- For the product: each monitor's next slot, when pgpulse last scheduled it, and why it is
-- parked (NULL: it is scheduled). security_invoker, through the product's own table: its
-- row-level security decides which monitors a role sees here.
CREATE VIEW pgpulse.monitor_schedule WITH (security_invoker = true) AS
SELECT m.id AS monitor_id, s.next_check_at, s.last_scheduled_at, s.parked, s.is_active
  FROM public.monitors m
  JOIN pgpulse.schedule s ON s.monitor_id = m.id;
COMMENT ON VIEW pgpulse.monitor_schedule IS
    'next_check_at, last_scheduled_at and why a monitor is parked, per product monitor';

-- Whether the triggers that follow the product's table are there and enabled (readable by
-- any role: the relay's health checks). Following stops, silently for the product, under
-- ALTER TABLE ... DISABLE TRIGGER, a column drop that took a trigger with it (CASCADE),
-- session_replication_role = replica or pg_restore --disable-triggers: the last two leave
-- no trace here, pgpulse.drift() finds what they let through.
CREATE FUNCTION pgpulse.following(OUT ok boolean, OUT detail text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*) FILTER (WHERE t.tgenabled IN ('O', 'A')) = 6,
           CASE WHEN count(*) FILTER (WHERE t.tgenabled IN ('O', 'A')) < 6 THEN
               'not following public.monitors: '
               || coalesce(string_agg(t.tgname || ' disabled', ', ')
                               FILTER (WHERE t.tgenabled NOT IN ('O', 'A')), '')
               || CASE WHEN count(t.tgname) < 6
                       THEN format(' %s of 6 triggers missing', 6 - count(t.tgname)) ELSE '' END
           END
      FROM (VALUES ('pgpulse_follow_insert'), ('pgpulse_follow_update'),
                   ('pgpulse_follow_update_named'), ('pgpulse_follow_update_id_named'),
                   ('pgpulse_follow_delete'), ('pgpulse_follow_truncate')) n(name)
      LEFT JOIN pg_trigger t ON t.tgname = n.name AND t.tgrelid = to_regclass('public.monitors');
END;

-- The schedule against the product's table, read as the caller (doctor, `pgpulse resync`):
-- product rows without a schedule row, schedule rows without a product row, and rows whose
-- followed check, state or criticality differ. Refuses when row-level security may hide
-- product rows from the caller (it would see orphans that are not).
CREATE FUNCTION pgpulse.drift(
    OUT product_rows bigint, OUT schedule_rows bigint, OUT missing bigint, OUT orphaned bigint,
    OUT differing bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
                WHERE c.oid = 'public.monitors'::regclass AND c.relrowsecurity
                  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
                  AND NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user)) THEN
        RAISE EXCEPTION 'pgpulse: row-level security on public.monitors may hide rows from "%"',
            current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'run it as a role with BYPASSRLS (or the table''s owner, without FORCE)';
    END IF;
    SELECT count(*) INTO product_rows FROM public.monitors;
    SELECT count(*) INTO schedule_rows FROM pgpulse.schedule;
    SELECT count(*) INTO missing FROM public.monitors m
     WHERE NOT EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = m.id)
       AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.id = m.id);
    SELECT count(*) INTO orphaned FROM pgpulse.schedule s
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
    SELECT count(*) INTO differing
      FROM public.monitors m JOIN pgpulse.schedule s ON s.monitor_id = m.id
     WHERE (s.is_active, s.criticality, s.allow_fallback, s.check_spec)
           IS DISTINCT FROM
           (coalesce(m.is_active, false), coalesce(m.criticality, ''),
            coalesce(m.allow_fallback, true),
            pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                m.check_retries, m.check_retry_delay_ms));
END
$$;

-- Repairs what pgpulse.drift() finds, as the caller: follows the product rows it missed,
-- drops schedule rows (and waiting jobs) of product rows that are gone, and takes the
-- product's check, state and criticality where they differ (their next slot stays).
-- Returns what it found, as drift() does, and changes nothing when p_dry_run.
CREATE FUNCTION pgpulse.resync(p_dry_run boolean DEFAULT false,
    OUT product_rows bigint, OUT schedule_rows bigint, OUT missing bigint, OUT orphaned bigint,
    OUT differing bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO product_rows, schedule_rows, missing, orphaned, differing FROM pgpulse.drift();
    IF p_dry_run THEN
        RETURN;
    END IF;
    PERFORM pgpulse._schedule_insert(ARRAY(
        SELECT m FROM public.monitors m
         WHERE NOT EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = m.id)
           AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.id = m.id)));
    DELETE FROM pgpulse.outbox j
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = j.monitor_id)
       AND EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = j.monitor_id);
    DELETE FROM pgpulse.schedule s
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
    UPDATE pgpulse.schedule s
       SET is_active = coalesce(m.is_active, false), criticality = coalesce(m.criticality, ''),
           allow_fallback = coalesce(m.allow_fallback, true),
           check_spec = pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                            m.check_retries, m.check_retry_delay_ms),
           parked = pgpulse._schedule_problem(
               s.check_interval_seconds, m.url, m.method, m.timeout_ms, m.expected_status,
               m.check_retries, m.check_retry_delay_ms, m.criticality, s.check_regions)
      FROM public.monitors m
     WHERE m.id = s.monitor_id
       AND (s.is_active, s.criticality, s.allow_fallback, s.check_spec)
           IS DISTINCT FROM
           (coalesce(m.is_active, false), coalesce(m.criticality, ''),
            coalesce(m.allow_fallback, true),
            pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                m.check_retries, m.check_retry_delay_ms));
END
$$;
