-- Least-privilege roles for pgpulse; `pgpulse migrate` applies this file. Safe to run again.
-- pgpulse_relay:  what `pgpulse relay` needs: claim, delete and put back outbox rows, write
--                 dead letters and region health, read regions and tick runs. Of
--                 public.monitors it reads only the routing columns (to send a recovered
--                 region its jobs back, and orphaned jobs where they go now), never the check.
-- pgpulse_ticker: what a tick needs. pg_cron runs the tick as this role (never as the
--                 migration's owner), so it may log in; it has no password: allow it in
--                 pg_hba.conf for pg_cron's cron.host (or use cron.use_background_workers).
-- Give people and services their own login roles:
--   CREATE ROLE relay_app LOGIN PASSWORD '...' IN ROLE pgpulse_relay;
--   CREATE ROLE ticker_app LOGIN PASSWORD '...' IN ROLE pgpulse_ticker;  -- `pgpulse tick`, HTTP trigger
-- Creating roles needs CREATEROLE; without it (a managed database's owner) the roles are
-- granted to when a DBA created them, and a warning says what is missing.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_relay') THEN
        CREATE ROLE pgpulse_relay NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        CREATE ROLE pgpulse_ticker LOGIN;
    ELSIF NOT (SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        ALTER ROLE pgpulse_ticker LOGIN;   -- an older install made it NOLOGIN
    END IF;
    -- a tick ends inside its minute; this ends anything else the role runs
    ALTER ROLE pgpulse_ticker SET statement_timeout = '1min';
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'pgpulse: role "%" may not create or alter the roles pgpulse_relay and '
        'pgpulse_ticker (%)', current_user, SQLERRM
        USING HINT = 'have a superuser run sql/roles.sql, then `pgpulse migrate` again';
END
$roles$;

DO $grants$
BEGIN
    IF (SELECT count(*) FROM pg_catalog.pg_roles
         WHERE rolname IN ('pgpulse_relay', 'pgpulse_ticker')) < 2 THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA pgpulse TO pgpulse_relay, pgpulse_ticker;

    -- relay: SELECT ... FOR UPDATE needs UPDATE on one column; it never updates outbox rows
    REVOKE ALL ON public.monitors FROM pgpulse_relay;
    GRANT SELECT (id, preferred_region, allow_fallback, check_regions) ON public.monitors
        TO pgpulse_relay;
    GRANT SELECT, UPDATE (healthy, healthy_changed_at, degraded) ON pgpulse.regions TO pgpulse_relay;
    GRANT SELECT, INSERT, DELETE, UPDATE (attempts) ON pgpulse.outbox TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE (attempts, last_error, failed_at, allow_fallback) ON pgpulse.dead_letters TO pgpulse_relay;
    GRANT SELECT ON pgpulse.tick_runs TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.push_intents TO pgpulse_relay;
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.region_observations TO pgpulse_relay;

    -- ticker: reads the monitors it schedules and bumps their slots; only adds jobs
    GRANT SELECT, UPDATE (next_check_at, last_scheduled_at) ON public.monitors TO pgpulse_ticker;
    GRANT SELECT ON pgpulse.regions TO pgpulse_ticker;
    REVOKE ALL ON pgpulse.outbox FROM pgpulse_ticker;
    GRANT INSERT ON pgpulse.outbox TO pgpulse_ticker;
    -- and prunes old run records and dead letters (retention)
    GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.tick_runs TO pgpulse_ticker;
    GRANT SELECT (job_id, failed_at), DELETE ON pgpulse.dead_letters TO pgpulse_ticker;
    GRANT SELECT, UPDATE (skipped_slots) ON pgpulse.maintenance_windows TO pgpulse_ticker;
    GRANT EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) TO pgpulse_ticker;
    GRANT EXECUTE ON FUNCTION
        pgpulse._tick_begin(text, interval, interval, integer),
        pgpulse._tick_time_up(timestamptz, interval),
        pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval),
        pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[]),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._tick_finish(bigint, timestamptz, interval, text),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, integer)
        TO pgpulse_ticker;
    -- relay: where orphaned jobs go now (after the ticker's grants: one order of ACL entries)
    GRANT EXECUTE ON FUNCTION pgpulse._routing() TO pgpulse_relay;
END
$grants$;
