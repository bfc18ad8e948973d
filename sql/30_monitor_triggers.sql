-- pgpulse schema, part 3 of 8: the monitors' triggers (interval, phase, check, jobs).

-- Gives a new monitor without next_check_at its first slot on its phase grid. An interval
-- out of range gets now() instead, so that the row's CHECK constraint names the problem
-- (rather than a division by zero here, or a NULL next_check_at).
CREATE FUNCTION pgpulse._monitor_set_phase() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.next_check_at := CASE
        WHEN NEW.check_interval_seconds BETWEEN 10 AND 86400
            THEN pgpulse.next_slot(NEW.id, NEW.check_interval_seconds, now())
        ELSE now()
    END;
    RETURN NEW;
END
$$;

-- Builds a monitor's check_spec from the check's columns.
CREATE FUNCTION pgpulse._monitor_check_spec() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.check_spec := jsonb_build_object(
        'url', NEW.url, 'method', NEW.method, 'timeout_ms', NEW.timeout_ms,
        'expected_status', to_jsonb(NEW.expected_status),
        'retry', jsonb_build_object('max_attempts', NEW.check_retries + 1,
                                    'delay_ms', NEW.check_retry_delay_ms));
    RETURN NEW;
END
$$;

-- Keeps check_interval_seconds and check_interval_minutes in step: the one an INSERT or
-- UPDATE sets wins (seconds when both); minutes is the nearest whole minute, 1 to 1440.
-- Fires before monitors_set_phase (triggers fire in name order), which needs the seconds.
CREATE FUNCTION pgpulse._monitor_interval() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (TG_OP = 'INSERT' AND NEW.check_interval_seconds IS NOT NULL)
       OR (TG_OP = 'UPDATE' AND NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds) THEN
        NEW.check_interval_minutes := least(1440, greatest(1, round(NEW.check_interval_seconds / 60.0)));
    ELSE
        NEW.check_interval_seconds := NEW.check_interval_minutes * 60;
    END IF;
    RETURN NEW;
END
$$;

-- check_regions names regions that exist (a region removed later is skipped by the tick).
CREATE FUNCTION pgpulse._monitor_check_regions() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_unknown text;
BEGIN
    SELECT min(c) INTO v_unknown
      FROM unnest(NEW.check_regions) c
     WHERE NOT EXISTS (SELECT 1 FROM pgpulse.regions r WHERE r.code = c);
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION 'check_regions: unknown region "%"', v_unknown
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;

-- A changed interval re-phases the next check onto the new interval's grid: never later
-- than one new interval from now (1440 -> 1 minutes does not wait for the old slot); so
-- does re-activation (its next slot, not a catch-up for the time it was off). A
-- next_check_at set by the same UPDATE wins.
CREATE FUNCTION pgpulse._monitor_rephase() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.next_check_at IS NOT DISTINCT FROM OLD.next_check_at
       AND NEW.check_interval_seconds BETWEEN 10 AND 86400 THEN
        NEW.next_check_at := pgpulse._grid_slot(NEW.id::text, NEW.check_interval_seconds, now());
    END IF;
    RETURN NEW;
END
$$;

-- A deactivated or deleted monitor's waiting jobs go; a deleted one's dead letters too (a
-- retry would bring them back). SECURITY DEFINER: the product's own role changes monitors
-- and need not be allowed to touch pgpulse's tables.
CREATE FUNCTION pgpulse._monitor_drop_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgpulse.outbox WHERE monitor_id = OLD.id;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM pgpulse.dead_letters WHERE monitor_id = OLD.id;
    END IF;
    RETURN NULL;
END
$$;

-- A changed check (or criticality, or fallback choice) reaches the jobs still waiting.
CREATE FUNCTION pgpulse._monitor_update_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a multi-region job keeps the regions of its slot
    UPDATE pgpulse.outbox
       SET payload = NEW.check_spec || jsonb_strip_nulls(
               jsonb_build_object('slot_regions', payload -> 'slot_regions')),
           criticality = NEW.criticality, allow_fallback = NEW.allow_fallback
     WHERE monitor_id = NEW.id;
    RETURN NULL;
END
$$;

-- A job put back after a failure (the relay's requeue, a dead letter retried) may have
-- been in flight while its monitor changed: it is dropped when the monitor is inactive or
-- parked (its URL refused), and otherwise carries the monitor's check as it is now. (A job
-- without a monitor row was not written by the tick, or its monitor was deleted while it
-- was in flight: kept.)
CREATE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT m.is_active, m.check_spec, m.criticality, m.allow_fallback, m.next_check_at
      INTO v_monitor
      FROM public.monitors m WHERE m.id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active OR v_monitor.next_check_at = '9999-12-31 23:59:59+00' THEN
        RETURN NULL;
    END IF;
    NEW.payload := v_monitor.check_spec || jsonb_strip_nulls(
        jsonb_build_object('slot_regions', NEW.payload -> 'slot_regions'));
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;

CREATE TRIGGER monitors_interval
    BEFORE INSERT OR UPDATE OF check_interval_minutes, check_interval_seconds
    ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_interval();

CREATE TRIGGER monitors_check_regions
    BEFORE INSERT OR UPDATE OF check_regions ON public.monitors
    FOR EACH ROW WHEN (NEW.check_regions IS NOT NULL)
    EXECUTE FUNCTION pgpulse._monitor_check_regions();

-- Only the check's own columns: the tick's updates (next_check_at) do not fire it.
CREATE TRIGGER monitors_check_spec
    BEFORE INSERT OR UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                               check_retry_delay_ms, check_spec
    ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_check_spec();

CREATE TRIGGER monitors_set_phase
    BEFORE INSERT ON public.monitors
    FOR EACH ROW WHEN (NEW.next_check_at IS NULL)
    EXECUTE FUNCTION pgpulse._monitor_set_phase();

-- after monitors_interval (triggers fire in name order), which sets the seconds
CREATE TRIGGER monitors_rephase
    BEFORE UPDATE OF is_active, check_interval_minutes, check_interval_seconds ON public.monitors
    FOR EACH ROW WHEN (NEW.check_interval_seconds IS DISTINCT FROM OLD.check_interval_seconds
                       OR (NEW.is_active AND NOT OLD.is_active))
    EXECUTE FUNCTION pgpulse._monitor_rephase();

CREATE TRIGGER monitors_update_jobs
    AFTER UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                    check_retry_delay_ms, check_spec, criticality, allow_fallback
    ON public.monitors
    FOR EACH ROW WHEN (NEW.check_spec IS DISTINCT FROM OLD.check_spec
                       OR NEW.criticality IS DISTINCT FROM OLD.criticality
                       OR NEW.allow_fallback IS DISTINCT FROM OLD.allow_fallback)
    EXECUTE FUNCTION pgpulse._monitor_update_jobs();

CREATE TRIGGER monitors_deactivated_drop_jobs
    AFTER UPDATE OF is_active ON public.monitors
    FOR EACH ROW WHEN (OLD.is_active AND NOT NEW.is_active)
    EXECUTE FUNCTION pgpulse._monitor_drop_jobs();

CREATE TRIGGER monitors_deleted_drop_jobs
    AFTER DELETE ON public.monitors
    FOR EACH ROW EXECUTE FUNCTION pgpulse._monitor_drop_jobs();

-- The tick writes jobs without last_error: it never fires this.
CREATE TRIGGER outbox_requeue_current
    BEFORE INSERT ON pgpulse.outbox
    FOR EACH ROW WHEN (NEW.last_error IS NOT NULL)
    EXECUTE FUNCTION pgpulse._outbox_requeue_current();
