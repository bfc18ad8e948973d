-- Revision 0002 downgrade: the regions table goes back to public with the routing that
-- reads it there, unless the product has a public.regions of its own; then it stays in
-- pgpulse, as does the routing (sql/drop.sql removes it there).

DO $down$
BEGIN
    IF to_regclass('public.regions') IS NOT NULL THEN
        RAISE NOTICE 'pgpulse: public.regions belongs to the product; pgpulse.regions stays';
        RETURN;
    END IF;
    ALTER TABLE pgpulse.regions SET SCHEMA public;
    EXECUTE $fn$
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
      FROM public.regions;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN p.enabled AND p.healthy THEN p.code END,
               CASE WHEN f.enabled AND f.healthy THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_healthy THEN p.code END))
      INTO route
      FROM public.regions p
      LEFT JOIN public.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (healthy AND NOT degraded) DESC, healthy DESC) AS tier
              FROM public.regions WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;
    $fn$;
END
$down$;
