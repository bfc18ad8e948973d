-- Revision 0016: the tick's default lookahead is 70 s (was 60 s), so that a minute's tick
-- started late by pg_cron finds the first seconds of its minute already written.

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left, the time budget is nearly spent, or a lock held elsewhere would keep it
-- past its deadline; records the run and why it stopped in pgpulse.tick_runs.
-- Must be CALLed outside a transaction block (autocommit), as pg_cron does. The lookahead
-- reaches 10 s past the next minute: pg_cron starts a minute's tick up to a second late and
-- its first chunk commits a moment after, and the slots of that gap must be written already.
CREATE OR REPLACE PROCEDURE pgpulse.tick(
    INOUT run_id bigint DEFAULT NULL,
    p_trigger text DEFAULT 'manual',
    p_budget interval DEFAULT '45 seconds',
    p_lookahead interval DEFAULT '70 seconds',
    p_chunk integer DEFAULT 5000)
LANGUAGE plpgsql
AS $$
DECLARE
    v_deadline timestamptz;
    v_rr       bigint;
    v_skip     text[];
    v_slowest  interval;   -- NULL until a chunk ran
    v_done     boolean;
    v_stop     text;
BEGIN
    SELECT b.run_id, b.deadline, b.rr INTO run_id, v_deadline, v_rr
      FROM pgpulse._tick_begin(p_trigger, p_budget, p_lookahead, p_chunk) b;
    COMMIT;
    LOOP
        v_stop := pgpulse._tick_time_up(v_deadline, v_slowest);
        EXIT WHEN v_stop IS NOT NULL;
        BEGIN
            SELECT s.done, s.next_rr, s.skip, s.slowest INTO v_done, v_rr, v_skip, v_slowest
              FROM pgpulse._tick_step(run_id, v_deadline, p_lookahead, p_chunk, v_rr, v_skip,
                                      v_slowest) s;
        EXCEPTION WHEN lock_not_available THEN
            v_stop := 'lock_timeout';
        END;
        EXIT WHEN v_stop IS NOT NULL;
        COMMIT;
        IF v_done THEN
            v_stop := 'drained';
            EXIT;
        END IF;
    END LOOP;
    PERFORM pgpulse._tick_finish(run_id, v_deadline, p_lookahead, v_stop);
    COMMIT;
END
$$;
