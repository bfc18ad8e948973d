-- A legacy install becomes 0.2.0, part 2 of 3 (after 0.2.0.sql, before the triggers of
-- 0.2.0_follow.sql): what the legacy install held comes across, and what it put on the
-- product's table goes.

-- The schedule, from what the legacy install kept in the product's rows, through the
-- release's own follow (pgpulse._schedule_insert: its checks, phase and parking). This reads
-- the product's table without a lock that stops its writers; the catch-up under the lock
-- below copies only the rows written since (an xmin younger than this snapshot's). A
-- legacy "never" (9999-12-31, infinity) is no slot: the row takes its next one on its grid,
-- unless today's rules park it.
SELECT set_config('pgpulse.backfill_xmin',
                  (txid_snapshot_xmin(txid_current_snapshot()) % 4294967296)::text, true);
CREATE TEMPORARY TABLE pgpulse_backfilled ON COMMIT DROP AS
SELECT pgpulse._schedule_insert(ARRAY(
           SELECT CASE WHEN m.next_check_at >= '9999-01-01'
                       THEN jsonb_populate_record(m, '{"next_check_at": null}') ELSE m END
             FROM public.monitors m)) AS written;
UPDATE pgpulse.schedule s SET last_scheduled_at = m.last_scheduled_at
  FROM public.monitors m WHERE m.id = s.monitor_id AND m.last_scheduled_at IS NOT NULL;

-- Writers of the product's table wait from here to the commit (readers do not), then the
-- legacy tables' writers (relays, the legacy tick): their rows are copied as they stand.
LOCK TABLE public.monitors IN SHARE ROW EXCLUSIVE MODE;
DO $lock$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN SELECT c.relname FROM pg_class c
                    WHERE c.relnamespace = 'pgpulse_legacy'::regnamespace AND c.relkind = 'r'
                    ORDER BY c.relname LOOP
        EXECUTE format('LOCK TABLE pgpulse_legacy.%I IN EXCLUSIVE MODE', v_table);
    END LOOP;
END
$lock$;
DELETE FROM pgpulse.schedule s
 WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
SELECT pgpulse._schedule_insert(ARRAY(
           SELECT CASE WHEN m.next_check_at >= '9999-01-01'
                       THEN jsonb_populate_record(m, '{"next_check_at": null}') ELSE m END
             FROM public.monitors m
            WHERE age(m.xmin) <= age(current_setting('pgpulse.backfill_xmin')::xid)));
UPDATE pgpulse.schedule s SET last_scheduled_at = m.last_scheduled_at
  FROM public.monitors m
 WHERE m.id = s.monitor_id AND age(m.xmin) <= age(current_setting('pgpulse.backfill_xmin')::xid)
   AND s.last_scheduled_at IS DISTINCT FROM m.last_scheduled_at;

-- The legacy tables' rows, column by column where the release has the column (a legacy
-- install older than a column gets its default). Their triggers stay off while the rows
-- come across as they were (the legacy install applied them already).
DO $copy$
DECLARE
    v_table   text;
    v_source  text;
    v_columns text;
    v_values  text;
    v_identity text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['regions', 'maintenance_windows', 'outbox', 'dead_letters',
                                   'push_intents', 'region_observations', 'tick_runs'] LOOP
        -- before 0002, a regions table pgpulse made lived in public
        v_source := CASE WHEN v_table = 'regions' AND to_regclass('pgpulse_legacy.regions') IS NULL
                         THEN 'public.regions' ELSE 'pgpulse_legacy.' || v_table END;
        CONTINUE WHEN to_regclass(v_source) IS NULL;
        SELECT string_agg(quote_ident(n.attname), ', ' ORDER BY n.attnum),
               string_agg(format('s.%I::%s', n.attname, format_type(n.atttypid, n.atttypmod)),
                          ', ' ORDER BY n.attnum)
          INTO v_columns, v_values
          FROM pg_attribute n
          JOIN pg_attribute o ON o.attrelid = v_source::regclass AND o.attname = n.attname
                             AND o.attnum > 0 AND NOT o.attisdropped
         WHERE n.attrelid = ('pgpulse.' || v_table)::regclass AND n.attnum > 0
           AND NOT n.attisdropped AND n.attgenerated = '';
        EXECUTE format('ALTER TABLE pgpulse.%I DISABLE TRIGGER USER', v_table);
        IF v_table = 'push_intents' AND v_columns NOT LIKE '%job_ids%' THEN
            -- before 0013, one intent per job: one per request (region, the job's region)
            INSERT INTO pgpulse.push_intents (region, from_region, job_ids, expires_at)
            SELECT i.region, coalesce(o.region, i.region), array_agg(i.job_id), max(i.expires_at)
              FROM pgpulse_legacy.push_intents i
              LEFT JOIN pgpulse_legacy.outbox o ON o.job_id = i.job_id
             GROUP BY 1, 2;
        ELSE
            EXECUTE format('INSERT INTO pgpulse.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s s',
                           v_table, v_columns, v_values, v_source);
        END IF;
        EXECUTE format('ALTER TABLE pgpulse.%I ENABLE TRIGGER USER', v_table);
        FOR v_identity IN SELECT attname FROM pg_attribute
                           WHERE attrelid = ('pgpulse.' || v_table)::regclass
                             AND attidentity <> '' LOOP
            EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), max(%I)) FROM pgpulse.%I'
                           ' HAVING max(%I) IS NOT NULL',
                           'pgpulse.' || v_table, v_identity, v_identity, v_table, v_identity);
        END LOOP;
    END LOOP;
