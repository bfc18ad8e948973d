-- Installs pgpulse's pg_cron jobs when pg_cron can run in this database; otherwise warns
-- and leaves ticks to `pgpulse tick` or POST /api/cron/scheduler. Safe to run again.
-- Never fails the migration: a role that may not read the server's settings or use
-- pg_cron (a managed database's owner, say) gets the warning instead.
DO $install$
DECLARE
    v_problem text;
    v_hint    text;
BEGIN
    BEGIN
        IF NOT 'pg_cron' = ANY (string_to_array(
                   replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
           OR current_setting('cron.database_name', true) IS DISTINCT FROM current_database()
           OR NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
            v_problem := format('pg_cron is not available in database "%s"', current_database());
            v_hint := format('pg_cron needs shared_preload_libraries = ''pg_cron'' and '
                             'cron.database_name = ''%s''', current_database());
        ELSE
            CREATE EXTENSION IF NOT EXISTS pg_cron;
            -- pg_cron fires once a minute; the tick's lookahead gives second-level delivery times
            PERFORM cron.schedule('pgpulse-tick', '* * * * *',
                                  $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$);
            -- pg_cron keeps every run forever unless pruned
            PERFORM cron.schedule('pgpulse-prune', '17 3 * * *',
                $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days';
                  DELETE FROM pgpulse.tick_runs WHERE started_at < now() - interval '30 days'$$);
            RETURN;
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        v_problem := format('role "%s" may not set up pg_cron in database "%s" (%s)',
                            current_user, current_database(), SQLERRM);
        v_hint := 'run `pgpulse migrate` as a superuser, or have one run sql/cron.sql';
    END;
    RAISE WARNING 'pgpulse: %; no job was scheduled. '
        'Drive ticks every minute with `pgpulse tick`, or POST /api/cron/scheduler', v_problem
        USING HINT = v_hint;
END
$install$;
