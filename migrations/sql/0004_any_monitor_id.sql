-- Revision 0004: slots for a product's own ids that are not uuids (an adopted monitors
-- table with bigint or text ids): overloads of the slot functions for any id type.

-- The same two for a product's own ids that are not uuids (bigint, text: an adopted
-- monitors table), by the hash of their text form; a uuid still takes the uuid ones.
CREATE FUNCTION pgpulse._slot_phase(p_id anyelement, p_interval_seconds integer)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (abs(hashtext(p_id::text)::bigint) % (p_interval_seconds * 1000)) / 1000.0
$$;

CREATE FUNCTION pgpulse.next_slot(p_id anyelement, p_interval_seconds integer, p_from timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT to_timestamp(
        ceil((extract(epoch FROM p_from) - pgpulse._slot_phase(p_id, p_interval_seconds))
             / p_interval_seconds) * p_interval_seconds
        + pgpulse._slot_phase(p_id, p_interval_seconds))
$$;

