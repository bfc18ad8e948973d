-- Revision 0016, down: the tick's default lookahead back to 60 s.

-- One scheduler tick: claims due monitors chunk by chunk (a commit after each chunk) until
-- none are left, the time budget is nearly spent, or a lock held elsewhere would keep it
-- past its deadline; records the run and why it stopped in pgpulse.tick_runs.
-- Must be CALLed outside a transaction block (autocommit), as pg_cron does.
CREATE OR REPLACE PROCEDURE pgpulse.tick(
    INOUT run_id bigint DEFAULT NULL,
    p_trigger text DEFAULT 'manual',
    p_budget interval DEFAULT '45 seconds',
    p_lookahead interval DEFAULT '60 seconds',
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
