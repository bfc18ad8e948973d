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
    v_super     boolean;
BEGIN
    BEGIN
        IF to_regclass('cron.job') IS NULL THEN
            CREATE EXTENSION pg_cron;
        END IF;
        -- a job is keyed by its name and user: remove ours before scheduling anew
        PERFORM cron.unschedule(jobid) FROM cron.job
         WHERE jobname IN ('pgpulse-tick', 'pgpulse-prune') AND database = current_database();
        -- pg_cron fires once a minute; the tick's lookahead gives second-level delivery
        -- times. Every job runs as pgpulse_ticker, which may run the tick and nothing else,
        -- or, where a role without superuser migrates (a managed database's owner), as that
        -- role: never as a superuser. pg_cron 1.4 lets only a superuser schedule for
        -- another role, and only for one that may log in.
        v_super := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
        v_as_ticker := v_super
            AND coalesce((SELECT rolcanlogin FROM pg_roles WHERE rolname = 'pgpulse_ticker'), false);
        IF v_as_ticker THEN  -- and the role was granted the tick (sql/roles.sql)
            v_as_ticker := coalesce(has_function_privilege('pgpulse_ticker',
                to_regprocedure('pgpulse._tick_step(bigint, timestamptz, interval, integer, '
                                'bigint, text[], interval)'), 'EXECUTE'), false);
        END IF;
        IF v_super AND NOT v_as_ticker THEN
            RAISE WARNING 'pgpulse: no pg_cron job was scheduled: it would run as superuser "%"',
                current_user
                USING HINT = 'let `pgpulse migrate` create the role pgpulse_ticker (with '
                             'CREATEROLE), then run `pgpulse migrate` again';
            RETURN;
        END IF;
        -- pg_cron keeps every run forever unless pruned (runs that never ended too); the
        -- tick prunes its own run records. pg_cron's row security lets a role delete only
        -- the runs of its own jobs: these.
        IF v_as_ticker THEN
            GRANT USAGE ON SCHEMA cron TO pgpulse_ticker;  -- the prune reads its own runs
            PERFORM cron.schedule_in_database('pgpulse-tick', '* * * * *',
                $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$, current_database(), 'pgpulse_ticker');
            PERFORM cron.schedule_in_database('pgpulse-prune', '17 3 * * *',
                $$DELETE FROM cron.job_run_details
                   WHERE coalesce(end_time, start_time) < now() - interval '7 days'$$,
                current_database(), 'pgpulse_ticker');
        ELSE
            PERFORM cron.schedule('pgpulse-tick', '* * * * *',
                                  $$CALL pgpulse.tick(p_trigger => 'pg_cron')$$);
            PERFORM cron.schedule('pgpulse-prune', '17 3 * * *',
                $$DELETE FROM cron.job_run_details
                   WHERE coalesce(end_time, start_time) < now() - interval '7 days'$$);
            RAISE WARNING 'pgpulse: pg_cron runs the tick as role "%", not as pgpulse_ticker',
                current_user
                USING HINT = 'a superuser can run `pgpulse migrate` to have it run as pgpulse_ticker';
        END IF;
        RETURN;
    EXCEPTION
        WHEN insufficient_privilege THEN
            v_problem := format('role "%s" may not set up pg_cron in database "%s" (%s)',
                                current_user, current_database(), SQLERRM);
            v_hint := 'a superuser can run `pgpulse migrate`, or the SQL that '
                      '`pgpulse migrate --sql --from head` prints';
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
