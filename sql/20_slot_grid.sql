-- pgpulse schema, part 2 of 8: the slot grid (a monitor's phase and its slots).

-- ================================================================== functions
-- No name in pgpulse's code resolves through the caller's search_path, so an operator or
-- function planted in a schema the caller can write (say public./(numeric, integer)) never
-- runs in it: plpgsql functions pin search_path (pg_catalog, then pg_temp, which is never
-- searched for functions or operators); SQL functions have SQL-standard bodies, bound when
-- created (a pinned SQL function is never inlined, and is re-planned on every call: too
-- slow where it runs per row). The tick procedure commits, so it cannot pin it: it only
-- calls pgpulse.* and computes nothing itself.

-- The phase of a monitor inside its interval, from a hash of its id (spreads new monitors),
-- in milliseconds. The hash goes to bigint before abs(): abs() of the smallest integer would
-- overflow.
CREATE FUNCTION pgpulse._slot_phase(p_id uuid, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0;

-- The first slot at or after p_from on the monitor's phase grid.
CREATE FUNCTION pgpulse.next_slot(p_id uuid, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds));

-- The same two for a product's own ids that are not uuids (bigint, text: an adopted
-- monitors table), by the hash of their text form; a uuid still takes the uuid ones.
-- (Polymorphic: no SQL-standard body, so these pin search_path; they run per insert.)
CREATE FUNCTION pgpulse._slot_phase(p_id anyelement, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0
$$;

CREATE FUNCTION pgpulse.next_slot(p_id anyelement, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds))
$$;

-- The same two for an interval in minutes (kept for callers of revision 0001).
CREATE FUNCTION pgpulse._phase_seconds(p_id uuid, p_interval_minutes integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pgpulse._slot_phase(p_id, p_interval_minutes * 60);

CREATE FUNCTION pgpulse.first_slot(p_id uuid, p_interval_minutes integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pgpulse.next_slot(p_id, p_interval_minutes * 60, p_from);

-- The first slot at or after p_from on the phase grid of a monitor whose id, as text, is
-- p_key: the grid next_slot gives a uuid id, for any id type (an adopted table's bigint).
CREATE FUNCTION pgpulse._grid_slot(p_key text, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_timestamp(
        ceil((extract(epoch FROM p_from)
              - (abs(hashtext(p_key)::bigint) % (p_interval_seconds * 1000)) / 1000.0)
             / p_interval_seconds) * p_interval_seconds
        + (abs(hashtext(p_key)::bigint) % (p_interval_seconds * 1000)) / 1000.0);
