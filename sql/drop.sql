-- Removes everything sql/schema.sql and sql/cron.sql installed (pg_cron itself stays).
DO $$
BEGIN
    IF to_regclass('cron.job') IS NOT NULL THEN
        PERFORM cron.unschedule(jobid) FROM cron.job
         WHERE jobname IN ('pgpulse-tick', 'pgpulse-prune') AND database = current_database();
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'pgpulse: role "%" may not remove the pg_cron jobs pgpulse-tick and '
        'pgpulse-prune of database "%" (%)', current_user, current_database(), SQLERRM
        USING HINT = 'a superuser can run: SELECT cron.unschedule(''pgpulse-tick''), '
                     'cron.unschedule(''pgpulse-prune'')';
END
$$;
DROP SCHEMA pgpulse CASCADE;
DROP TABLE public.monitors;
DROP TABLE public.regions;
