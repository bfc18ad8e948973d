-- Revision 0014: the tick routes multi-region monitors inline instead of calling
-- pgpulse._route_each twice per monitor (a SQL function starts an executor on every call:
-- a tenth of a tick whose monitors are one in ten multi-region).

CREATE OR REPLACE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}',
    p_only text[] DEFAULT NULL,
    OUT claimed integer, OUT written integer, OUT wheeled integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- a chunk is small next to the table: join it row by row, never hash the whole table
SET enable_hashjoin = off
SET enable_mergejoin = off
-- the planner cannot know how many slots a monitor has this tick and guesses 1000: JIT
-- compiling for that guess costs seconds and never pays off
SET jit = off
AS $$
DECLARE
    v_now     timestamptz := coalesce(p_now, clock_timestamp());
    -- without any window (the usual case) the tick never looks for one per slot
    v_windows boolean := EXISTS (SELECT 1 FROM pgpulse.maintenance_windows);
BEGIN
    WITH due AS MATERIALIZED (
        SELECT m.ctid AS row_ref, m.id, m.check_spec, m.criticality, m.allow_fallback,
               m.check_regions, m.check_interval_seconds AS iv_s,
               CASE
                   -- more than a year late (or a -infinity that slipped past the CHECK):
                   -- restart on the phase grid, the latest slot not after now
                   WHEN m.next_check_at < v_now - interval '1 year'
                       THEN pgpulse._grid_slot(m.id::text, m.check_interval_seconds,
                                               v_now - make_interval(secs => m.check_interval_seconds))
                   -- catch-up: the latest slot not after now, never one per missed slot
                   ELSE m.next_check_at + make_interval(secs => m.check_interval_seconds)
                        * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                            / m.check_interval_seconds))::float8
               END AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                              ELSE m.preferred_region END
               END AS routed
          FROM public.monitors m
         WHERE m.is_active AND m.next_check_at <= p_horizon
           AND (p_only IS NULL OR m.id::text = ANY (p_only))
           AND CASE WHEN m.check_regions IS NULL
                    THEN p_wheel IS NOT NULL
                         OR CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                 ELSE m.preferred_region END IS NOT NULL
                    -- (_route_each spelled out: a SQL function starts an executor per call)
                    ELSE EXISTS (SELECT 1 FROM unnest(m.check_regions) c(code)
                                  WHERE CASE WHEN m.allow_fallback THEN p_route ->> c.code
                                             ELSE c.code END IS NOT NULL)
               END
           AND (cardinality(p_skip) = 0 OR m.id::text <> ALL (p_skip))
         ORDER BY m.next_check_at
         LIMIT p_chunk
           FOR UPDATE OF m SKIP LOCKED
    ), routed AS (
        -- the wheel continues where the previous chunk left it: a running count of the
        -- wheel's rows (no sort needed)
        SELECT d.*,
               -- the slots up to the horizon: the first one, and n - 1 more
               floor(extract(epoch FROM p_horizon - d.slot) / d.iv_s)::integer + 1 AS n,
               CASE WHEN d.check_regions IS NULL THEN
                   ARRAY[coalesce(d.routed,
                       p_wheel[1 + ((p_rr + count(*) FILTER (WHERE d.routed IS NULL
                                                               AND d.check_regions IS NULL)
                                                OVER (ROWS UNBOUNDED PRECEDING))
                                    % cardinality(p_wheel))::integer])]
               ELSE (SELECT array_agg(DISTINCT r.code ORDER BY r.code)
                       FROM unnest(d.check_regions) c(code)
                      CROSS JOIN LATERAL (SELECT CASE WHEN d.allow_fallback THEN p_route ->> c.code
                                                      ELSE c.code END) r(code)
                      WHERE r.code IS NOT NULL) END AS regions
          FROM due d
    ), windows AS MATERIALIZED (
        SELECT * FROM pgpulse._maintenance_occurrences(v_now - interval '1 day', p_horizon)
         WHERE v_windows
    ), slot AS NOT MATERIALIZED (
        -- every slot up to the horizon, and the maintenance window it falls in
        SELECT r.*, s.at,
               CASE WHEN v_windows THEN (
                   SELECT min(w.window_id) FROM windows w
                    WHERE (w.monitor_ids IS NULL OR r.id::text = ANY (w.monitor_ids))
                      AND s.at >= w.lo AND s.at < w.hi
                      AND (s.at AT TIME ZONE w.time_zone) >= w.local_start
                      AND (s.at AT TIME ZONE w.time_zone) < w.local_end) END AS window_id
          FROM routed r
         CROSS JOIN LATERAL (SELECT r.slot + make_interval(secs => r.iv_s) * k AS at
                               FROM generate_series(0, r.n - 1) k) s
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT md5(s.id::text || '/' || g.region || '/' || extract(epoch FROM s.at)::text)::uuid,
               s.id, g.region, s.criticality, s.at, s.at,
               s.at + make_interval(secs => s.iv_s), s.allow_fallback,
               CASE WHEN s.check_regions IS NULL THEN s.check_spec
                    ELSE s.check_spec || jsonb_build_object('slot_regions', s.regions) END
          FROM slot s
         CROSS JOIN LATERAL unnest(s.regions) g(region)
         WHERE s.window_id IS NULL
    ), skips AS (
        SELECT window_id, count(*) AS n FROM slot
         WHERE v_windows AND window_id IS NOT NULL GROUP BY window_id
    ), counted AS (
        UPDATE pgpulse.maintenance_windows w
           SET skipped_slots = w.skipped_slots + k.n
          FROM skips k
         WHERE w.id = k.window_id
    ), inserted AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE NOT p_keep_existing
        RETURNING 1
    ), inserted_keeping AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE p_keep_existing
            ON CONFLICT DO NOTHING
        RETURNING 1
    ), bumped AS (
        UPDATE public.monitors m
           SET next_check_at = r.slot + make_interval(secs => r.iv_s) * r.n,
               last_scheduled_at = v_now
          FROM routed r
         WHERE m.ctid = r.row_ref
    )
    SELECT d.claimed, d.wheeled,
           (SELECT count(*) FROM inserted) + (SELECT count(*) FROM inserted_keeping),
           (SELECT coalesce(sum(n), 0) FROM skips)
      INTO claimed, wheeled, written, skipped
      FROM (SELECT count(*) AS claimed,
                   count(*) FILTER (WHERE routed IS NULL AND check_regions IS NULL) AS wheeled
              FROM due) d;
END
$$;
