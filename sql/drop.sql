-- Removes everything the schema files (sql/NN_*.sql) and sql/cron.sql installed (pg_cron itself stays).
-- Alembic's version table, pgpulse.alembic_version, outlives the rest: Alembic writes its
-- last downgrade there after this runs.
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

-- A product's adopted monitors table keeps every row and column it had: only what
-- pgpulse added goes, last first. A monitors table pgpulse created goes whole.
-- (a monitors table pgpulse created goes after schema pgpulse, whose views and functions
-- depend on it; pgpulse.dropping_monitors says so until then)
DO $$
DECLARE
    v_added record;
BEGIN
    IF to_regclass('pgpulse.adoption') IS NULL THEN
        PERFORM set_config('pgpulse.dropping_monitors', 'on', true);
        RETURN;
    END IF;
    FOR v_added IN SELECT kind, name FROM pgpulse.adoption ORDER BY step DESC LOOP
        EXECUTE format(CASE v_added.kind
                           WHEN 'column' THEN 'ALTER TABLE public.monitors DROP COLUMN %I'
                           WHEN 'index' THEN 'DROP INDEX public.%I'
                           WHEN 'trigger' THEN 'DROP TRIGGER %I ON public.monitors' END,
                       v_added.name);
    END LOOP;
END
$$;

DO $$
BEGIN
    -- before revision 0002 the regions table lived in public; a public.regions beside
    -- pgpulse.regions is the product's own
    IF to_regclass('pgpulse.regions') IS NULL THEN
        DROP TABLE public.regions;
    END IF;
    IF to_regclass('pgpulse.alembic_version') IS NULL THEN
        DROP SCHEMA pgpulse CASCADE;
    ELSE
        ALTER SCHEMA pgpulse RENAME TO pgpulse_dropping;
        CREATE SCHEMA pgpulse;
        ALTER TABLE pgpulse_dropping.alembic_version SET SCHEMA pgpulse;
        DROP SCHEMA pgpulse_dropping CASCADE;
    END IF;
    IF current_setting('pgpulse.dropping_monitors', true) = 'on' THEN
        DROP TABLE public.monitors;
    END IF;
END
$$;
