-- Revision 0002: pgpulse owns only schema pgpulse. The regions table moves out of public
-- (a product often has its own `regions`); its rows, keys, grants and the monitors'
-- foreign key move with it. Functions that name the table are recreated.

ALTER TABLE public.regions SET SCHEMA pgpulse;

CREATE OR REPLACE FUNCTION pgpulse._routing(OUT route jsonb, OUT wheel text[])
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_default     text;
    v_any_healthy boolean;
BEGIN
    SELECT min(code) FILTER (WHERE is_default AND enabled AND healthy),
           coalesce(bool_or(enabled AND healthy), false)
      INTO v_default, v_any_healthy
      FROM pgpulse.regions;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN p.enabled AND p.healthy THEN p.code END,
               CASE WHEN f.enabled AND f.healthy THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_healthy THEN p.code END))
      INTO route
      FROM pgpulse.regions p
      LEFT JOIN pgpulse.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (healthy AND NOT degraded) DESC, healthy DESC) AS tier
              FROM pgpulse.regions WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;