END
$copy$;

-- Jobs of monitors today's rules park (a URL the stricter checks refuse) go; the monitors are
-- kept, never due, until fixed.
DELETE FROM pgpulse.outbox o USING pgpulse.schedule s
 WHERE s.monitor_id = o.monitor_id AND s.parked IS NOT NULL;
DO $parked$
DECLARE
    v_parked bigint := (SELECT count(*) FROM pgpulse.schedule WHERE parked IS NOT NULL);
    v_first  record;
BEGIN
    IF v_parked > 0 THEN
        SELECT monitor_id, parked INTO v_first FROM pgpulse.schedule
         WHERE parked IS NOT NULL ORDER BY monitor_id::text LIMIT 1;
        RAISE WARNING 'pgpulse: % monitor(s) are parked (not checked) until fixed; e.g. monitor %: %',
            v_parked, v_first.monitor_id, v_first.parked
            USING HINT = 'list them: SELECT * FROM pgpulse.monitor_schedule WHERE parked IS NOT NULL';
    END IF;
END
$parked$;

-- What the legacy install put on the product's table goes: its constraints, the NOT NULLs it
-- set on columns pgpulse filled, its triggers, index and derived check_spec; the foreign key
-- to its regions goes with its schema below. The columns it added stay, with their
-- values (the product may read them); an adopted table's record still lists them.
DO $release$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT t.tgname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
              WHERE t.tgrelid = 'public.monitors'::regclass AND NOT t.tgisinternal
                AND p.pronamespace = 'pgpulse_legacy'::regnamespace LOOP
        EXECUTE format('DROP TRIGGER %I ON public.monitors', v.tgname);
    END LOOP;
    FOR v IN SELECT c.conname FROM pg_constraint c
              WHERE c.conrelid = 'public.monitors'::regclass
                AND c.conname = ANY (ARRAY['monitor_method_known', 'monitor_timeout_100ms_to_120s',
                        'monitor_expected_status_http', 'monitor_check_retries_0_to_5',
                        'monitor_check_retry_delay', 'monitor_interval_1_to_1440_minutes',
                        'monitor_criticality_known', 'monitor_interval_seconds_10_to_86400',
                        'monitor_check_regions_list', 'monitor_next_check_at_finite',
                        'monitor_url_http', 'monitors_preferred_region_fkey']) LOOP
        EXECUTE format('ALTER TABLE public.monitors DROP CONSTRAINT %I', v.conname);
    END LOOP;
    FOR v IN SELECT a.attname FROM pg_attribute a
              WHERE a.attrelid = 'public.monitors'::regclass AND a.attnotnull
                AND a.attname = ANY (ARRAY['next_check_at', 'check_interval_seconds']) LOOP
        EXECUTE format('ALTER TABLE public.monitors ALTER COLUMN %I DROP NOT NULL', v.attname);
    END LOOP;
    IF to_regclass('pgpulse_legacy.adoption') IS NOT NULL THEN
        INSERT INTO pgpulse.adoption (kind, name)
        SELECT 'column', l.name FROM pgpulse_legacy.adoption l
         WHERE l.kind = 'column' AND l.name <> 'check_spec'
         ORDER BY l.step
        ON CONFLICT DO NOTHING;
        -- revision 0003 added these to an adopted table without listing them
        INSERT INTO pgpulse.adoption (kind, name)
        SELECT 'column', a.attname FROM pg_attribute a
         WHERE a.attrelid = 'public.monitors'::regclass AND NOT a.attisdropped
           AND a.attname IN ('check_interval_seconds', 'check_regions')
         ORDER BY a.attnum
        ON CONFLICT DO NOTHING;
    END IF;
END
$release$;
DROP INDEX IF EXISTS public.monitors_due;
ALTER TABLE public.monitors DROP COLUMN IF EXISTS check_spec;
DO $regions$
BEGIN
    IF to_regclass('pgpulse_legacy.regions') IS NULL THEN
        DROP TABLE public.regions CASCADE;  -- pgpulse's before 0002
    END IF;
END
$regions$;
DROP SCHEMA pgpulse_legacy CASCADE;
