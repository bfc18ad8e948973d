-- pgpulse schema, part 9 (after the eight above): check results. Workers acknowledge jobs
-- with what the check found; the relay drains each region's results list into these tables
-- (docs/results.md). A result belongs to its slot: (monitor, region, scheduled_for), the
-- job's identity, whoever ran it; a slot that ran twice keeps the result that finished last.

-- The latest result per monitor and region, always kept: the relay's upsert takes a newer
-- slot, or the same slot finished later. region: where the slot was scheduled (the job's
-- region); checked_from: the region whose worker ran it (a fallback's, when rerouted).
CREATE TABLE pgpulse.results_latest (
    monitor_id    uuid NOT NULL,                  -- the product's id, of its type
    region        text NOT NULL,
    scheduled_for timestamptz NOT NULL,           -- the slot
    checked_from  text NOT NULL,
    job_id        uuid NOT NULL,
    slot_regions  text[],                         -- a multi-region slot's regions (NULL: one)
    ok            boolean NOT NULL,
    status        smallint,                       -- the final response's HTTP status
    latency_ms    real,                           -- the last attempt
    error         text,                           -- the error class (NULL: ok)
    detail        text,
    attempts      smallint,
    run           smallint,                       -- which run of the job (more after a lease ran out)
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    worker        text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT results_latest_one_per_region PRIMARY KEY (monitor_id, region)
) WITH (fillfactor = 70);  -- room on each page: a row's next result is a HOT update

-- Every result, when the database setting pgpulse.results_history is on: one partition per
-- UTC day of scheduled_for, made a few days ahead by pgpulse.results_maintain(), which
-- drops whole partitions past pgpulse.results_retention_days (default 14): never a DELETE.
CREATE TABLE pgpulse.results_history (
    monitor_id    uuid NOT NULL,
    region        text NOT NULL,
    scheduled_for timestamptz NOT NULL,
    checked_from  text NOT NULL,
    job_id        uuid NOT NULL,
    slot_regions  text[],
    ok            boolean NOT NULL,
    status        smallint,
    latency_ms    real,
    error         text,
    detail        text,
    attempts      smallint,
    run           smallint,
    started_at    timestamptz,
    finished_at   timestamptz NOT NULL,
    worker        text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT results_history_one_per_slot PRIMARY KEY (monitor_id, region, scheduled_for)
) PARTITION BY RANGE (scheduled_for);
COMMENT ON TABLE pgpulse.results_history IS
    'every check result while pgpulse.results_history is on; daily partitions';

-- The history's partitions: past retention dropped (whether history is on or not), and
-- while it is on, one per day from yesterday to three days ahead made where missing.
-- Returns whether history is on, the days it keeps, the span its partitions cover without
-- a gap around today (NULL when off: the relay keeps no history then), what it made and
-- dropped, and a problem with the settings (then their defaults are used). The relay runs
-- it every few minutes; it runs as the tables' owner (SECURITY DEFINER, sql/roles.sql).
CREATE FUNCTION pgpulse.results_maintain(
    OUT history boolean, OUT retention_days integer, OUT covered_from timestamptz,
    OUT covered_until timestamptz, OUT created integer, OUT dropped integer, OUT problem text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '5s'
AS $$
DECLARE
    v_switch text := lower(coalesce(current_setting('pgpulse.results_history', true), ''));
    v_days   text := coalesce(nullif(btrim(current_setting('pgpulse.results_retention_days', true)), ''), '14');
    v_today  date := (now() AT TIME ZONE 'UTC')::date;
    v_day    date;
    v_name   text;
BEGIN
    created := 0;
    dropped := 0;
    IF v_switch IN ('on', 'true', 'yes', '1') THEN
        history := true;
    ELSIF v_switch IN ('', 'off', 'false', 'no', '0') THEN
        history := false;
    ELSE
        history := false;
        problem := format('the setting pgpulse.results_history must be on or off, not "%s"',
                          v_switch);
    END IF;
    IF v_days ~ '^[0-9]{1,4}$' AND v_days::integer BETWEEN 1 AND 3650 THEN
        retention_days := v_days::integer;
    ELSE
        retention_days := 14;
        problem := concat_ws('; ', problem, format(
            'the setting pgpulse.results_retention_days must be 1 to 3650 (days), not "%s"',
            v_days));
    END IF;
    -- one maintainer at a time (two relays)
    PERFORM pg_advisory_xact_lock(hashtext('pgpulse.results_maintain'));
    FOR v_name, v_day IN
        SELECT c.relname, to_date(right(c.relname, 8), 'YYYYMMDD')
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'pgpulse.results_history'::regclass
           AND c.relname ~ '^results_history_[0-9]{8}$'
    LOOP
        IF v_day < v_today - retention_days THEN
            EXECUTE format('DROP TABLE pgpulse.%I', v_name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    IF NOT history THEN
        RETURN;
    END IF;
    FOR v_day IN SELECT d::date FROM generate_series(v_today - 1, v_today + 3, interval '1 day') d
    LOOP
        v_name := 'results_history_' || to_char(v_day, 'YYYYMMDD');
        IF to_regclass('pgpulse.' || v_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE pgpulse.%I PARTITION OF pgpulse.results_history FOR VALUES FROM (%L) TO (%L)',
                v_name, v_day::timestamp AT TIME ZONE 'UTC', (v_day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    covered_until := (v_today + 4)::timestamp AT TIME ZONE 'UTC';
    v_day := v_today - 1;
    WHILE v_day > v_today - retention_days
          AND to_regclass('pgpulse.results_history_' || to_char(v_day - 1, 'YYYYMMDD')) IS NOT NULL LOOP
        v_day := v_day - 1;
    END LOOP;
    covered_from := v_day::timestamp AT TIME ZONE 'UTC';
END
$$;

-- For the product (security_invoker, through its own table: its row-level security decides
-- which monitors a role sees here; grant SELECT on the results tables to the roles that
-- read them, docs/results.md). The latest result per monitor and region:
CREATE VIEW pgpulse.latest_results WITH (security_invoker = true) AS
SELECT r.monitor_id, r.region, r.scheduled_for, r.checked_from, r.ok, r.status, r.latency_ms,
       r.error, r.detail, r.attempts, r.run, r.started_at, r.finished_at, r.slot_regions
  FROM public.monitors m
  JOIN pgpulse.results_latest r ON r.monitor_id = m.id;
COMMENT ON VIEW pgpulse.latest_results IS 'the latest check result per monitor and region';

-- Each monitor's latest slot across its regions: how many of the regions the slot went to
-- have reported, how many found it up.
CREATE VIEW pgpulse.latest_slot_results WITH (security_invoker = true) AS
SELECT s.monitor_id, s.scheduled_for,
       greatest(coalesce(max(cardinality(s.slot_regions)), 1), count(*)) AS regions_expected,
       count(*) AS regions_reported,
       count(*) FILTER (WHERE s.ok) AS regions_ok,
       bool_and(s.ok) AS all_ok,
       array_agg(s.region ORDER BY s.region) AS regions,
       array_agg(s.region ORDER BY s.region) FILTER (WHERE NOT s.ok) AS regions_failing,
       max(s.finished_at) AS finished_at
  FROM (SELECT r.*, max(r.scheduled_for) OVER (PARTITION BY r.monitor_id) AS newest
          FROM pgpulse.latest_results r) s
 WHERE s.scheduled_for = s.newest
 GROUP BY s.monitor_id, s.scheduled_for;
COMMENT ON VIEW pgpulse.latest_slot_results IS
    'each monitor''s latest slot across the regions it went to';

-- Every slot in the history across its regions (empty while history is off).
CREATE VIEW pgpulse.slot_results WITH (security_invoker = true) AS
SELECT h.monitor_id, h.scheduled_for,
       greatest(coalesce(max(cardinality(h.slot_regions)), 1), count(*)) AS regions_expected,
       count(*) AS regions_reported,
       count(*) FILTER (WHERE h.ok) AS regions_ok,
       bool_and(h.ok) AS all_ok,
       array_agg(h.region ORDER BY h.region) AS regions,
       array_agg(h.region ORDER BY h.region) FILTER (WHERE NOT h.ok) AS regions_failing,
       max(h.finished_at) AS finished_at
  FROM public.monitors m
  JOIN pgpulse.results_history h ON h.monitor_id = m.id
 GROUP BY h.monitor_id, h.scheduled_for;
COMMENT ON VIEW pgpulse.slot_results IS 'every slot in the results history across its regions';

REVOKE EXECUTE ON FUNCTION pgpulse.results_maintain() FROM PUBLIC;
