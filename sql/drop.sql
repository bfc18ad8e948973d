-- Removes everything sql/schema.sql and sql/cron.sql installed (pg_cron itself stays).
DO $$
BEGIN
    IF to_regclass('cron.job') IS NOT NULL THEN
        PERFORM cron.unschedule(jobid) FROM cron.job
         WHERE jobname IN ('pgpulse-tick', 'pgpulse-prune') AND database = current_database();
    END IF;
END
$$;
DROP SCHEMA pgpulse CASCADE;
DROP TABLE public.monitors;
DROP TABLE public.regions;
