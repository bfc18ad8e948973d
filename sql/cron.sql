-- Installs pgpulse's pg_cron jobs when pg_cron can run in this database; otherwise warns
-- and leaves ticks to `pgpulse tick` or POST /api/cron/scheduler. Safe to run again.
-- Never fails the migration: a role that may not read the server's settings or use
-- pg_cron (a managed database's owner, say) gets the warning instead.
DO $install$
DECLARE
    v_problem text;
    v_hint    text;
    v_as_ticker boolean;
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
            -- a job is keyed by its name and user: remove ours before scheduling anew
            PERFORM cron.unschedule(jobid) FROM cron.job
             WHERE jobname IN ('pgpulse-tick', 'pgpulse-prune') AND database = current_database();
            -- pg_cron fires once a minute; the tick's lookahead gives second-level delivery
            -- times. It runs as pgpulse_ticker, never as the owner: pg_cron 1.4 lets only a
            -- superuser schedule for another role, and only for one that may log in.
            v_as_ticker := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                AND coalesce((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'pgpulse_ticker'), false);
            IF v_as_ticker THEN  -- and the role was granted the tick (sql/roles.sql)
                v_as_ticker := coalesce(has_function_privilege('pgpulse_ticker',
                    to_regprocedure('pgpulse._tick_step(bigint, timestamptz, interval, integer, '
                                    'bigint, text[], interval)'), 'EXECUTE'), false);
            END IF;
            IF v_as_ticker THEN
                PERFORM cron.schedule_in_database('pgpulse-tick', '* * * * *',
                    $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$, current_database(), 'pgpulse_ticker');
            ELSE
                PERFORM cron.schedule('pgpulse-tick', '* * * * *',
                                      $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$);
                RAISE WARNING 'pgpulse: pg_cron runs the tick as role "%", not as pgpulse_ticker',
                    current_user
                    USING HINT = 'a superuser can run sql/roles.sql and sql/cron.sql';
            END IF;
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
