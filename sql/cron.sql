-- Installs pgpulse's pg_cron jobs when pg_cron can run in this database; otherwise warns
-- and leaves ticks to `pgpulse tick` or POST /api/cron/scheduler. Safe to run again.
DO $install$
DECLARE
    v_preloaded boolean := 'pg_cron' = ANY (
        string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','));
BEGIN
    IF NOT v_preloaded
       OR current_setting('cron.database_name', true) IS DISTINCT FROM current_database()
       OR NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
        RAISE WARNING 'pgpulse: pg_cron is not available in database "%"; no job was scheduled. '
            'Drive ticks every minute with `pgpulse tick`, or POST /api/cron/scheduler', current_database()
            USING HINT = 'pg_cron needs shared_preload_libraries = ''pg_cron'' and cron.database_name = '''
                         || current_database() || '''';
        RETURN;
    END IF;
    CREATE EXTENSION IF NOT EXISTS pg_cron;
    -- pg_cron fires once a minute; the tick's lookahead gives second-level delivery times
    PERFORM cron.schedule('pgpulse-tick', '* * * * *',
                          $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$);
    -- pg_cron keeps every run forever unless pruned
    PERFORM cron.schedule('pgpulse-prune', '17 3 * * *',
        $$DELETE FROM cron.job_run_details WHERE end_time < now() - interval '7 days';
          DELETE FROM pgpulse.tick_runs WHERE started_at < now() - interval '30 days'$$);
END
$install$;
