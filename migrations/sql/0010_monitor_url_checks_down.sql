-- Revision 0010 down: URLs are no longer checked; parked monitors are scheduled again (at
-- their next slot), as they were before 0010 parked them.
DROP TRIGGER monitors_url_checked ON public.monitors;
DROP TRIGGER monitors_url_parked ON public.monitors;
UPDATE public.monitors
   SET next_check_at = pgpulse._grid_slot(id::text, check_interval_seconds, now())
 WHERE next_check_at = '9999-12-31 23:59:59+00';
DROP FUNCTION pgpulse._monitor_url_checked();
DROP FUNCTION pgpulse.recheck_monitor_urls();
DROP FUNCTION pgpulse.monitor_url_problems();
DROP FUNCTION pgpulse.url_problem(text);

-- as revision 0006 made it
CREATE OR REPLACE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT m.is_active, m.check_spec, m.criticality, m.allow_fallback INTO v_monitor
      FROM public.monitors m WHERE m.id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active THEN
        RETURN NULL;
    END IF;
    NEW.payload := v_monitor.check_spec || jsonb_strip_nulls(
        jsonb_build_object('slot_regions', NEW.payload -> 'slot_regions'));
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;
