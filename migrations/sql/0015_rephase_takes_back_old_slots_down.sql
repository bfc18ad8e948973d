-- Revision 0015 down: a changed interval leaves the old interval's waiting jobs.

CREATE OR REPLACE FUNCTION pgpulse._monitor_rephased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgpulse._schedule_now(ARRAY[NEW.id::text]);
    RETURN NULL;
END
$$;
