-- pgpulse schema, part 8 of 8: privileges (sql/roles.sql grants to pgpulse's roles).

-- ================================================================= privileges
-- Functions are executable by PUBLIC by default: the tick and its parts are not (the
-- roles in sql/roles.sql grant them). The slot functions stay public: the product's own
-- role inserts and edits monitors, whose triggers call them.
REVOKE EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    pgpulse._tick_begin(text, interval, interval, integer),
    pgpulse._tick_time_up(timestamptz, interval),
    pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval),
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]),
    pgpulse._tick_bound_lock_wait(timestamptz),
    pgpulse._tick_finish(bigint, timestamptz, interval, text),
    pgpulse._routing(),
    pgpulse._unrouted(timestamptz, jsonb, integer),
    pgpulse._monitor_rephase(),
    pgpulse._monitor_drop_jobs(),
    pgpulse._monitor_update_jobs(),
    pgpulse._outbox_requeue_current(),
    pgpulse._monitor_url_checked(),
    pgpulse.recheck_monitor_urls(),
    pgpulse.monitor_url_problems()
    FROM PUBLIC;
