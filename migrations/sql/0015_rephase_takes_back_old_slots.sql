-- Revision 0015: a changed interval takes back the jobs of the old interval's slots still to
-- come before the new grid's slots are written.

CREATE OR REPLACE FUNCTION pgpulse._monitor_rephased() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- jobs written ahead on the old interval's grid: a slot already due is still checked
    IF OLD.is_active AND NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = NEW.id AND scheduled_for > now();
    END IF;
    PERFORM pgpulse._schedule_now(ARRAY[NEW.id::text]);
    RETURN NULL;
END
$$;
