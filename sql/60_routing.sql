-- pgpulse schema, part 6 of 8: routing (which region a job goes to).

-- Where jobs go, from the regions as they are now. A region takes jobs when it is enabled,
-- healthy (its queue answers) and its workers are not absent (a region that had workers and
-- has none now: its queue would only hold them). route: for each region code, where a
-- monitor preferring it (and allowing fallback) is sent: the region itself when it takes
-- jobs, else its fallback region when that does, else the default region when that does;
-- when no region at all takes jobs, the region itself if enabled (the job waits there);
-- NULL: round-robin. wheel: the round-robin regions, each repeated by its weight: those
-- that take jobs and are not degraded; else those that take jobs; else the enabled ones
-- (jobs then wait in the outbox for a region to recover). A NULL wheel: no enabled region
-- with a weight.
CREATE FUNCTION pgpulse._routing(OUT route jsonb, OUT wheel text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_default  text;
    v_any_open boolean;
BEGIN
    SELECT min(code) FILTER (WHERE is_default AND enabled AND healthy AND NOT workers_absent),
           coalesce(bool_or(enabled AND healthy AND NOT workers_absent), false)
      INTO v_default, v_any_open
      FROM pgpulse.regions;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN p.enabled AND p.healthy AND NOT p.workers_absent THEN p.code END,
               CASE WHEN f.enabled AND f.healthy AND NOT f.workers_absent THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_open THEN p.code END))
      INTO route
      FROM pgpulse.regions p
      LEFT JOIN pgpulse.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (healthy AND NOT workers_absent AND NOT degraded) DESC,
                                               (healthy AND NOT workers_absent) DESC) AS tier
              FROM pgpulse.regions WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;

-- The region a monitor's job goes to (see _routing), or NULL for round-robin. Without
-- fallback, its own region while that exists (a deleted region gets no job: the monitor
-- stays due, counted unrouted).
CREATE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_allow_fallback THEN p_route ->> p_preferred
            WHEN p_route ? p_preferred THEN p_preferred END;

-- The regions a multi-region monitor's slot goes to: each listed region routed by its own
-- fallback rules (see _route), without duplicates (two listed regions whose jobs would land
-- in one region make one job there), sorted; NULL when none can take a job.
CREATE FUNCTION pgpulse._route_each(p_regions text[], p_allow_fallback boolean, p_route jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT array_agg(DISTINCT r ORDER BY r)
      FROM unnest(p_regions) c, pgpulse._route(c, p_allow_fallback, p_route) r
     WHERE r IS NOT NULL;
END;

-- A renamed region is renamed where pgpulse holds its code: the monitors' schedule (the
-- product's own columns are the product's to change) and the jobs waiting for it.
CREATE FUNCTION pgpulse._region_renamed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgpulse.schedule SET preferred_region = NEW.code WHERE preferred_region = OLD.code;
    UPDATE pgpulse.schedule SET check_regions = array_replace(check_regions, OLD.code, NEW.code)
     WHERE check_regions @> ARRAY[OLD.code];
    UPDATE pgpulse.outbox SET region = NEW.code WHERE region = OLD.code;
    RETURN NULL;
END
$$;

CREATE TRIGGER regions_renamed
    AFTER UPDATE OF code ON pgpulse.regions
    FOR EACH ROW WHEN (NEW.code IS DISTINCT FROM OLD.code)
    EXECUTE FUNCTION pgpulse._region_renamed();
