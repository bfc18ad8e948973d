-- Least-privilege roles for pgpulse; `pgpulse migrate` applies this file. Safe to run again.
-- pgpulse_relay:  what `pgpulse relay` needs: claim, delete and put back outbox rows, write
--                 dead letters and region health, read regions and tick runs. Of
--                 public.monitors it reads only the routing columns (to send a recovered
--                 region its jobs back, and orphaned jobs where they go now), never the check.
-- pgpulse_ticker: runs the tick and nothing else: EXECUTE on pgpulse.tick and its steps,
--                 SELECT on tick runs; no right on the outbox or the monitors. pg_cron runs
--                 pgpulse's jobs as this role (never as a superuser), so it may log in; it
--                 has no password: README, "Letting pg_cron log in".
-- pgpulse_owner:  NOLOGIN; owns the SECURITY DEFINER functions (the tick's steps, the
--                 monitors' job triggers), which so run with pgpulse's table rights below,
--                 never with the migrating superuser's. Nobody logs in as it.
-- pgpulse_monitor: NOLOGIN; what the read-only ops commands read (`pgpulse doctor`, `pgpulse
--                 status`, `pgpulse http`: the status page, /readyz, /metrics, the built-in
--                 alerts): regions, tick runs, windows, the outbox's and dead letters'
--                 rows without their check (payload); it writes only the alert evaluator's
--                 lease. Nothing of public.monitors.
-- Give people and services their own login roles:
--   CREATE ROLE relay_app LOGIN PASSWORD '...' IN ROLE pgpulse_relay;
--   CREATE ROLE ticker_app LOGIN PASSWORD '...' IN ROLE pgpulse_ticker;  -- `pgpulse tick`, HTTP trigger
--   CREATE ROLE ops_app LOGIN PASSWORD '...' IN ROLE pgpulse_monitor;    -- doctor, status, http
-- Creating roles needs CREATEROLE; without it (a managed database's owner) the roles are
-- granted to when a DBA created them, and a warning says what is missing.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_relay') THEN
        CREATE ROLE pgpulse_relay NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_owner') THEN
        CREATE ROLE pgpulse_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_monitor') THEN
        CREATE ROLE pgpulse_monitor NOLOGIN;
    END IF;
    -- a migrating role that is not superuser replaces the functions it hands to the owner
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'pgpulse_owner', 'MEMBER') THEN
        GRANT pgpulse_owner TO CURRENT_USER;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        CREATE ROLE pgpulse_ticker LOGIN;
    ELSIF NOT (SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        ALTER ROLE pgpulse_ticker LOGIN;   -- an older install made it NOLOGIN
    END IF;
    -- a tick ends inside its minute; this ends anything else the role runs
    ALTER ROLE pgpulse_ticker SET statement_timeout = '1min';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'pgpulse: role "%" may not create or alter the roles pgpulse_relay, '
        'pgpulse_ticker, pgpulse_owner and pgpulse_monitor (%)', current_user, SQLERRM
        USING HINT = 'a superuser can run `pgpulse migrate`, or the SQL that '
                     '`pgpulse migrate --sql --from head` prints';
END
$roles$;

DO $grants$
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_roles
         WHERE rolname IN ('pgpulse_relay', 'pgpulse_ticker', 'pgpulse_owner')) < 3 THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA pgpulse TO pgpulse_relay, pgpulse_ticker;

    -- relay: SELECT ... FOR UPDATE needs UPDATE on one column; it never updates outbox rows.
    -- Of the product's monitors nothing: of the schedule, the routing fields.
    REVOKE ALL ON public.monitors FROM pgpulse_relay;
    GRANT SELECT (monitor_id, preferred_region, allow_fallback, check_regions) ON pgpulse.schedule
        TO pgpulse_relay;
    GRANT SELECT, UPDATE (healthy, healthy_changed_at, degraded, workers_absent, workers_absent_since)
        ON pgpulse.regions TO pgpulse_relay;
    GRANT SELECT, INSERT, DELETE, UPDATE (attempts) ON pgpulse.outbox TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE (attempts, last_error, failed_at, allow_fallback) ON pgpulse.dead_letters TO pgpulse_relay;
    GRANT SELECT ON pgpulse.tick_runs TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.push_intents TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.region_observations TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.leases TO pgpulse_relay;  -- alert evaluator

    -- the relay's `status` and /status read the windows; where orphaned jobs go now
    GRANT SELECT ON pgpulse.maintenance_windows TO pgpulse_relay;
    GRANT EXECUTE ON FUNCTION pgpulse._routing() TO pgpulse_relay;
    -- follows what bulk writes of the product logged, when told (NOTIFY pgpulse_follow)
    GRANT EXECUTE ON FUNCTION pgpulse.follow_apply(integer) TO pgpulse_relay;
    -- check results: the relay ingests them (history only into the partitions there are)
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.results_latest TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE ON pgpulse.results_history TO pgpulse_relay;
    GRANT EXECUTE ON FUNCTION pgpulse.results_maintain() TO pgpulse_relay;
    -- (the relay's grants come before the owner's, and the ticker's go last: a migrated
    -- and a fresh database then list their ACL entries in one order, as a dump shows)

    -- owner: what the SECURITY DEFINER functions do, on pgpulse's tables only (nothing of
    -- the product's). The tick claims and bumps schedule rows, adds jobs, records its runs,
    -- prunes run records and dead letters (retention), counts skipped slots; the triggers
    -- that follow the product's monitors keep the schedule and the waiting jobs in step.
    REVOKE ALL ON public.monitors FROM pgpulse_owner;
    -- CREATE: the results history's daily partitions (pgpulse.results_maintain)
    GRANT USAGE, CREATE ON SCHEMA pgpulse TO pgpulse_owner;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.schedule TO pgpulse_owner;
    GRANT SELECT ON pgpulse.regions TO pgpulse_owner;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.outbox TO pgpulse_owner;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.tick_runs TO pgpulse_owner;
    GRANT SELECT, DELETE ON pgpulse.dead_letters TO pgpulse_owner;
    GRANT SELECT, UPDATE (skipped_slots) ON pgpulse.maintenance_windows TO pgpulse_owner;
    GRANT SELECT, INSERT, DELETE ON pgpulse.maintenance_skips TO pgpulse_owner;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.follow_log TO pgpulse_owner;
    GRANT USAGE ON SEQUENCE pgpulse.follow_log_seq TO pgpulse_owner;
    GRANT EXECUTE ON FUNCTION
        pgpulse._tick_chunk(timestamptz, integer, bigint, boolean, timestamptz, text[], tid[]),
        pgpulse._tick_chunk_one_by_one(timestamptz, integer, bigint, text[]),
        pgpulse._tick_horizon(bigint, interval),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, text[], integer),
        pgpulse._schedule_insert(anyarray, boolean),
        pgpulse._schedule_now(tid[]),
        pgpulse._follow_change(pgpulse.follow_log),
        pgpulse._follow_entries(pgpulse.follow_log[])
        TO pgpulse_owner;
    -- (a migrating role that may not act as the owner leaves them its own, and says so)
    IF pg_catalog.pg_has_role('pgpulse_owner', 'MEMBER') THEN
        ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
            OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._follow_insert() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._follow_update() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._follow_delete() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._follow_truncate() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._outbox_requeue_current() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse._region_renamed() OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse.check_now(text) OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse.follow_apply(integer) OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse.follow_pending() OWNER TO pgpulse_owner;
        ALTER TABLE pgpulse.results_history OWNER TO pgpulse_owner;
        ALTER FUNCTION pgpulse.results_maintain() OWNER TO pgpulse_owner;
    ELSE
        RAISE WARNING 'pgpulse: role "%" may not hand pgpulse''s SECURITY DEFINER functions '
            'to pgpulse_owner: they run as "%"', current_user, current_user
            USING HINT = 'have a superuser run `GRANT pgpulse_owner TO ' || current_user
                         || '`, then `pgpulse migrate` again';
    END IF;

    -- ticker: the tick, and its run records to read; no table right beyond that
    REVOKE ALL ON public.monitors, pgpulse.regions, pgpulse.outbox, pgpulse.dead_letters,
        pgpulse.maintenance_windows, pgpulse.tick_runs FROM pgpulse_ticker;
    GRANT SELECT ON pgpulse.tick_runs TO pgpulse_ticker;
    GRANT EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) TO pgpulse_ticker;
    REVOKE EXECUTE ON FUNCTION
        pgpulse._tick_chunk(timestamptz, integer, bigint, boolean, timestamptz, text[], tid[]),
        pgpulse._tick_chunk_one_by_one(timestamptz, integer, bigint, text[]),
        pgpulse._tick_horizon(bigint, interval),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, text[], integer)
        FROM pgpulse_ticker;
    GRANT EXECUTE ON FUNCTION
        pgpulse._tick_begin(text, interval, interval, integer),
        pgpulse._tick_time_up(timestamptz, interval),
        pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval),
        pgpulse._tick_finish(bigint, timestamptz, interval, text)
        TO pgpulse_ticker;
END
$grants$;

-- monitor: reads what the ops commands show, never a job's check (the outbox's and dead
-- letters' payload) nor the product's monitors; takes part in the alert evaluator's election
DO $monitor$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_monitor') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA pgpulse TO pgpulse_monitor;
    GRANT SELECT ON pgpulse.regions, pgpulse.tick_runs, pgpulse.maintenance_windows
        TO pgpulse_monitor;
    GRANT SELECT (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                  allow_fallback, attempts, last_error, created_at)
        ON pgpulse.outbox TO pgpulse_monitor;
    GRANT SELECT (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                  attempts, last_error, failed_at, allow_fallback)
        ON pgpulse.dead_letters TO pgpulse_monitor;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.leases TO pgpulse_monitor;
    IF to_regclass('pgpulse.alembic_version') IS NOT NULL THEN
        -- doctor compares with head; a relay refuses a schema of another release
        GRANT SELECT ON pgpulse.alembic_version TO pgpulse_monitor, pgpulse_relay;
    END IF;
END
$monitor$;
