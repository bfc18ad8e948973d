-- Revision 0001 for a database whose product already has public.monitors (applied by
-- migrations/sqlfile.py instead of the released 0001_initial.sql, which would fail there):
-- the same objects, except that the product's monitors table is adopted, never replaced,
-- and the regions table is made in schema pgpulse at once (0002's move is then skipped),
-- so that a product's own public.regions is never touched. What pgpulse adds to the
-- product's table is listed in pgpulse.adoption; sql/drop.sql removes exactly that.

CREATE SCHEMA IF NOT EXISTS pgpulse;
COMMENT ON SCHEMA pgpulse IS 'pgpulse scheduler: outbox, dead letters, tick runs and the tick';

-- ===================================================================== tables

-- Regions are rows; each region's Upstash endpoint comes from the relay's environment.
CREATE TABLE pgpulse.regions (
    code               text PRIMARY KEY
                       CONSTRAINT region_code_format CHECK (code ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    enabled            boolean NOT NULL DEFAULT true,
    is_default         boolean NOT NULL DEFAULT false,
    fallback_region    text REFERENCES pgpulse.regions (code) ON UPDATE CASCADE ON DELETE SET NULL
                       CONSTRAINT region_fallback_not_self CHECK (fallback_region <> code),
    healthy            boolean NOT NULL DEFAULT true,      -- written by the relay's breaker
    healthy_changed_at timestamptz NOT NULL DEFAULT now(),
    degraded           boolean NOT NULL DEFAULT false,     -- queue backlog over threshold
    weight             integer NOT NULL DEFAULT 1
                       CONSTRAINT region_weight_0_to_100 CHECK (weight BETWEEN 0 AND 100),
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX regions_single_default ON pgpulse.regions (is_default) WHERE is_default;

-- One row per job waiting to be published. Rows are deleted when published.
CREATE TABLE pgpulse.outbox (
    job_id        uuid NOT NULL,                  -- derived from (monitor, region, slot)
    monitor_id    uuid NOT NULL,
    region        text NOT NULL,
    criticality   text NOT NULL,
    scheduled_for timestamptz NOT NULL,           -- the slot
    deliver_at    timestamptz NOT NULL,           -- publish not before this
    expires_at    timestamptz NOT NULL,           -- drop instead of publishing after this
    payload       jsonb NOT NULL,                 -- the check, as the worker receives it
    allow_fallback boolean NOT NULL DEFAULT true, -- may go to the fallback region's queue
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- a slot is never emitted twice; also the only key, which keeps the tick's writes cheap
    CONSTRAINT outbox_one_job_per_slot PRIMARY KEY (monitor_id, region, scheduled_for)
);
-- The relay's claim: per region, in delivery order.
CREATE INDEX outbox_claim ON pgpulse.outbox (region, deliver_at);

CREATE TABLE pgpulse.dead_letters (
    job_id        uuid PRIMARY KEY,
    monitor_id    uuid NOT NULL,
    region        text NOT NULL,
    criticality   text NOT NULL,
    scheduled_for timestamptz NOT NULL,
    deliver_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    payload       jsonb NOT NULL,
    attempts      integer NOT NULL,
    last_error    text NOT NULL,
    failed_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgpulse.tick_runs (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trigger           text NOT NULL,              -- pg_cron, cli, http, bench, ...
    started_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at       timestamptz,                -- NULL: running, or died
    budget_ms         integer NOT NULL,
    lookahead_ms      integer NOT NULL,
    monitors_claimed  integer NOT NULL DEFAULT 0,
    jobs_written      integer NOT NULL DEFAULT 0,
    chunks            integer NOT NULL DEFAULT 0,
    cut_short         boolean NOT NULL DEFAULT false,
    unrouted          integer NOT NULL DEFAULT 0  -- due monitors left for lack of a region
);
CREATE INDEX tick_runs_started ON pgpulse.tick_runs (started_at);

-- ================================================================== functions

-- The phase of a monitor inside its interval, from a hash of its id (spreads new monitors).
-- The hash goes to bigint before abs(): abs() of the smallest integer would overflow.
CREATE FUNCTION pgpulse._phase_seconds(p_id uuid, p_interval_minutes integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_minutes * 60000)) / 1000.0
$$;

-- The first slot at or after p_from on the monitor's phase grid.
CREATE FUNCTION pgpulse.first_slot(p_id uuid, p_interval_minutes integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._phase_seconds(p_id, p_interval_minutes))
             / (p_interval_minutes * 60)) * (p_interval_minutes * 60)
        + pgpulse._phase_seconds(p_id, p_interval_minutes))
$$;

-- Gives a new monitor without next_check_at its first slot on its phase grid. An interval
-- out of range gets now() instead, so that the row's CHECK constraint names the problem
-- (rather than a division by zero here, or a NULL next_check_at).
CREATE FUNCTION pgpulse._monitor_set_phase() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.next_check_at := CASE
        WHEN NEW.check_interval_minutes BETWEEN 1 AND 1440
            THEN pgpulse.first_slot(NEW.id, NEW.check_interval_minutes, now())
        ELSE now()
    END;
    RETURN NEW;
END
$$;

-- Builds a monitor's check_spec from the check's columns.
CREATE FUNCTION pgpulse._monitor_check_spec() RETURNS trigger
LANGUAGE plpgsql
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

-- ============================================================ the adopted monitors table

-- What pgpulse added to the product's monitors table, in order: sql/drop.sql removes
-- exactly these, last first, and never the table or a row.
CREATE TABLE pgpulse.adoption (
    step integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CONSTRAINT adoption_kind_known CHECK (kind IN ('column', 'index', 'trigger')),
    name text NOT NULL,
    CONSTRAINT adoption_once UNIQUE (kind, name)
);

-- Product ids may be bigint or text: the phase of any id, from a hash of its text form
-- (for a uuid the same phase as the uuid functions above, which calls with a uuid still use).
CREATE FUNCTION pgpulse._phase_seconds(p_id anyelement, p_interval_minutes integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_minutes * 60000)) / 1000.0
$$;

