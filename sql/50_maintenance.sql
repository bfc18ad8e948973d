-- pgpulse schema, part 5 of 8: maintenance windows.

-- Each maintenance window's occurrences that may hold a slot between p_from and p_to, in
-- local wall-clock time of its zone (local_start to local_end), with a UTC range around
-- them (lo to hi: three hours wider than any DST shift) for a cheap first test.
CREATE FUNCTION pgpulse._maintenance_occurrences(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (window_id bigint, monitor_ids text[], time_zone text, local_start timestamp,
               local_end timestamp, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT w.id, w.monitor_ids, w.time_zone, o.local_start, o.local_end,
           (o.local_start AT TIME ZONE w.time_zone) - interval '3 hours',
           (o.local_end AT TIME ZONE w.time_zone) + interval '3 hours'
      FROM pgpulse.maintenance_windows w
      CROSS JOIN LATERAL (
          SELECT w.starts_local AS local_start, w.ends_local AS local_end
           WHERE w.starts_local IS NOT NULL
          UNION ALL
          SELECT d + w.start_time, d + w.start_time + w.duration
            FROM generate_series(date_trunc('day', p_from AT TIME ZONE w.time_zone)
                                     - interval '8 days',
                                 date_trunc('day', p_to AT TIME ZONE w.time_zone),
                                 interval '1 day') d
           WHERE w.starts_local IS NULL
             AND extract(isodow FROM d)::smallint = ANY (w.weekdays)
      ) o
     WHERE o.local_end > (p_from AT TIME ZONE w.time_zone) - interval '1 day'
       AND o.local_start <= (p_to AT TIME ZONE w.time_zone) + interval '1 day'
$$;

-- Whether p_at falls inside an occurrence of a window: its wall-clock time in the window's
-- zone is from local_start up to local_end (see _maintenance_occurrences).
CREATE FUNCTION pgpulse._inside_occurrence(
    p_at timestamptz, p_time_zone text, p_local_start timestamp, p_local_end timestamp)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (p_at AT TIME ZONE p_time_zone) >= p_local_start
       AND (p_at AT TIME ZONE p_time_zone) < p_local_end;

-- The maintenance window a monitor's slot falls in (the lowest id of several), or NULL.
CREATE FUNCTION pgpulse.maintenance_window_at(p_monitor text, p_at timestamptz)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT min(o.window_id)
      FROM pgpulse._maintenance_occurrences(p_at, p_at) o
     WHERE (o.monitor_ids IS NULL OR p_monitor = ANY (o.monitor_ids))
       AND pgpulse._inside_occurrence(p_at, o.time_zone, o.local_start, o.local_end)
$$;

-- A window's time zone is an IANA name (not an abbreviation or a POSIX offset string).
CREATE FUNCTION pgpulse._maintenance_check_zone() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.time_zone) THEN
        RAISE EXCEPTION 'maintenance window: unknown time zone "%" (an IANA name such as '
            'Europe/Berlin)', NEW.time_zone USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

-- A window made or changed after the tick wrote its slots: those jobs still waiting are
-- taken back and counted as skipped.
CREATE FUNCTION pgpulse._maintenance_take_back_jobs() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_slots bigint;
BEGIN
    WITH gone AS (
        DELETE FROM pgpulse.outbox j
         USING pgpulse._maintenance_occurrences(now() - interval '2 days',
                                                now() + interval '1 day') o
         WHERE o.window_id = NEW.id
           AND (NEW.monitor_ids IS NULL OR j.monitor_id::text = ANY (NEW.monitor_ids))
           AND j.scheduled_for >= o.lo AND j.scheduled_for < o.hi
           AND pgpulse._inside_occurrence(j.scheduled_for, o.time_zone, o.local_start,
                                          o.local_end)
        RETURNING j.monitor_id, j.scheduled_for
    )
    SELECT count(DISTINCT (monitor_id, scheduled_for)) INTO v_slots FROM gone;
    IF v_slots > 0 THEN
        UPDATE pgpulse.maintenance_windows SET skipped_slots = skipped_slots + v_slots
         WHERE id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER maintenance_windows_check_zone
    BEFORE INSERT OR UPDATE OF time_zone ON pgpulse.maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION pgpulse._maintenance_check_zone();

CREATE TRIGGER maintenance_windows_take_back_jobs
    AFTER INSERT OR UPDATE OF monitor_ids, time_zone, starts_local, ends_local, weekdays,
                              start_time, duration
    ON pgpulse.maintenance_windows
    FOR EACH ROW EXECUTE FUNCTION pgpulse._maintenance_take_back_jobs();
