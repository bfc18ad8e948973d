-- Revision 0007: bounded growth without pg_cron. A drained tick prunes run records older
-- than 30 days and dead letters older than pgpulse.dead_letter_retention (default 14 days);
-- pg_cron's own run history is pruned daily, runs that never ended included (sql/cron.sql).

CREATE INDEX dead_letters_failed ON pgpulse.dead_letters (failed_at);

-- Closes a tick's run record: why it stopped and, while its budget lasts, how many due
-- monitors no region could take. A drained tick also prunes, a bounded batch at a time (so
-- growth stays bounded without pg_cron too): run records older than 30 days, and dead
-- letters older than the database setting pgpulse.dead_letter_retention (14 days unless
-- set, e.g. ALTER DATABASE app SET pgpulse.dead_letter_retention = '30 days').
CREATE OR REPLACE FUNCTION pgpulse._tick_finish(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_stop text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_route     jsonb;
    v_unrouted  integer := 0;
    v_retention interval := coalesce(
        nullif(current_setting('pgpulse.dead_letter_retention', true), '')::interval,
        interval '14 days');
BEGIN
    -- the record itself may wait a little past the deadline, never long
    PERFORM pgpulse._tick_bound_lock_wait(greatest(p_deadline, clock_timestamp() + interval '1 second'));
    IF p_stop = 'drained' THEN
        SELECT r.route INTO v_route FROM pgpulse._routing() r;
        v_unrouted := pgpulse._unrouted(clock_timestamp() + p_lookahead, v_route, 1000000);
        DELETE FROM pgpulse.tick_runs
         WHERE id IN (SELECT id FROM pgpulse.tick_runs
                       WHERE started_at < now() - interval '30 days' LIMIT 1000);
        DELETE FROM pgpulse.dead_letters
         WHERE job_id IN (SELECT job_id FROM pgpulse.dead_letters
                           WHERE failed_at < now() - v_retention LIMIT 1000);
    END IF;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;

