-- Revision 0007 downgrade: the tick prunes nothing again; the ticker may not delete.

DROP INDEX pgpulse.dead_letters_failed;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgpulse_ticker') THEN
        REVOKE DELETE ON pgpulse.tick_runs FROM pgpulse_ticker;
        REVOKE ALL ON pgpulse.dead_letters FROM pgpulse_ticker;
    END IF;
END
$$;

-- Closes a tick's run record: why it stopped and, while its budget lasts, how many due
-- monitors no region could take.
CREATE OR REPLACE FUNCTION pgpulse._tick_finish(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_stop text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_route    jsonb;
    v_unrouted integer := 0;
BEGIN
    -- the record itself may wait a little past the deadline, never long
    PERFORM pgpulse._tick_bound_lock_wait(greatest(p_deadline, clock_timestamp() + interval '1 second'));
    IF p_stop = 'drained' THEN
        SELECT r.route INTO v_route FROM pgpulse._routing() r;
        v_unrouted := pgpulse._unrouted(clock_timestamp() + p_lookahead, v_route, 1000000);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;