CREATE FUNCTION pgpulse.first_slot(p_id anyelement, p_interval_minutes integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._phase_seconds(p_id, p_interval_minutes))
             / (p_interval_minutes * 60)) * (p_interval_minutes * 60)
        + pgpulse._phase_seconds(p_id, p_interval_minutes))
$$;

-- The check as workers receive it (what _monitor_check_spec builds). The adopted table
-- keeps it in a generated column: filling a new column with an UPDATE would fire the
-- product's own triggers on every row.
CREATE FUNCTION pgpulse._check_spec(
    p_url text, p_method text, p_timeout_ms integer, p_expected_status integer[],
    p_check_retries smallint, p_check_retry_delay_ms integer)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT jsonb_build_object(
        'url', p_url, 'method', p_method, 'timeout_ms', p_timeout_ms,
        'expected_status', to_jsonb(p_expected_status),
        'retry', jsonb_build_object('max_attempts', p_check_retries + 1,
                                    'delay_ms', p_check_retry_delay_ms))
$$;

DO $adopt$
DECLARE
    v_missing text[];
    v_id_type text;
    v_col     record;
BEGIN
    SELECT array_agg(c) INTO v_missing
      FROM unnest(ARRAY['id', 'url', 'check_interval_minutes', 'is_active', 'next_check_at',
                        'last_scheduled_at', 'preferred_region']) c
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = 'public.monitors'::regclass AND attname = c
                          AND NOT attisdropped);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgpulse: public.monitors exists but has no column %',
            array_to_string(v_missing, ', ')
            USING HINT = 'pgpulse adopts a monitors table with id, url, check_interval_minutes, '
                         'is_active, next_check_at, last_scheduled_at and preferred_region';
    END IF;
    SELECT format_type(atttypid, atttypmod) INTO v_id_type
      FROM pg_attribute WHERE attrelid = 'public.monitors'::regclass AND attname = 'id';
    IF v_id_type NOT IN ('uuid', 'bigint', 'integer', 'text') THEN
        RAISE EXCEPTION 'pgpulse: public.monitors.id is %, not uuid, bigint, integer or text', v_id_type;
    END IF;
    -- jobs carry the product's own ids (the tables are empty yet)
    IF v_id_type <> 'uuid' THEN
        EXECUTE format('ALTER TABLE pgpulse.outbox ALTER COLUMN monitor_id TYPE %s USING NULL', v_id_type);
        EXECUTE format('ALTER TABLE pgpulse.dead_letters ALTER COLUMN monitor_id TYPE %s USING NULL', v_id_type);
    END IF;

    -- only the columns pgpulse needs that the product does not have, with defaults
    FOR v_col IN
        SELECT c.name, c.definition FROM (VALUES
            (1, 'method', $$text NOT NULL DEFAULT 'GET' CONSTRAINT monitor_method_known CHECK (
                  method IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'))$$),
            (2, 'timeout_ms', $$integer NOT NULL DEFAULT 10000
                  CONSTRAINT monitor_timeout_100ms_to_120s CHECK (timeout_ms BETWEEN 100 AND 120000)$$),
            (3, 'expected_status', $$integer[] NOT NULL DEFAULT '{200}'
                  CONSTRAINT monitor_expected_status_http CHECK (
                      cardinality(expected_status) BETWEEN 1 AND 32
                      AND 100 <= ALL (expected_status) AND 599 >= ALL (expected_status))$$),
            (4, 'check_retries', $$smallint NOT NULL DEFAULT 1
                  CONSTRAINT monitor_check_retries_0_to_5 CHECK (check_retries BETWEEN 0 AND 5)$$),
            (5, 'check_retry_delay_ms', $$integer NOT NULL DEFAULT 2000
                  CONSTRAINT monitor_check_retry_delay CHECK (check_retry_delay_ms BETWEEN 0 AND 60000)$$),
            (6, 'allow_fallback', $$boolean NOT NULL DEFAULT true$$),
            (7, 'criticality', $$text NOT NULL DEFAULT 'normal'
                  CONSTRAINT monitor_criticality_known CHECK (
                      criticality IN ('critical', 'high', 'normal', 'low'))$$),
            (8, 'check_spec', $$jsonb NOT NULL GENERATED ALWAYS AS (pgpulse._check_spec(
                  url, method, timeout_ms, expected_status, check_retries, check_retry_delay_ms)) STORED$$)
        ) AS c(ord, name, definition)
        WHERE NOT EXISTS (SELECT 1 FROM pg_attribute
                           WHERE attrelid = 'public.monitors'::regclass AND attname = c.name
                             AND NOT attisdropped)
        ORDER BY c.ord
    LOOP
        EXECUTE format('ALTER TABLE public.monitors ADD COLUMN %I %s', v_col.name, v_col.definition);
        INSERT INTO pgpulse.adoption (kind, name) VALUES ('column', v_col.name);
    END LOOP;

    -- a first slot only where the product has none; every other value stays as it is
    UPDATE public.monitors
       SET next_check_at = CASE WHEN check_interval_minutes BETWEEN 1 AND 1440
                                THEN pgpulse.first_slot(id, check_interval_minutes, now())
                                ELSE now() END
     WHERE next_check_at IS NULL;

    -- the tick's lookup: only active monitors, in due order
    IF to_regclass('public.monitors_due') IS NULL THEN
        CREATE INDEX monitors_due ON public.monitors (next_check_at) WHERE is_active;
        INSERT INTO pgpulse.adoption (kind, name) VALUES ('index', 'monitors_due');
    END IF;

    CREATE TRIGGER monitors_set_phase
        BEFORE INSERT ON public.monitors
        FOR EACH ROW WHEN (NEW.next_check_at IS NULL)
        EXECUTE FUNCTION pgpulse._monitor_set_phase();
    INSERT INTO pgpulse.adoption (kind, name) VALUES ('trigger', 'monitors_set_phase');
END
$adopt$;

-- Where jobs go, from the regions as they are now. route: for each region code, where a
-- monitor preferring it (and allowing fallback) is sent: the region itself when enabled
-- and healthy, else its fallback region when that is, else the default region when that
-- is; when no region at all is healthy, the region itself if enabled (the job waits there);
-- NULL: round-robin. wheel: the round-robin regions, each repeated by its weight: the
-- healthy, not degraded ones; else the healthy ones; else the enabled ones (jobs then wait
-- in the outbox for a region to recover). A NULL wheel: no enabled region with a weight.
CREATE FUNCTION pgpulse._routing(OUT route jsonb, OUT wheel text[])
LANGUAGE plpgsql STABLE
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

-- The region a monitor's job goes to (see _routing), or NULL for round-robin.
-- Simple enough to be inlined into the tick's queries.
CREATE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN p_allow_fallback THEN p_route ->> p_preferred ELSE p_preferred END
$$;

-- Claims one chunk of due monitors, writes their jobs, bumps their slots; returns counts.
-- p_route, p_wheel: from _routing. With no wheel, monitors that no region can take are
-- not claimed (they stay due; the tick counts them). p_rr: the round-robin position this
-- chunk starts at; wheeled: jobs routed by the wheel. p_keep_existing: a slot can only be
-- in the outbox already when next_check_at was moved back by hand; the tick first tries
-- a plain INSERT (about 10% faster than ON CONFLICT's per-row check) and, should that hit
-- the unique key, redoes the chunk with p_keep_existing, which keeps the jobs already there.
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
               make_interval(mins => m.check_interval_minutes) AS iv,
               -- catch-up: the latest slot not after now, never one per missed slot
               m.next_check_at + make_interval(mins => m.check_interval_minutes)
                   * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                       / (m.check_interval_minutes * 60)))::integer AS slot,
               pgpulse._route(m.preferred_region, m.allow_fallback, p_route) AS routed
          FROM public.monitors m
         WHERE m.is_active AND m.next_check_at <= p_horizon
           AND (p_wheel IS NOT NULL
                OR pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NOT NULL)
         ORDER BY m.next_check_at
         LIMIT p_chunk
           FOR UPDATE OF m SKIP LOCKED
    ), routed AS (
        -- the wheel continues where the previous chunk left it: a running count of the
        -- wheel's rows (no sort needed)
        SELECT d.*,
               coalesce(d.routed,
                        p_wheel[1 + ((p_rr + count(*) FILTER (WHERE d.routed IS NULL)
                                                 OVER (ROWS UNBOUNDED PRECEDING))
                                     % cardinality(p_wheel))::integer]) AS region
          FROM due d
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT md5(r.id::text || '/' || r.region || '/' || extract(epoch FROM r.slot)::text)::uuid,
               r.id, r.region, r.criticality, r.slot, r.slot, r.slot + r.iv, r.allow_fallback,
               r.check_spec
          FROM routed r
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
           SET next_check_at = r.slot + r.iv,
               last_scheduled_at = v_now
          FROM routed r
         WHERE m.ctid = r.row_ref
    )
    SELECT d.claimed, d.wheeled,
           (SELECT count(*) FROM inserted) + (SELECT count(*) FROM inserted_keeping)
      INTO claimed, wheeled, written
      FROM (SELECT count(*) AS claimed, count(*) FILTER (WHERE routed IS NULL) AS wheeled
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
       AND pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NULL
$$;

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left or the time budget is nearly spent; records the run in pgpulse.tick_runs.
-- Must be CALLed outside a transaction block (autocommit), as pg_cron does.
CREATE PROCEDURE pgpulse.tick(
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

    -- no round-robin region: some due monitors may have no region to go to; they were
    -- left due, and are counted once here
    IF v_routed AND v_wheel IS NULL THEN
        v_unrouted := pgpulse._unrouted(v_horizon, v_route);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = v_cut, unrouted = v_unrouted
     WHERE id = run_id;
    COMMIT;
END
$$;
