-- Least-privilege roles for pgpulse, created NOLOGIN; give each a login yourself:
--   psql "$DATABASE_URL" -f sql/roles.sql
--   psql "$DATABASE_URL" -c "CREATE ROLE relay_app LOGIN PASSWORD '...' IN ROLE pgpulse_relay"
-- pgpulse_relay:  what `pgpulse relay` needs (claim and delete outbox rows, write dead
--                 letters and region health, read monitors, regions and tick runs).
-- pgpulse_ticker: what a tick needs (`pgpulse tick`, POST /api/cron/scheduler); pg_cron
--                 runs the tick as the migration's owner instead.
-- Safe to run again.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgpulse_relay') THEN
        CREATE ROLE pgpulse_relay NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        CREATE ROLE pgpulse_ticker NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA pgpulse TO pgpulse_relay, pgpulse_ticker;

-- relay: SELECT ... FOR UPDATE needs UPDATE on one column; it never updates outbox rows
GRANT SELECT ON public.monitors TO pgpulse_relay;
GRANT SELECT, UPDATE (healthy, healthy_changed_at, degraded) ON pgpulse.regions TO pgpulse_relay;
GRANT SELECT, INSERT, DELETE, UPDATE (attempts) ON pgpulse.outbox TO pgpulse_relay;
GRANT SELECT, INSERT, UPDATE (attempts, last_error, failed_at, allow_fallback) ON pgpulse.dead_letters TO pgpulse_relay;
GRANT SELECT ON pgpulse.tick_runs TO pgpulse_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.push_intents TO pgpulse_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgpulse.region_observations TO pgpulse_relay;

-- ticker
GRANT SELECT, UPDATE (next_check_at, last_scheduled_at) ON public.monitors TO pgpulse_ticker;
GRANT SELECT ON pgpulse.regions TO pgpulse_ticker;
GRANT SELECT, INSERT ON pgpulse.outbox TO pgpulse_ticker;
GRANT SELECT, INSERT, UPDATE ON pgpulse.tick_runs TO pgpulse_ticker;
GRANT SELECT, UPDATE (skipped_slots) ON pgpulse.maintenance_windows TO pgpulse_ticker;
GRANT EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) TO pgpulse_ticker;
