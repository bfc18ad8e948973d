-- Release 0.2.0 (unreleased), downgrade to 0016: the inverse of each change in 0.2.0.sql,
-- the latest change first. 0009_roles.sql and 0007_cron.sql, applied after this file, give
-- the roles and the pg_cron jobs back their 0016 rights and commands.

-- The tick's steps and the monitors' job triggers go back to the migrating role; the owner
-- role keeps no right here (roles belong to the cluster: it stays). The relay's grants that
-- 0009_roles.sql makes after the ticker's are taken first, to come back in 0016's order.
ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
    SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) SECURITY INVOKER;
DO $owner$
BEGIN
    IF to_regrole('pgpulse_owner') IS NULL THEN
        RETURN;
    END IF;
    ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
        OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_drop_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_update_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._outbox_requeue_current() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitors_inserted() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_rephased() OWNER TO CURRENT_USER;
    REVOKE ALL ON public.monitors, pgpulse.regions, pgpulse.outbox, pgpulse.tick_runs,
        pgpulse.dead_letters, pgpulse.maintenance_windows FROM pgpulse_owner;
    REVOKE ALL ON FUNCTION
        pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, integer)
        FROM pgpulse_owner;
    REVOKE ALL ON SCHEMA pgpulse FROM pgpulse_owner;
    IF to_regrole('pgpulse_relay') IS NOT NULL THEN
        REVOKE SELECT ON pgpulse.maintenance_windows FROM pgpulse_relay;
        REVOKE EXECUTE ON FUNCTION pgpulse._routing() FROM pgpulse_relay;
    END IF;
END
$owner$;
