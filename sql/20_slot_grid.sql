-- pgpulse schema, part 2 of 8: the slot grid (a monitor's phase and its slots).

-- ================================================================== functions
-- No name in pgpulse's code resolves through the caller's search_path, so an operator or
-- function planted in a schema the caller can write (say public./(numeric, integer)) never
-- runs in it: plpgsql functions pin search_path (pg_catalog, then pg_temp, which is never
-- searched for functions or operators); SQL functions have SQL-standard bodies, bound when
-- created (a pinned SQL function is never inlined, and is re-planned on every call: too
-- slow where it runs per row). The tick procedure commits, so it cannot pin it: it only
-- calls pgpulse.* and computes nothing itself.

-- A function that runs per row is a SQL function of one expression (RETURN ...), without
-- SET clauses, declared no less volatile than its body: the planner inlines it, so a plan
-- holds its expression, not a call per row. (extract(epoch FROM timestamptz) is STABLE: a
-- function using it that is declared IMMUTABLE runs as a call per row.)

-- A monitor's hash, never negative, from its id as text (p_key: an id of any type, uuid or
-- an adopted table's bigint): its phase, and its round-robin region when its jobs are
-- rerouted. To bigint before abs(): abs() of the smallest integer would overflow.
CREATE FUNCTION pgpulse._id_hash(p_key text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN abs(hashtext(p_key)::bigint);

-- The phase of a monitor inside its interval, in seconds (millisecond steps): spreads new
-- monitors. numeric, so that the grid's arithmetic is exact (a slot is its own next slot).
CREATE FUNCTION pgpulse._slot_phase(p_key text, p_interval_seconds integer)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (pgpulse._id_hash(p_key) % (p_interval_seconds * 1000)) / 1000.0;

-- The first slot at or after p_from on the phase grid of the monitor whose id, as text, is
-- p_key.
CREATE FUNCTION pgpulse._grid_slot(p_key text, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_key, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_key, p_interval_seconds));

-- For the product: the first slot at or after p_from on a monitor's phase grid.
CREATE FUNCTION pgpulse.next_slot(p_id uuid, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pgpulse._grid_slot(p_id::text, p_interval_seconds, p_from);

-- The same for a product's own ids that are not uuids (bigint, text: an adopted monitors
-- table). Polymorphic: no SQL-standard body, so it pins search_path (and is not inlined).
CREATE FUNCTION pgpulse.next_slot(p_id anyelement, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pgpulse._grid_slot(p_id::text, p_interval_seconds, p_from)
$$;

-- The slot a due monitor's jobs start from now: the latest slot of its own schedule not
-- after p_now (a catch-up never writes one job per missed slot). One more than a year late
-- (or a -infinity that slipped past the CHECK) would overflow that arithmetic: it restarts
-- on its phase grid, at the latest slot not after p_now.
CREATE FUNCTION pgpulse._catch_up_slot(
    p_key text, p_interval_seconds integer, p_next_check_at timestamptz, p_now timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE
    WHEN p_next_check_at < p_now - interval '1 year'
        THEN pgpulse._grid_slot(p_key, p_interval_seconds,
                                p_now - make_interval(secs => p_interval_seconds))
    ELSE p_next_check_at + make_interval(secs => p_interval_seconds)
         * greatest(0, floor(extract(epoch FROM p_now - p_next_check_at)
                             / p_interval_seconds))::float8
END;
