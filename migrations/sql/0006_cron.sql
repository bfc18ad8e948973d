-- Installs pgpulse's pg_cron jobs when pg_cron can run in this database; otherwise warns
-- and leaves ticks to `pgpulse tick` or POST /api/cron/scheduler. Safe to run again.
-- Never fails the migration, and reads no superuser-only setting: pg_cron is found by its
-- extension (or by creating it), as a managed database's owner can. Where pg_cron runs in
-- another database (RDS, Cloud SQL keep it in `postgres`), `pgpulse migrate` schedules
-- the tick from there with cron.schedule_in_database, or prints the statement to run.
DO $install$
DECLARE
    v_problem   text;
    v_hint      text;
    v_as_ticker boolean;
BEGIN
    BEGIN
        IF to_regclass('cron.job') IS NULL THEN
            CREATE EXTENSION pg_cron;
        END IF;
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
    EXCEPTION
        WHEN insufficient_privilege THEN
            v_problem := format('role "%s" may not set up pg_cron in database "%s" (%s)',
                                current_user, current_database(), SQLERRM);
            v_hint := 'run `pgpulse migrate` as a superuser, or have one run sql/cron.sql';
        WHEN OTHERS THEN
            v_problem := format('pg_cron is not available in database "%s" (%s)',
                                current_database(), SQLERRM);
            v_hint := format('pg_cron needs shared_preload_libraries = ''pg_cron'' and '
                             'cron.database_name = ''%s'', or cron.schedule_in_database from '
                             'the database it runs in', current_database());
    END;
    RAISE WARNING 'pgpulse: %; no job was scheduled here. '
        'Drive ticks every minute with `pgpulse tick`, or POST /api/cron/scheduler', v_problem
        USING HINT = v_hint;
END
$install$;
