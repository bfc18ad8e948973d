-- pgpulse schema, part 8 of 8: privileges (sql/roles.sql grants to pgpulse's roles).

-- ================================================================= privileges
-- Functions are executable by PUBLIC by default: the tick, its parts and the triggers'
-- functions are not (the roles in sql/roles.sql grant them). The slot functions stay
-- public.
REVOKE EXECUTE ON PROCEDURE pgpulse.tick(bigint, text, interval, interval, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    pgpulse._tick_begin(text, interval, interval, integer),
    pgpulse._tick_time_up(timestamptz, interval),
    pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval),
    pgpulse._tick_chunk(timestamptz, integer, bigint, boolean, timestamptz, text[], tid[]),
    pgpulse._tick_chunk_one_by_one(timestamptz, integer, bigint, text[]),
    pgpulse._tick_horizon(bigint, interval),
    pgpulse._tick_bound_lock_wait(timestamptz),
    pgpulse._tick_finish(bigint, timestamptz, interval, text),
    pgpulse._routing(),
    pgpulse._unrouted(timestamptz, jsonb, text[], integer),
    pgpulse._schedule_insert(anyarray, boolean),
    pgpulse._schedule_now(tid[]),
    pgpulse._follow_insert(),
    pgpulse._follow_update(),
    pgpulse._follow_delete(),
    pgpulse._follow_truncate(),
    pgpulse._follow_update_mark(),
    pgpulse._follow_change(pgpulse.follow_log),
    pgpulse._follow_entries(pgpulse.follow_log[]),
    pgpulse._outbox_requeue_current(),
    pgpulse._region_renamed(),
    pgpulse.check_now(text),
    pgpulse.follow_apply(integer),
    pgpulse.recheck_monitor_urls(),
    pgpulse.monitor_url_problems()
    FROM PUBLIC;

-- The product reads its monitors' schedule through pgpulse.monitor_schedule (its own
-- row-level security applies there); of pgpulse's table that view needs only these columns,
-- never the check.
GRANT USAGE ON SCHEMA pgpulse TO PUBLIC;
GRANT SELECT (monitor_id, next_check_at, last_scheduled_at, parked, is_active)
    ON pgpulse.schedule TO PUBLIC;
GRANT SELECT ON pgpulse.monitor_schedule TO PUBLIC;
