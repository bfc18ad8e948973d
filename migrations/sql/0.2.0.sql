-- Release 0.2.0 (unreleased): every schema change since 0016, in the order the branches
-- landed. Each change here is also made in the canonical files in sql/, and its inverse is
-- prepended to 0.2.0_down.sql. 0.2.0_roles.sql and 0.2.0_cron.sql are this release's
-- copies of sql/roles.sql and sql/cron.sql, applied after this file.

-- The tick's steps run as the NOLOGIN owner pgpulse_owner (0.2.0_roles.sql hands them over):
-- pg_cron's pgpulse_ticker may run the tick and nothing else.
ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) SECURITY DEFINER;
ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
    SECURITY DEFINER;
ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) SECURITY DEFINER;
