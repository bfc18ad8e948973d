-- pgpulse schema, part 6 of 8: routing (which region a job goes to).

-- Whether a region takes jobs: enabled, healthy (its queue answers) and its workers are not
-- absent (a region that had workers and has none now: its queue would only hold them).
CREATE FUNCTION pgpulse._takes_jobs(r pgpulse.regions)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN r.enabled AND r.healthy AND NOT r.workers_absent;

-- Where jobs go, from the regions as they are now. route: for each region code, where a
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
    SELECT min(r.code) FILTER (WHERE r.is_default AND pgpulse._takes_jobs(r)),
           coalesce(bool_or(pgpulse._takes_jobs(r)), false)
      INTO v_default, v_any_open
      FROM pgpulse.regions r;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN pgpulse._takes_jobs(p) THEN p.code END,
               CASE WHEN pgpulse._takes_jobs(f) THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_open THEN p.code END))
      INTO route
      FROM pgpulse.regions p
      LEFT JOIN pgpulse.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (pgpulse._takes_jobs(e) AND NOT degraded) DESC,
                                               pgpulse._takes_jobs(e) DESC) AS tier
              FROM pgpulse.regions e WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;

-- The region a job of a monitor preferring p_preferred goes to (p_route: from _routing), or
-- NULL. With fallback, that region's route (NULL: round-robin); without, the region itself
-- while it exists (a deleted region gets no job: the monitor stays due, counted unrouted).
CREATE FUNCTION pgpulse._routed_region(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_allow_fallback THEN p_route ->> p_preferred
            WHEN p_route ? p_preferred THEN p_preferred END;

-- Whether a region can take a job of this schedule row now (p_route, p_wheel: from
-- _routing). A multi-region monitor (check_regions): when one of its regions routes
-- somewhere (_routed_region of each: with fallback, a route that is not NULL; without, a
-- region that exists). Another: when its region routes somewhere, or it may go round-robin
-- (it has no region, or may fall back) and there is a wheel.
CREATE FUNCTION pgpulse._is_routable(s pgpulse.schedule, p_route jsonb, p_wheel text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN s.check_regions IS NULL
        THEN (p_wheel IS NOT NULL AND (s.preferred_region IS NULL OR s.allow_fallback))
             OR pgpulse._routed_region(s.preferred_region, s.allow_fallback, p_route) IS NOT NULL
    -- (IS TRUE: with no region at all p_route is NULL)
    WHEN s.allow_fallback THEN (jsonb_strip_nulls(p_route) ?| s.check_regions) IS TRUE
    ELSE (p_route ?| s.check_regions) IS TRUE
END;

-- The round-robin wheel's region at turn p_turn (the wheel from _routing; NULL without one):
-- the tick turns it monitor by monitor, a reroute picks a monitor's turn by its id's hash.
CREATE FUNCTION pgpulse._wheel_region(p_wheel text[], p_turn bigint)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_wheel[1 + (p_turn % cardinality(p_wheel))::integer];

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
