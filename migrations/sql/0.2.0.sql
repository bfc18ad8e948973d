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

-- URL checks (issue 26): a host is ASCII (a URL parser maps or drops characters of a
-- Unicode name: loc<U+00AD>alhost reaches localhost); the IPv4 address inside a NAT64, 6to4
-- or SIIT IPv6 address is checked as that address; single-label names and *.home,
-- *.private, *.svc are private network names. (sql/40_url_checks.sql)
CREATE OR REPLACE FUNCTION pgpulse.url_problem(p_url text)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_switch   text := lower(coalesce(current_setting('pgpulse.allow_private_targets', true), ''));
    v_private  boolean;
    v_parts    text[];
    v_bracketed boolean;
    v_host     text;
    v_shown    text;   -- the host as the URL writes it
    v_name     text;
    v_port     text;
    v_ip       inet;
    v_v4       inet;
    v_hex      text;
    v_reaches  inet[];  -- the address and the IPv4 one it embeds: what a connection reaches
    v_placings inet[];  -- where local-use NAT64 may also have put an IPv4 address
    v_label    text;
    v_value    numeric;
    v_address  numeric := 0;
    v_kind     text;
    m          text[];
BEGIN
    IF v_switch IN ('on', 'true', 'yes', '1') THEN
        v_private := true;
    ELSIF v_switch IN ('', 'off', 'false', 'no', '0') THEN
        v_private := false;
    ELSE
        -- a problem, not an error: a product's write never fails because of this setting
        RETURN format('the setting pgpulse.allow_private_targets must be on or off, not "%s"',
                      v_switch);
    END IF;
    IF p_url IS NULL THEN
        RETURN NULL;
    ELSIF length(p_url) <= 2048
          -- the usual URL, a public-looking DNS name in lower case (up to 63 characters
          -- with the port, no A-label), port 1-9999 or none, printable ASCII without a
          -- backslash after it, is fine: no need to take it apart (a tenth of the time)
          AND length(split_part(p_url, '/', 3)) <= 63
          AND p_url ~ '^https?://([a-z0-9-]+\.)+[a-z][a-z0-9-]*(:[1-9][0-9]?[0-9]?[0-9]?)?([/?#][!-\[\]-~]*)?$'
          AND p_url !~ '^https?://[^/?#]*\.(localhost|internal|local|localdomain|lan|intranet|corp|home|private|svc|arpa|goog)(:|/|\?|#|$)'
          AND strpos(split_part(p_url, '/', 3), 'xn--') = 0 THEN
        RETURN NULL;
    ELSIF length(p_url) > 2048 THEN
        RETURN format('%s characters long, over the limit of 2048', length(p_url));
    ELSIF p_url ~ '[[:space:][:cntrl:]\u0080-\u009f\u00a0\u1680\u2000-\u200f\u2028\u2029\u202f\u205f\u3000\ufeff]' THEN
        RETURN 'has whitespace or control characters';
    ELSIF strpos(p_url, '\') > 0 THEN
        -- URL parsers disagree on it (a WHATWG parser reads it as "/"): percent-encode it
        RETURN 'has a backslash (write it as %5C)';
    END IF;

    m := regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*):(//)?([^/?#]*)');
    IF m IS NULL OR (lower(m[1]) IN ('http', 'https') AND m[2] IS NULL) THEN
        RETURN 'must start with http:// or https://';
    ELSIF lower(m[1]) NOT IN ('http', 'https') THEN
        RETURN format('scheme %s, not http or https', m[1]);
    ELSIF m[1] NOT IN ('http', 'https') THEN
        RETURN format('scheme %s in lower case, please (http or https)', m[1]);
    ELSIF strpos(m[3], '@') > 0 THEN
        RETURN 'has a user name or password before the host (userinfo is refused)';
    END IF;

    -- host and port
    v_bracketed := left(m[3], 1) = '[';
    IF v_bracketed THEN
        m := regexp_match(m[3], '^\[([^\]]*)\](:(.*))?$');
        IF m IS NULL THEN
            RETURN 'an IPv6 address without its closing bracket';
        END IF;
    ELSE
        m := regexp_match(m[3], '^([^:]*)(:(.*))?$');
    END IF;
    v_host := m[1];
    v_port := m[3];
    v_shown := CASE WHEN v_bracketed THEN '[' || v_host || ']' ELSE v_host END;
    IF m[2] IS NOT NULL THEN
        IF v_port = '' THEN
            RETURN 'empty port after ":" (give 1-65535 or none)';
        ELSIF v_port !~ '^[0-9]+$' THEN
            RETURN format('port "%s" is not a number 1-65535', v_port);
        ELSIF length(ltrim(v_port, '0')) > 5 OR v_port::integer NOT BETWEEN 1 AND 65535 THEN
            RETURN format('port %s out of range 1-65535', v_port);
        END IF;
    END IF;
    IF v_host = '' THEN
        RETURN 'no host';
    END IF;
    -- A worker's URL parser (IDNA, UTS #46) maps a Unicode name and drops its ignorable
    -- characters before it resolves it: １２７。０。０。１, loc<U+00AD>alhost and
    -- 169.254.169.254<U+2060> are 127.0.0.1, localhost and the metadata endpoint. Rather
    -- than follow every parser's tables, a host is ASCII.
    IF v_host ~ '[^\x01-\x7f]' THEN
        IF current_setting('server_encoding') = 'UTF8' THEN
            -- shown by their code points: they may be invisible, or turn the line around
            SELECT string_agg(CASE WHEN c ~ '[\x01-\x7f]' THEN c
                                   ELSE format('<U+%s>', upper(lpad(to_hex(ascii(c)), 4, '0')))
                              END, '' ORDER BY n)
              INTO v_shown
              FROM regexp_split_to_table(v_shown, '') WITH ORDINALITY AS t(c, n);
        END IF;
        RETURN format('host %s is not ASCII (store an internationalised name in its A-label '
                      'form, xn--...)', v_shown);
    END IF;

    IF v_bracketed THEN
        -- a bracketed IPv6 address (a zone id, %25..., is refused with the rest)
        IF v_host !~ '^[0-9A-Fa-f:.]+$' THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END IF;
        BEGIN
            v_ip := v_host::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END;
        IF family(v_ip) <> 6 THEN
            RETURN format('host [%s] is not an IPv6 address', v_host);
        END IF;
    ELSE
        -- a name (a final dot names the same host)
        v_name := lower(v_host);
        IF right(v_name, 1) = '.' THEN
            v_name := left(v_name, -1);
        END IF;
        IF v_name = '' OR v_name ~ '(^|\.)(\.|$)' THEN
            RETURN format('host %s has an empty label', v_host);
        ELSIF v_name !~ '^[a-z0-9._-]*$' THEN
            RETURN format('host %s has characters a host name cannot have', v_host);
        ELSIF length(v_name) > 253 OR v_name ~ '[^.]{64}' THEN
            RETURN format('host %s is longer than DNS allows', left(v_host, 80));
        ELSIF v_name ~ '(^|\.)xn--([^.]*-)?(\.|$)' THEN
            -- Punycode with nothing after its last "-" decodes to plain ASCII (xn--localhost-
            -- is localhost to a lax decoder): no registry issues such a label
            RETURN format('host %s has an xn-- label that encodes no Unicode (not an A-label)',
                          v_host);
        END IF;
        v_parts := string_to_array(v_name, '.');
        IF v_parts[cardinality(v_parts)] ~ '^(0x[0-9a-f]*|[0-9]+)$' THEN
            -- ends in a number: an IPv4 address, 1 to 4 parts, each decimal, octal (0...)
            -- or hex (0x...), the last filling the bytes left
            IF cardinality(v_parts) > 4 THEN
                RETURN format('host %s is not an IPv4 address', v_host);
            END IF;
            FOR i IN 1 .. cardinality(v_parts) LOOP
                v_label := v_parts[i];
                IF v_label ~ '^0x[0-9a-f]*$' THEN
                    v_label := ltrim(substr(v_label, 3), '0');
                    IF length(v_label) > 8 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_value := ('x' || lpad(v_label, 16, '0'))::bit(64)::bigint;
                ELSIF v_label ~ '^0[0-7]+$' THEN
                    v_label := ltrim(v_label, '0');
                    IF length(v_label) > 11 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_value := 0;
                    FOR j IN 1 .. length(v_label) LOOP
                        v_value := v_value * 8 + substr(v_label, j, 1)::integer;
                    END LOOP;
                ELSIF v_label ~ '^(0|[1-9][0-9]{0,9})$' THEN
                    v_value := v_label::numeric;
                ELSE
                    RETURN format('host %s is not an IPv4 address', v_host);
                END IF;
                IF i < cardinality(v_parts) THEN
                    IF v_value > 255 THEN
                        RETURN format('host %s is not an IPv4 address', v_host);
                    END IF;
                    v_address := v_address + v_value * 256 ^ (4 - i);
                ELSIF v_value >= 256 ^ (5 - i) THEN
                    RETURN format('host %s is not an IPv4 address', v_host);
                ELSE
                    v_address := v_address + v_value;
                END IF;
            END LOOP;
            v_ip := '0.0.0.0'::inet + v_address::bigint;
        ELSIF v_name IN ('metadata', 'metadata.google.internal', 'metadata.goog',
                         'instance-data', 'instance-data.ec2.internal') THEN
            RETURN format('host %s is a cloud metadata endpoint (always refused)', v_host);
        ELSIF v_private THEN
            RETURN NULL;
        ELSIF v_name IN ('localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback',
                         'localhost6', 'localhost6.localdomain6')
              OR v_name LIKE '%.localhost' THEN
            RETURN format('host %s is loopback (allowed only with pgpulse.allow_private_targets = on)',
                          v_host);
        ELSIF v_name ~ '(^|\.)(internal|local|localdomain|lan|intranet|corp|home|private|svc|home\.arpa)$' THEN
            -- RFC 6762's local and private-use names, home.arpa, Kubernetes' *.svc and
            -- *.cluster.local, the cloud providers' *.internal
            RETURN format('host %s is a private network name (allowed only with '
                          'pgpulse.allow_private_targets = on)', v_host);
        ELSIF cardinality(v_parts) = 1 THEN
            -- resolved through the worker's search domains: redis, kubernetes, ...
            RETURN format('host %s is a single-label name, resolved inside the local network '
                          '(allowed only with pgpulse.allow_private_targets = on)', v_host);
        ELSE
            RETURN NULL;
        END IF;
    END IF;

    -- An IPv6 address that embeds an IPv4 one reaches that one: in its last 32 bits (mapped
    -- ::ffff:a.b.c.d, compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64 64:ff9b::a.b.c.d
    -- and the local-use 64:ff9b:1::/48), or in bits 16-47 (6to4, 2002:aabb:ccdd::/48).
    -- Local-use NAT64 may use RFC 6052's /48, /56 or /64 placing too: a metadata address
    -- there counts as well.
    v_reaches := ARRAY[v_ip];
    v_placings := '{}';
    IF family(v_ip) = 6 THEN
        v_hex := substr(encode(inet_send(v_ip), 'hex'), 9);  -- the 16 bytes, in hex
        IF v_ip << '::ffff:0:0/96' OR v_ip << '::ffff:0:0:0/96' OR v_ip << '64:ff9b::/96'
           OR v_ip << '64:ff9b:1::/48' OR (v_ip << '::/96' AND v_ip > '::1') THEN
            v_reaches := ('0.0.0.0'::inet + ('x' || right(v_hex, 8))::bit(32)::bigint) || v_reaches;
        ELSIF v_ip << '2002::/16' THEN
            v_reaches := ('0.0.0.0'::inet + ('x' || substr(v_hex, 5, 8))::bit(32)::bigint) || v_reaches;
        END IF;
        IF v_ip << '64:ff9b:1::/48' THEN
            v_placings := ARRAY(SELECT '0.0.0.0'::inet + ('x' || h)::bit(32)::bigint
                                  FROM unnest(ARRAY[substr(v_hex, 13, 4) || substr(v_hex, 19, 4),
                                                    substr(v_hex, 15, 2) || substr(v_hex, 19, 6),
                                                    substr(v_hex, 19, 8)]) h);
        END IF;
    END IF;
    FOREACH v_v4 IN ARRAY v_reaches || v_placings LOOP
        IF v_v4 IN ('169.254.169.254', '169.254.170.2', '100.100.100.200', 'fd00:ec2::254') THEN
            RETURN format('host %s is %sa cloud metadata endpoint (always refused)', v_shown,
                          CASE WHEN host(v_v4) <> v_host THEN host(v_v4) || ', ' END);
        END IF;
    END LOOP;
    IF v_private THEN
        RETURN NULL;
    END IF;
    FOREACH v_v4 IN ARRAY v_reaches LOOP
        v_kind := CASE
            WHEN v_v4 << '127.0.0.0/8' OR v_v4 = '::1' THEN 'loopback'
            WHEN v_v4 << '169.254.0.0/16' OR v_v4 << 'fe80::/10' THEN 'link-local'
            WHEN v_v4 << '0.0.0.0/8' OR v_v4 = '0.0.0.0' OR v_v4 = '::' THEN 'the unspecified address'
            WHEN v_v4 << '10.0.0.0/8' OR v_v4 << '172.16.0.0/12' OR v_v4 << '192.168.0.0/16'
                 OR v_v4 << '100.64.0.0/10' OR v_v4 << 'fc00::/7' OR v_v4 << 'fec0::/10'
                 OR v_v4 << '64:ff9b:1::/48' THEN 'private'
            WHEN v_v4 << '224.0.0.0/4' OR v_v4 << 'ff00::/8' THEN 'multicast'
            WHEN v_v4 << '240.0.0.0/4' OR v_v4 << '192.0.0.0/24' OR v_v4 << '198.18.0.0/15'
                THEN 'reserved'
        END;
        IF v_kind IS NOT NULL THEN
            RETURN format('host %s is %s%s (allowed only with pgpulse.allow_private_targets = on)',
                          v_shown, CASE WHEN host(v_v4) <> v_host THEN host(v_v4) || ', ' END,
                          v_kind);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- ========================================================================================
-- The schedule in pgpulse's own table (issue 22). pgpulse stops writing, constraining and
-- indexing the product's monitors: its scheduling state moves to pgpulse.schedule, kept in
-- step by triggers that read the product's rows and write only pgpulse's tables. The
-- backfill reads the product's table without a lock that stops its writers; a short one
-- (writers wait, readers do not) then copies what changed meanwhile and swaps the triggers.
-- What pgpulse put on the product's table goes, as the columns it filled: NOT NULL, CHECK
-- constraints, the foreign key on preferred_region, the index, the derived check_spec. Its
-- values stay (next_check_at, last_scheduled_at, check_interval_seconds, check_regions).

-- What pgpulse schedules, one narrow row per monitor of the product's table, kept in step by
-- the triggers of sql/30_monitor_triggers.sql when the product's transaction commits. The
-- tick reads and locks only these rows. A row pgpulse cannot schedule (its interval, URL or
-- check out of range) is parked: kept, with the reason, never due.
CREATE TABLE pgpulse.schedule (
    monitor_id             uuid PRIMARY KEY,       -- the product's id, of its type
    is_active              boolean NOT NULL,
    parked                 text,                   -- why it is not scheduled (NULL: it is)
    next_check_at          timestamptz NOT NULL
                           CONSTRAINT schedule_next_check_at_finite CHECK (isfinite(next_check_at)),
    last_scheduled_at      timestamptz,
    check_interval_seconds integer NOT NULL,
    preferred_region       text,
    allow_fallback         boolean NOT NULL,
    criticality            text NOT NULL,
    check_regions          text[],
    check_spec             jsonb NOT NULL          -- the check as workers receive it
);
-- The tick's lookup: only what it may schedule, in due order.
CREATE INDEX schedule_due ON pgpulse.schedule (next_check_at) WHERE is_active AND parked IS NULL;
-- Parked rows are few: counted and listed for every health read.
CREATE INDEX schedule_parked ON pgpulse.schedule (parked) WHERE parked IS NOT NULL;
COMMENT ON TABLE pgpulse.schedule IS
    'pgpulse''s schedule, one row per product monitor; written only by pgpulse';

-- Product writes handed over to be followed a moment later, in the order they were made
-- (seq: one per statement): a bulk INSERT's rows (old_id NULL), and every UPDATE that
-- changed a followed column (its new values, and the old ones the follow compares with).
-- The product's statement pays one plain append per row here instead of pgpulse's checks,
-- phase and schedule row; an UPDATE of up to 500 rows is followed at once, in its statement,
-- from these rows; the rest pgpulse.follow_apply() (the relay, woken by NOTIFY
-- pgpulse_follow, and every tick) follows. The columns are the product's followed ones, of
-- its own types (made from its table), so an append never fails where the product's row did
-- not. No key and no index: an append is all a bulk write pays (REPLICA IDENTITY FULL, for
-- publications).
CREATE SEQUENCE pgpulse.follow_log_seq;
CREATE TABLE pgpulse.follow_log AS
SELECT id, url, method, timeout_ms, expected_status, check_retries, check_retry_delay_ms,
       check_interval_minutes, check_interval_seconds, is_active, preferred_region,
       allow_fallback, criticality, next_check_at, check_regions,
       id AS old_id, check_interval_minutes AS old_check_interval_minutes,
       check_interval_seconds AS old_check_interval_seconds,
       preferred_region AS old_preferred_region, check_regions AS old_check_regions,
       next_check_at AS old_next_check_at
  FROM public.monitors WITH NO DATA;
ALTER TABLE pgpulse.follow_log
    ADD COLUMN logged_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN seq bigint NOT NULL DEFAULT nextval('pgpulse.follow_log_seq'),
    REPLICA IDENTITY FULL;
ALTER SEQUENCE pgpulse.follow_log_seq OWNED BY pgpulse.follow_log.seq;
COMMENT ON TABLE pgpulse.follow_log IS
    'product writes waiting for pgpulse.follow_apply() to follow them into the schedule';

-- the product's own id type (an adopted table's bigint or text), as the outbox has it
DO $id_type$
DECLARE
    v_type text := (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                     WHERE attrelid = 'pgpulse.outbox'::regclass AND attname = 'monitor_id');
BEGIN
    IF v_type <> 'uuid' THEN
        EXECUTE format('ALTER TABLE pgpulse.schedule ALTER COLUMN monitor_id TYPE %s USING NULL', v_type);
    END IF;
END
$id_type$;


-- The check as workers receive it (docs/queue-contract.md), from the check's columns.
CREATE FUNCTION pgpulse._check_spec(
    p_url text, p_method text, p_timeout_ms integer, p_expected integer[], p_retries integer,
    p_delay_ms integer)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN jsonb_build_object(
    'url', p_url, 'method', p_method, 'timeout_ms', p_timeout_ms,
    'expected_status', to_jsonb(p_expected),
    'retry', jsonb_build_object('max_attempts', p_retries + 1, 'delay_ms', p_delay_ms));

-- An interval in seconds as the product states it: seconds when set, else minutes (bigint:
-- a product's 2^31 minutes is out of range, not an overflow that fails its write).
CREATE FUNCTION pgpulse._interval_s(p_minutes integer, p_seconds integer)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN coalesce(p_seconds::bigint, p_minutes::bigint * 60);

-- Why pgpulse cannot schedule a monitor with these values (one line), or NULL: what
-- parks it (sql/30_monitor_triggers.sql).
CREATE FUNCTION pgpulse._schedule_problem(
    p_interval_s bigint, p_url text, p_method text, p_timeout_ms integer,
    p_expected integer[], p_retries integer, p_delay_ms integer, p_criticality text,
    p_regions text[])
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT CASE
        WHEN p_interval_s IS NULL OR p_interval_s NOT BETWEEN 10 AND 86400
            THEN 'interval: ' || coalesce(p_interval_s::text || ' s', 'none')
                 || ' is not 10 s to 1 day'
        WHEN p_criticality IS NULL OR p_criticality NOT IN ('critical', 'high', 'normal', 'low')
            THEN 'criticality: ' || coalesce(quote_literal(p_criticality), 'none')
                 || ' is not critical, high, normal or low'
        WHEN p_method IS NULL
             OR p_method NOT IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')
            THEN 'method: ' || coalesce(quote_literal(p_method), 'none') || ' is not an HTTP method'
        WHEN p_timeout_ms IS NULL OR p_timeout_ms NOT BETWEEN 100 AND 120000
            THEN 'timeout_ms: ' || coalesce(p_timeout_ms::text, 'none') || ' is not 100 to 120000'
        WHEN p_expected IS NULL OR cardinality(p_expected) NOT BETWEEN 1 AND 32
             OR array_position(p_expected, NULL) IS NOT NULL
             OR 100 > ANY (p_expected) OR 599 < ANY (p_expected)
            THEN 'expected_status: not 1 to 32 HTTP statuses'
        WHEN p_retries IS NULL OR p_retries NOT BETWEEN 0 AND 5
            THEN 'check_retries: ' || coalesce(p_retries::text, 'none') || ' is not 0 to 5'
        WHEN p_delay_ms IS NULL OR p_delay_ms NOT BETWEEN 0 AND 60000
            THEN 'check_retry_delay_ms: ' || coalesce(p_delay_ms::text, 'none')
                 || ' is not 0 to 60000'
        WHEN p_regions IS NOT NULL AND (cardinality(p_regions) NOT BETWEEN 1 AND 16
                                        OR array_position(p_regions, NULL) IS NOT NULL)
            THEN 'check_regions: not 1 to 16 region codes'
        ELSE 'url: ' || pgpulse.url_problem(p_url)
    END;
END;

-- Why a schedule row cannot be scheduled, from what it holds (its check as workers get it):
-- the rules as they are now (after a change of pgpulse.allow_private_targets, say).
CREATE FUNCTION pgpulse._schedule_problem_now(s pgpulse.schedule)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pgpulse._schedule_problem(
        s.check_interval_seconds, s.check_spec ->> 'url', s.check_spec ->> 'method',
        (s.check_spec ->> 'timeout_ms')::integer,
        ARRAY(SELECT e::integer FROM jsonb_array_elements_text(s.check_spec -> 'expected_status') e),
        (s.check_spec #>> '{retry,max_attempts}')::integer - 1,
        (s.check_spec #>> '{retry,delay_ms}')::integer,
        s.criticality, s.check_regions);
END;

-- Checks every monitor again under the rules as they are now (after a change of
-- pgpulse.allow_private_targets): parks those refused now, dropping their waiting jobs, and
-- schedules again, from their next slot, the parked ones accepted now.
CREATE OR REPLACE FUNCTION pgpulse.recheck_monitor_urls(OUT parked integer, OUT resumed integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH refused AS (
        UPDATE pgpulse.schedule s SET parked = p.problem
          FROM pgpulse.schedule o
         CROSS JOIN LATERAL pgpulse._schedule_problem_now(o) p(problem)
         WHERE s.monitor_id = o.monitor_id AND o.parked IS NULL AND p.problem IS NOT NULL
        RETURNING s.monitor_id
    ), dropped AS (
        DELETE FROM pgpulse.outbox j USING refused r WHERE j.monitor_id = r.monitor_id
    )
    SELECT count(*) INTO parked FROM refused;
    WITH accepted AS (
        UPDATE pgpulse.schedule s
           SET parked = NULL,
               next_check_at = pgpulse._grid_slot(s.monitor_id::text, s.check_interval_seconds, now())
         WHERE s.parked IS NOT NULL AND pgpulse._schedule_problem_now(s) IS NULL
        RETURNING 1
    )
    SELECT count(*) INTO resumed FROM accepted;
END
$$;

-- Monitors whose check the rules refuse now, and whether they are parked.
CREATE OR REPLACE FUNCTION pgpulse.monitor_url_problems()
RETURNS TABLE (monitor_id text, url text, problem text, parked boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.monitor_id::text, s.check_spec ->> 'url', p.problem, s.parked IS NOT NULL
      FROM pgpulse.schedule s
     CROSS JOIN LATERAL pgpulse._schedule_problem_now(s) p(problem)
     WHERE p.problem IS NOT NULL
     ORDER BY s.monitor_id::text
$$;

-- The region a monitor's job goes to (see _routing), or NULL for round-robin. Without
-- fallback, its own region while that exists (a deleted region gets no job: the monitor
-- stays due, counted unrouted).
CREATE OR REPLACE FUNCTION pgpulse._route(p_preferred text, p_allow_fallback boolean, p_route jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_allow_fallback THEN p_route ->> p_preferred
            WHEN p_route ? p_preferred THEN p_preferred END;

-- A renamed region is renamed where pgpulse holds its code: the monitors' schedule (the
-- product's own columns are the product's to change) and the jobs waiting for it.
CREATE FUNCTION pgpulse._region_renamed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE pgpulse.schedule SET preferred_region = NEW.code WHERE preferred_region = OLD.code;
    UPDATE pgpulse.schedule SET check_regions = array_replace(check_regions, OLD.code, NEW.code)
     WHERE check_regions @> ARRAY[OLD.code];
    UPDATE pgpulse.outbox SET region = NEW.code WHERE region = OLD.code;
    RETURN NULL;
END
$$;

CREATE TRIGGER regions_renamed
    AFTER UPDATE OF code ON pgpulse.regions
    FOR EACH ROW WHEN (NEW.code IS DISTINCT FROM OLD.code)
    EXECUTE FUNCTION pgpulse._region_renamed();

-- Claims one chunk of due monitors, writes their jobs, bumps their slots; returns counts.
-- Every slot of a monitor up to the horizon is written at once (several for sub-minute
-- intervals), each with its exact deliver_at; a multi-region monitor (check_regions) gets
-- one job per slot and region (see _route_each). p_route, p_wheel: from _routing. A
-- single-region monitor's region is route ->> preferred_region when it allows fallback,
-- else its preferred region (_route, spelled out); NULL: the wheel (round-robin). With no
-- wheel, monitors that no region can take are not claimed (they stay due; the tick counts
-- them). p_rr: the round-robin position this chunk starts at; wheeled: monitors routed by
-- the wheel. p_keep_existing: a slot can only be in the outbox already when next_check_at
-- was moved back by hand; the tick first tries a plain INSERT (about 10% faster than ON
-- CONFLICT's per-row check) and, should that hit the unique key, redoes the chunk with
-- p_keep_existing, which keeps the jobs already there. Slots inside a maintenance window
-- are not written (skipped counts them, and so does the window). p_now: the clock, for
-- tests that move it (NULL: clock_timestamp()). p_skip: ids (as text) of monitors this
-- tick could not schedule (see _tick_step). p_only: just these schedule rows (a product's
-- write schedules the monitors it changed, never the tick's backlog). It reads and locks rows of pgpulse.schedule
-- only, never the product's table. A monitor without fallback whose region no longer
-- exists gets no job (it stays due and is counted unrouted).
CREATE FUNCTION pgpulse._tick_chunk(
    p_horizon timestamptz, p_chunk integer, p_rr bigint, p_route jsonb, p_wheel text[],
    p_keep_existing boolean, p_now timestamptz DEFAULT NULL, p_skip text[] DEFAULT '{}',
    p_only tid[] DEFAULT NULL, OUT claimed integer, OUT written integer, OUT wheeled integer, OUT skipped integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- a chunk is small next to the table: join it row by row, never hash the whole table
SET enable_hashjoin = off
SET enable_mergejoin = off
-- the planner cannot know how many slots a monitor has this tick and guesses 1000: JIT
-- compiling for that guess costs seconds and never pays off
SET jit = off
AS $$
DECLARE
    v_now     timestamptz := coalesce(p_now, clock_timestamp());
    -- without any window (the usual case) the tick never looks for one per slot
    v_windows boolean := EXISTS (SELECT 1 FROM pgpulse.maintenance_windows);
BEGIN
    WITH due AS MATERIALIZED (
        SELECT m.ctid AS row_ref, m.monitor_id AS id, m.check_spec, m.criticality, m.allow_fallback,
               m.check_regions, m.check_interval_seconds AS iv_s,
               CASE
                   -- more than a year late (or a -infinity that slipped past the CHECK):
                   -- restart on the phase grid, the latest slot not after now
                   WHEN m.next_check_at < v_now - interval '1 year'
                       THEN pgpulse._grid_slot(m.monitor_id::text, m.check_interval_seconds,
                                               v_now - make_interval(secs => m.check_interval_seconds))
                   -- catch-up: the latest slot not after now, never one per missed slot
                   ELSE m.next_check_at + make_interval(secs => m.check_interval_seconds)
                        * greatest(0, floor(extract(epoch FROM v_now - m.next_check_at)
                                            / m.check_interval_seconds))::float8
               END AS slot,
               CASE WHEN m.check_regions IS NULL
                    THEN CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                              WHEN p_route ? m.preferred_region THEN m.preferred_region END
               END AS routed
          FROM pgpulse.schedule m
         WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= p_horizon
           AND CASE WHEN m.check_regions IS NULL
                    -- round-robin only for a monitor that has no region or may fall back
                    THEN (p_wheel IS NOT NULL AND (m.preferred_region IS NULL OR m.allow_fallback))
                         OR CASE WHEN m.allow_fallback THEN p_route ->> m.preferred_region
                                 WHEN p_route ? m.preferred_region THEN m.preferred_region
                            END IS NOT NULL
                    -- (_route_each spelled out: a SQL function starts an executor per call)
                    ELSE EXISTS (SELECT 1 FROM unnest(m.check_regions) c(code)
                                  WHERE CASE WHEN m.allow_fallback THEN p_route ->> c.code
                                             WHEN p_route ? c.code THEN c.code END IS NOT NULL)
               END
           AND (cardinality(p_skip) = 0 OR m.monitor_id::text <> ALL (p_skip))
           AND (p_only IS NULL OR m.ctid = ANY (p_only))
         ORDER BY m.next_check_at
         LIMIT p_chunk
           FOR UPDATE OF m SKIP LOCKED
    ), routed AS (
        -- the wheel continues where the previous chunk left it: a running count of the
        -- wheel's rows (no sort needed)
        SELECT d.*,
               -- the slots up to the horizon: the first one, and n - 1 more
               floor(extract(epoch FROM p_horizon - d.slot) / d.iv_s)::integer + 1 AS n,
               CASE WHEN d.check_regions IS NULL THEN
                   ARRAY[coalesce(d.routed,
                       p_wheel[1 + ((p_rr + count(*) FILTER (WHERE d.routed IS NULL
                                                               AND d.check_regions IS NULL)
                                                OVER (ROWS UNBOUNDED PRECEDING))
                                    % cardinality(p_wheel))::integer])]
               ELSE (SELECT array_agg(DISTINCT r.code ORDER BY r.code)
                       FROM unnest(d.check_regions) c(code)
                      CROSS JOIN LATERAL (SELECT CASE WHEN d.allow_fallback THEN p_route ->> c.code
                                                      WHEN p_route ? c.code THEN c.code END) r(code)
                      WHERE r.code IS NOT NULL) END AS regions
          FROM due d
    ), windows AS MATERIALIZED (
        SELECT * FROM pgpulse._maintenance_occurrences(v_now - interval '1 day', p_horizon)
         WHERE v_windows
    ), slot AS NOT MATERIALIZED (
        -- every slot up to the horizon, and the maintenance window it falls in
        SELECT r.*, s.at,
               CASE WHEN v_windows THEN (
                   SELECT min(w.window_id) FROM windows w
                    WHERE (w.monitor_ids IS NULL OR r.id::text = ANY (w.monitor_ids))
                      AND s.at >= w.lo AND s.at < w.hi
                      AND (s.at AT TIME ZONE w.time_zone) >= w.local_start
                      AND (s.at AT TIME ZONE w.time_zone) < w.local_end) END AS window_id
          FROM routed r
         CROSS JOIN LATERAL (SELECT r.slot + make_interval(secs => r.iv_s) * k AS at
                               FROM generate_series(0, r.n - 1) k) s
    ), job AS NOT MATERIALIZED (  -- computed only by the INSERT that runs
        SELECT md5(s.id::text || '/' || g.region || '/' || extract(epoch FROM s.at)::text)::uuid,
               s.id, g.region, s.criticality, s.at, s.at,
               s.at + make_interval(secs => s.iv_s), s.allow_fallback,
               CASE WHEN s.check_regions IS NULL THEN s.check_spec
                    ELSE s.check_spec || jsonb_build_object('slot_regions', s.regions) END
          FROM slot s
         CROSS JOIN LATERAL unnest(s.regions) g(region)
         WHERE s.window_id IS NULL
    ), skips AS (
        SELECT window_id, count(*) AS n FROM slot
         WHERE v_windows AND window_id IS NOT NULL GROUP BY window_id
    ), counted AS (
        -- appended, not added to the window's row: see pgpulse.maintenance_skips
        INSERT INTO pgpulse.maintenance_skips (window_id, slots)
        SELECT window_id, n FROM skips
    ), inserted AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE NOT p_keep_existing
        RETURNING 1
    ), inserted_keeping AS (
        INSERT INTO pgpulse.outbox
               (job_id, monitor_id, region, criticality, scheduled_for, deliver_at, expires_at,
                allow_fallback, payload)
        SELECT * FROM job WHERE p_keep_existing
            ON CONFLICT DO NOTHING
        RETURNING 1
    ), bumped AS (
        UPDATE pgpulse.schedule m
           SET next_check_at = r.slot + make_interval(secs => r.iv_s) * r.n,
               last_scheduled_at = v_now
          FROM routed r
         WHERE m.ctid = r.row_ref
    )
    SELECT d.claimed, d.wheeled,
           (SELECT count(*) FROM inserted) + (SELECT count(*) FROM inserted_keeping),
           (SELECT coalesce(sum(n), 0) FROM skips)
      INTO claimed, wheeled, written, skipped
      FROM (SELECT count(*) AS claimed,
                   count(*) FILTER (WHERE routed IS NULL AND check_regions IS NULL) AS wheeled
              FROM due) d;
END
$$;

-- One step of the tick: one chunk of due monitors (the first one small, as nothing is
-- known about the speed yet), counted in the run record. Should the chunk fail on some
-- monitor's row, the step goes one monitor at a time and skips the rows that fail, so
-- one bad row never stops the others; skip: the monitors skipped so far in this tick.
-- done: nothing was left to claim. A lock wait past the deadline raises lock_not_available.
CREATE OR REPLACE FUNCTION pgpulse._tick_step(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_chunk integer,
    p_rr bigint, p_skip text[], p_slowest interval,
    OUT done boolean, OUT next_rr bigint, OUT skip text[], OUT slowest interval)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_t0       timestamptz := clock_timestamp();
    v_chunk    integer := CASE WHEN p_slowest IS NULL THEN least(p_chunk, 500) ELSE p_chunk END;
    -- one horizon for the whole tick, from its start: a horizon that moved on with each
    -- chunk claimed sub-minute monitors again and again while the tick ran
    v_horizon  timestamptz := coalesce(
        (SELECT r.started_at + make_interval(secs => r.lookahead_ms / 1000.0)
           FROM pgpulse.tick_runs r WHERE r.id = p_run_id),
        clock_timestamp() + p_lookahead);
    v_route    jsonb;
    v_wheel    text[];
    v_claimed  integer := 0;
    v_written  integer := 0;
    v_wheeled  integer := 0;
    v_skipped  integer := 0;
    v_detail   text;
    v_in_windows integer := 0;  -- slots inside a maintenance window, not written
    v_failed   boolean := false;
    v_id       text;
    v_last_error text;
    v_same     integer := 0;
    c          record;
BEGIN
    skip := coalesce(p_skip, '{}');
    PERFORM pgpulse._tick_bound_lock_wait(p_deadline);
    -- regions change while a tick runs (the relay writes their health): read per chunk
    SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
    BEGIN
        BEGIN
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, v_route, v_wheel,
                                                     false, NULL, skip);
        EXCEPTION WHEN unique_violation THEN
            -- a slot of this chunk is in the outbox already: redo it, keeping those jobs
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, v_chunk, p_rr, v_route, v_wheel,
                                                     true, NULL, skip);
        END;
        v_claimed := c.claimed;
        v_written := c.written;
        v_wheeled := c.wheeled;
        v_in_windows := c.skipped;
    EXCEPTION
        WHEN lock_not_available OR query_canceled THEN
            RAISE;
        WHEN OTHERS THEN
            v_failed := true;
    END;
    IF v_failed THEN
        FOR i IN 1 .. v_chunk LOOP
            -- the monitor the next one-monitor chunk claims (the same query, as _tick_chunk)
            SELECT m.monitor_id::text INTO v_id
              FROM pgpulse.schedule m
             WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= v_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN (v_wheel IS NOT NULL AND (m.preferred_region IS NULL OR m.allow_fallback))
                             OR pgpulse._route(m.preferred_region, m.allow_fallback, v_route) IS NOT NULL
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, v_route) IS NOT NULL
                   END
               AND (cardinality(skip) = 0 OR m.monitor_id::text <> ALL (skip))
             ORDER BY m.next_check_at
             LIMIT 1
               FOR UPDATE OF m SKIP LOCKED;
            EXIT WHEN NOT FOUND;
            BEGIN
                SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, 1, p_rr + v_wheeled, v_route,
                                                         v_wheel, true, NULL, skip);
                EXIT WHEN c.claimed = 0;
                v_claimed := v_claimed + c.claimed;
                v_written := v_written + c.written;
                v_wheeled := v_wheeled + c.wheeled;
                v_in_windows := v_in_windows + c.skipped;
            EXCEPTION
                WHEN lock_not_available OR query_canceled THEN
                    RAISE;
                WHEN OTHERS THEN
                    skip := skip || v_id;
                    v_skipped := v_skipped + 1;
                    v_detail := coalesce(v_detail, format('monitor %s: %s', v_id, SQLERRM));
                    -- the same error row after row is not about a row: say it once, and
                    -- leave the rest due for the next tick instead of trying each alone
                    v_same := CASE WHEN SQLSTATE || SQLERRM = v_last_error THEN v_same + 1 ELSE 1 END;
                    v_last_error := SQLSTATE || SQLERRM;
                    IF v_same >= 5 THEN
                        v_detail := v_detail || format(' (the same error on %s rows in a row: '
                                                       'the rest of this chunk was not tried)', v_same);
                        EXIT;
                    END IF;
            END;
        END LOOP;
    END IF;
    IF v_claimed > 0 OR v_skipped > 0 THEN
        UPDATE pgpulse.tick_runs
           SET monitors_claimed = monitors_claimed + v_claimed,
               jobs_written = jobs_written + v_written,
               maintenance_skipped = maintenance_skipped + v_in_windows,
               chunks = chunks + 1,
               skipped = skipped + v_skipped,
               skip_detail = coalesce(skip_detail, v_detail)
         WHERE id = p_run_id;
    END IF;
    IF v_written > 0 THEN
        PERFORM pg_notify('pgpulse_outbox', v_written::text);
    END IF;
    done := v_claimed = 0 AND v_skipped = 0;
    next_rr := p_rr + v_wheeled;
    slowest := greatest(coalesce(p_slowest, interval '0'), clock_timestamp() - v_t0);
END
$$;

-- Due monitors that no region can take now (none of a multi-region monitor's regions, or
-- no round-robin region), counted up to p_limit so that the count stays inside the budget.
-- The tick's own rule: a monitor without a region, or one that may fall back, takes the
-- round-robin wheel when there is one.
CREATE OR REPLACE FUNCTION pgpulse._unrouted(p_horizon timestamptz, p_route jsonb, p_limit integer)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*)::integer
      FROM (SELECT 1
              FROM pgpulse.schedule m
             WHERE m.is_active AND m.parked IS NULL AND m.next_check_at <= p_horizon
               AND CASE WHEN m.check_regions IS NULL
                        THEN pgpulse._route(m.preferred_region, m.allow_fallback, p_route) IS NULL
                             AND NOT ((m.preferred_region IS NULL OR m.allow_fallback)
                                      AND (SELECT r.wheel IS NOT NULL FROM pgpulse._routing() r))
                        ELSE pgpulse._route_each(m.check_regions, m.allow_fallback, p_route) IS NULL
                   END
             LIMIT p_limit) u
$$;

-- Closes a tick's run record: why it stopped and, while its budget lasts, how many due
-- monitors no region could take. A drained tick also prunes, a bounded batch at a time (so
-- growth stays bounded without pg_cron too): run records older than 30 days, and dead
-- letters older than the database setting pgpulse.dead_letter_retention (14 days unless
-- set, e.g. ALTER DATABASE app SET pgpulse.dead_letter_retention = '30 days').
CREATE OR REPLACE FUNCTION pgpulse._tick_finish(
    p_run_id bigint, p_deadline timestamptz, p_lookahead interval, p_stop text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
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
        -- up to this tick's horizon (from its start), not past what it was to claim
        v_unrouted := pgpulse._unrouted(
            coalesce((SELECT r.started_at + make_interval(secs => r.lookahead_ms / 1000.0)
                        FROM pgpulse.tick_runs r WHERE r.id = p_run_id),
                     clock_timestamp() + p_lookahead),
            v_route, 1000000);
        DELETE FROM pgpulse.tick_runs
         WHERE id IN (SELECT id FROM pgpulse.tick_runs
                       WHERE started_at < now() - interval '30 days' LIMIT 1000);
        DELETE FROM pgpulse.dead_letters
         WHERE job_id IN (SELECT job_id FROM pgpulse.dead_letters
                           WHERE failed_at < now() - v_retention LIMIT 1000);
    END IF;
    -- skipped slots into their windows' counts: only windows no one holds (an edit in
    -- progress keeps its count for the next tick)
    WITH free AS (
        SELECT w.id FROM pgpulse.maintenance_windows w
         WHERE w.id IN (SELECT window_id FROM pgpulse.maintenance_skips)
           FOR NO KEY UPDATE SKIP LOCKED
    ), folded AS (
        DELETE FROM pgpulse.maintenance_skips k USING free f WHERE k.window_id = f.id
        RETURNING k.window_id, k.slots
    )
    UPDATE pgpulse.maintenance_windows w SET skipped_slots = w.skipped_slots + f.slots
      FROM (SELECT window_id, sum(slots) AS slots FROM folded GROUP BY window_id) f
     WHERE w.id = f.window_id;
    UPDATE pgpulse.tick_runs
       SET finished_at = clock_timestamp(), cut_short = p_stop <> 'drained',
           unrouted = v_unrouted, stop_reason = p_stop
     WHERE id = p_run_id;
END
$$;

-- Brings the schedule up to where the ticks have written: slots of new, re-activated or
-- re-phased monitors up to that horizon go to the outbox now (the next tick would write them
-- late), and the relay is woken. Run by the triggers that follow the product's monitors, in
-- the product's transaction, so these first jobs are written when its write commits (a
-- relay woken by NOTIFY could not see them sooner). Every other row is past the horizon
-- already: only those are due. A no-op when no tick ran lately. It never fails the
-- product's write: on any error the next tick schedules them instead. Returns the jobs
-- written. p_only: the schedule rows the write changed (NULL: every due one); planned for
-- the rows given (a TID scan), not as the tick's generic plan that walks the due index.
CREATE FUNCTION pgpulse._schedule_now(p_only tid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_horizon timestamptz := pgpulse._written_ahead_to();
    v_route   jsonb;
    v_wheel   text[];
    v_written integer := 0;
    c         record;
BEGIN
    IF v_horizon IS NULL OR v_horizon < clock_timestamp() THEN
        RETURN 0;
    END IF;
    BEGIN
        SELECT r.route, r.wheel INTO v_route, v_wheel FROM pgpulse._routing() r;
        -- rows locked by a tick or another writer are theirs to schedule
        FOR i IN 1 .. 20 LOOP
            SELECT * INTO c FROM pgpulse._tick_chunk(v_horizon, 5000,
                                                     floor(random() * 1000000)::bigint,
                                                     v_route, v_wheel, true,
                                                     p_only => p_only);
            v_written := v_written + c.written;
            EXIT WHEN c.claimed < 5000;
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgpulse: could not schedule changed monitors at once (%); the next '
            'tick will', SQLERRM;
        RETURN 0;
    END;
    IF v_written > 0 THEN
        PERFORM pg_notify('pgpulse_outbox', v_written::text);
    END IF;
    RETURN v_written;
END
$$;

-- "Check now": the monitor's next slot is now (its job is written at once when a tick ran
-- lately; else by the next tick). pgpulse's schedule is the source of this: the product's
-- table is not written. Returns false for an unknown, inactive or parked monitor.
CREATE FUNCTION pgpulse.check_now(p_monitor_id text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row tid;
BEGIN
    -- by the key's own type (a product's uuid, bigint or text id), so by its index
    EXECUTE format('UPDATE pgpulse.schedule SET next_check_at = clock_timestamp()'
                   ' WHERE monitor_id = $1::%s AND is_active AND parked IS NULL RETURNING ctid',
                   (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                     WHERE a.attrelid = 'pgpulse.schedule'::regclass AND a.attname = 'monitor_id'))
       INTO v_row USING p_monitor_id;
    IF v_row IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pgpulse._schedule_now(ARRAY[v_row]);
    RETURN true;
END
$$;

-- When pgpulse saw a product row: now for one followed at once, the product's write for one
-- a bulk write logged (its first slot is the next one after the write, not after the relay
-- got to it).
CREATE FUNCTION pgpulse._seen_at(p_row public.monitors)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN now();

CREATE FUNCTION pgpulse._seen_at(p_row pgpulse.follow_log)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN p_row.logged_at;

-- Schedule rows for product rows pgpulse has not seen (new ones, or all of them in a
-- resync), given as product rows or as rows of pgpulse.follow_log: the first slot is the
-- product's next_check_at, or the next one on the monitor's phase grid. A row there already
-- takes every field anew, or with p_replace false is kept (a logged row is older than what
-- a later write of the product put there). Returns the rows written.
CREATE FUNCTION pgpulse._schedule_insert(p_rows anyarray, p_replace boolean DEFAULT true)
RETURNS tid[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows tid[];
BEGIN
    WITH written AS (
        INSERT INTO pgpulse.schedule AS s
               (monitor_id, is_active, parked, next_check_at, check_interval_seconds,
                preferred_region, allow_fallback, criticality, check_regions, check_spec)
        SELECT n.id, coalesce(n.is_active, false), f.problem,
               CASE WHEN isfinite(n.next_check_at) THEN n.next_check_at
                    WHEN f.problem IS NULL
                        THEN pgpulse._grid_slot(n.id::text, i.interval_s::integer,
                                                pgpulse._seen_at(n))
                    ELSE now() END,
               least(greatest(coalesce(i.interval_s, 0), 0), 2147483647), n.preferred_region,
               coalesce(n.allow_fallback, true), coalesce(n.criticality, ''), n.check_regions,
               pgpulse._check_spec(n.url, n.method, n.timeout_ms, n.expected_status,
                                   n.check_retries, n.check_retry_delay_ms)
          FROM unnest(p_rows) n
         CROSS JOIN LATERAL (SELECT pgpulse._interval_s(n.check_interval_minutes,
                                                        n.check_interval_seconds) AS interval_s) i
         CROSS JOIN LATERAL (SELECT pgpulse._schedule_problem(
                                        i.interval_s, n.url, n.method, n.timeout_ms,
                                        n.expected_status, n.check_retries, n.check_retry_delay_ms,
                                        n.criticality, n.check_regions) AS problem) f
            ON CONFLICT (monitor_id) DO UPDATE
           SET is_active = excluded.is_active, parked = excluded.parked,
               next_check_at = excluded.next_check_at,
               check_interval_seconds = excluded.check_interval_seconds,
               preferred_region = excluded.preferred_region, allow_fallback = excluded.allow_fallback,
               criticality = excluded.criticality, check_regions = excluded.check_regions,
               check_spec = excluded.check_spec
         WHERE p_replace
        RETURNING s.ctid
    )
    SELECT array_agg(ctid) INTO v_rows FROM written;
    RETURN v_rows;
END
$$;

-- New monitors. A statement of up to 500 rows (a product's form, an API call) is followed
-- at once: their schedule rows, and their first slots within the horizon the ticks have
-- written go to the outbox, in this transaction (see _schedule_now). A bulk write (an
-- import) only appends its rows to pgpulse.follow_log and wakes the relay, which follows
-- them a moment later: its cost per row stays near the product's own (pgpulse bench
-- follow).
CREATE FUNCTION pgpulse._follow_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_monitors OFFSET 500) THEN
        INSERT INTO pgpulse.follow_log
               (id, url, method, timeout_ms, expected_status, check_retries,
                check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
                preferred_region, allow_fallback, criticality, next_check_at, check_regions)
        SELECT n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
               n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
               n.is_active, n.preferred_region, n.allow_fallback, n.criticality,
               n.next_check_at, n.check_regions
          FROM new_monitors n;
        PERFORM pg_notify('pgpulse_follow', '');
    ELSE
        PERFORM pgpulse._schedule_now(
            pgpulse._schedule_insert(ARRAY(SELECT n::public.monitors FROM new_monitors n)));
    END IF;
    RETURN NULL;
END
$$;

-- A changed monitor, from its logged change (pgpulse.follow_log: the new values and the old
-- ones): the fields whose columns changed follow (the others keep what pgpulse holds: a
-- region renamed in pgpulse.regions stays renamed). A changed interval re-phases the next
-- slot onto the new grid and takes back the jobs written ahead for the old one (a slot
-- already due is still checked); so does a re-activation or an unparked row (its next slot
-- after the product's write, not a catch-up). A next_check_at the product changed wins: its
-- next slot is there. A deactivated or newly parked monitor's waiting jobs go; a changed
-- check, criticality or fallback choice reaches the jobs still waiting. Returns whether its
-- slots up to the horizon may be missing (re-activated, unparked, or its slot moved).
CREATE FUNCTION pgpulse._follow_change(e pgpulse.follow_log)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s          pgpulse.schedule%ROWTYPE;
    v_old      pgpulse.schedule%ROWTYPE;
    v_interval bigint;
BEGIN
    SELECT * INTO v_old FROM pgpulse.schedule WHERE monitor_id = e.id FOR UPDATE;
    IF NOT FOUND THEN
        -- a row pgpulse never saw (following was off): follow it anew, from this version
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id;
        PERFORM pgpulse._schedule_insert(ARRAY[e]);
        RETURN true;
    END IF;
    s := v_old;
    IF e.check_interval_seconds IS DISTINCT FROM e.old_check_interval_seconds
       OR e.check_interval_minutes IS DISTINCT FROM e.old_check_interval_minutes THEN
        -- the one of the two this UPDATE changed wins (seconds when both; NULL seconds:
        -- minutes again)
        v_interval := CASE
            WHEN e.check_interval_seconds IS DISTINCT FROM e.old_check_interval_seconds
                THEN pgpulse._interval_s(e.check_interval_minutes, e.check_interval_seconds)
            ELSE e.check_interval_minutes::bigint * 60 END;
        s.check_interval_seconds := least(greatest(v_interval, 0), 2147483647);
    ELSE
        v_interval := v_old.check_interval_seconds;
    END IF;
    IF e.preferred_region IS DISTINCT FROM e.old_preferred_region THEN
        s.preferred_region := e.preferred_region;
    END IF;
    IF e.check_regions IS DISTINCT FROM e.old_check_regions THEN
        s.check_regions := e.check_regions;
    END IF;
    s.is_active := coalesce(e.is_active, false);
    s.allow_fallback := coalesce(e.allow_fallback, true);
    s.criticality := coalesce(e.criticality, '');
    s.check_spec := pgpulse._check_spec(e.url, e.method, e.timeout_ms, e.expected_status,
                                        e.check_retries, e.check_retry_delay_ms);
    s.parked := pgpulse._schedule_problem(v_interval, e.url, e.method, e.timeout_ms,
                                          e.expected_status, e.check_retries,
                                          e.check_retry_delay_ms, e.criticality,
                                          s.check_regions);
    IF s.parked IS NULL AND s.is_active
       AND (NOT v_old.is_active OR v_old.parked IS NOT NULL
            OR s.check_interval_seconds IS DISTINCT FROM v_old.check_interval_seconds) THEN
        s.next_check_at := pgpulse._grid_slot(e.id::text, s.check_interval_seconds,
                                              e.logged_at);
    END IF;
    IF e.next_check_at IS DISTINCT FROM e.old_next_check_at AND isfinite(e.next_check_at) THEN
        s.next_check_at := e.next_check_at;
    END IF;

    IF NOT s.is_active OR s.parked IS NOT NULL THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id;
    ELSIF s.check_interval_seconds IS DISTINCT FROM v_old.check_interval_seconds THEN
        DELETE FROM pgpulse.outbox WHERE monitor_id = e.id AND scheduled_for > now();
    END IF;
    IF s.is_active AND s.parked IS NULL
       AND (s.check_spec IS DISTINCT FROM v_old.check_spec
            OR s.criticality IS DISTINCT FROM v_old.criticality
            OR s.allow_fallback IS DISTINCT FROM v_old.allow_fallback) THEN
        -- a multi-region job keeps the regions of its slot
        UPDATE pgpulse.outbox
           SET payload = s.check_spec || jsonb_strip_nulls(
                   jsonb_build_object('slot_regions', payload -> 'slot_regions')),
               criticality = s.criticality, allow_fallback = s.allow_fallback
         WHERE monitor_id = e.id;
    END IF;
    UPDATE pgpulse.schedule
       SET is_active = s.is_active, parked = s.parked, next_check_at = s.next_check_at,
           check_interval_seconds = s.check_interval_seconds,
           preferred_region = s.preferred_region, allow_fallback = s.allow_fallback,
           criticality = s.criticality, check_regions = s.check_regions,
           check_spec = s.check_spec
     WHERE monitor_id = e.id;
    RETURN s.is_active AND s.parked IS NULL
       AND (NOT v_old.is_active OR v_old.parked IS NOT NULL
            OR s.next_check_at IS DISTINCT FROM v_old.next_check_at);
END
$$;

-- Follows logged product writes in the order they were made (new rows a run at a time,
-- each change by itself), then writes the slots they made due up to the horizon the ticks
-- have written.
CREATE FUNCTION pgpulse._follow_entries(p_entries pgpulse.follow_log[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e       pgpulse.follow_log;
    v_new   pgpulse.follow_log[] := '{}';
    v_moved pgpulse.follow_log[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_entries) u WHERE u.old_id IS NOT NULL) THEN
        -- only new rows (a bulk INSERT): all at once
        PERFORM pgpulse._schedule_now(pgpulse._schedule_insert(p_entries, false));
        RETURN;
    END IF;
    FOR e IN SELECT u.* FROM unnest(p_entries) u ORDER BY u.seq LOOP
        IF e.old_id IS NULL THEN
            v_new := v_new || e;
            CONTINUE;
        END IF;
        IF cardinality(v_new) > 0 THEN
            PERFORM pgpulse._schedule_insert(v_new, false);
            v_moved := v_moved || v_new;
            v_new := '{}';
        END IF;
        IF pgpulse._follow_change(e) THEN
            v_moved := v_moved || e;
        END IF;
    END LOOP;
    IF cardinality(v_new) > 0 THEN
        PERFORM pgpulse._schedule_insert(v_new, false);
        v_moved := v_moved || v_new;
    END IF;
    IF cardinality(v_moved) > 0 THEN
        PERFORM pgpulse._schedule_now(ARRAY(
            SELECT s.ctid FROM pgpulse.schedule s
             WHERE s.monitor_id IN (SELECT m.id FROM unnest(v_moved) m)));
    END IF;
END
$$;

-- Changed monitors, after the statement (its old and new rows as transition tables): the
-- rows whose followed columns changed are logged, and followed at once, in this transaction
-- (their slots that became due written as for a new monitor), when they are up to 500 and
-- nothing older waits in the log (the log's order is each monitor's order). A bulk UPDATE is
-- left to follow_apply, like a bulk INSERT, so its cost per row stays near the product's
-- own. An UPDATE that names no followed column returns at once (_follow_update_named said
-- so): an ORM's full-row save that writes back what it read logs nothing either. A changed
-- id: the old one is gone (as deleted), the new one is a new monitor.
CREATE FUNCTION pgpulse._follow_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a bulk statement's rows: planned without JIT (its compile time would be most of the
-- cost), joined in memory
SET jit = off SET work_mem = '64MB'
AS $$
DECLARE
    v_flag  text := 'pgpulse.follow_named_' || pg_trigger_depth();
    v_named text := current_setting(v_flag, true);
    v_seq   bigint;
    v_rows  bigint;
    v_ids   bigint := 0;
    v_taken pgpulse.follow_log[];
BEGIN
    IF v_named IS NULL OR v_named NOT IN ('columns', 'id') THEN
        RETURN NULL;
    END IF;
    PERFORM set_config(v_flag, '', true);
    v_seq := nextval('pgpulse.follow_log_seq');
    IF v_named = 'id' THEN
        DELETE FROM pgpulse.follow_log l USING old_monitors o
         WHERE l.id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        DELETE FROM pgpulse.outbox j USING old_monitors o
         WHERE j.monitor_id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        DELETE FROM pgpulse.schedule s USING old_monitors o
         WHERE s.monitor_id = o.id AND NOT EXISTS (SELECT 1 FROM new_monitors n WHERE n.id = o.id);
        INSERT INTO pgpulse.follow_log
               (seq, id, url, method, timeout_ms, expected_status, check_retries,
                check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
                preferred_region, allow_fallback, criticality, next_check_at, check_regions)
        SELECT v_seq, n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
               n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
               n.is_active, n.preferred_region, n.allow_fallback, n.criticality,
               n.next_check_at, n.check_regions
          FROM new_monitors n
         WHERE NOT EXISTS (SELECT 1 FROM old_monitors o WHERE o.id = n.id);
        GET DIAGNOSTICS v_ids = ROW_COUNT;
    END IF;
    INSERT INTO pgpulse.follow_log
           (seq, id, url, method, timeout_ms, expected_status, check_retries,
            check_retry_delay_ms, check_interval_minutes, check_interval_seconds, is_active,
            preferred_region, allow_fallback, criticality, next_check_at, check_regions,
            old_id, old_check_interval_minutes, old_check_interval_seconds,
            old_preferred_region, old_check_regions, old_next_check_at)
    SELECT v_seq, n.id, n.url, n.method, n.timeout_ms, n.expected_status, n.check_retries,
           n.check_retry_delay_ms, n.check_interval_minutes, n.check_interval_seconds,
           n.is_active, n.preferred_region, n.allow_fallback, n.criticality, n.next_check_at,
           n.check_regions, o.id, o.check_interval_minutes, o.check_interval_seconds,
           o.preferred_region, o.check_regions, o.next_check_at
      FROM new_monitors n JOIN old_monitors o ON o.id = n.id
     WHERE n.url IS DISTINCT FROM o.url OR n.method IS DISTINCT FROM o.method
        OR n.timeout_ms IS DISTINCT FROM o.timeout_ms
        OR n.expected_status IS DISTINCT FROM o.expected_status
        OR n.check_retries IS DISTINCT FROM o.check_retries
        OR n.check_retry_delay_ms IS DISTINCT FROM o.check_retry_delay_ms
        OR n.check_interval_minutes IS DISTINCT FROM o.check_interval_minutes
        OR n.check_interval_seconds IS DISTINCT FROM o.check_interval_seconds
        OR n.is_active IS DISTINCT FROM o.is_active
        OR n.preferred_region IS DISTINCT FROM o.preferred_region
        OR n.allow_fallback IS DISTINCT FROM o.allow_fallback
        OR n.criticality IS DISTINCT FROM o.criticality
        OR n.next_check_at IS DISTINCT FROM o.next_check_at
        OR n.check_regions IS DISTINCT FROM o.check_regions;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_rows := v_rows + v_ids;
    IF v_rows = 0 THEN
        RETURN NULL;
    ELSIF v_rows <= 500 AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.seq < v_seq) THEN
        WITH taken AS (DELETE FROM pgpulse.follow_log l WHERE l.seq = v_seq RETURNING l)
        SELECT array_agg(t.l) INTO v_taken FROM taken t;
        PERFORM pgpulse._follow_entries(v_taken);
    ELSE
        PERFORM pg_notify('pgpulse_follow', '');
    END IF;
    RETURN NULL;
END
$$;

-- Before an UPDATE that names a followed column (TG_ARGV[0] 'columns') or the id ('id'),
-- tells its _follow_update to look at the statement's rows: an UPDATE of other columns pays
-- only for the transition tables. Per trigger depth: an UPDATE that a product trigger runs
-- inside another statement has its own.
CREATE FUNCTION pgpulse._follow_update_named() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_flag text := 'pgpulse.follow_named_' || pg_trigger_depth();
BEGIN
    IF TG_ARGV[0] = 'id' OR current_setting(v_flag, true) IS DISTINCT FROM 'id' THEN
        PERFORM set_config(v_flag, TG_ARGV[0], true);
    END IF;
    RETURN NULL;
END
$$;

-- Deleted monitors: their schedule rows, waiting jobs and dead letters go (a retry would
-- bring them back).
CREATE FUNCTION pgpulse._follow_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- a bulk statement's rows: planned without JIT (its compile time would be most of the
-- cost), joined in memory
SET jit = off SET work_mem = '64MB'
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pgpulse.follow_log) THEN
        DELETE FROM pgpulse.follow_log l USING old_monitors o WHERE l.id = o.id;
    END IF;
    DELETE FROM pgpulse.schedule s USING old_monitors o WHERE s.monitor_id = o.id;
    DELETE FROM pgpulse.outbox j USING old_monitors o WHERE j.monitor_id = o.id;
    DELETE FROM pgpulse.dead_letters d USING old_monitors o WHERE d.monitor_id = o.id;
    RETURN NULL;
END
$$;

-- Follows the product writes logged in pgpulse.follow_log, up to p_limit of them, oldest
-- first: their schedule rows, and their first slots up to the horizon the ticks have
-- written. One caller at a time (relays and ticks may call it at once: the others wait):
-- the log's order is each monitor's order. A new row the product changed since (its UPDATE
-- followed it anew) keeps what that wrote. Returns the rows taken.
CREATE FUNCTION pgpulse.follow_apply(p_limit integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_rows pgpulse.follow_log[];
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'pgpulse.follow_apply: limit must be 1 to 1000000, not %',
            coalesce(p_limit::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgpulse.follow_log) THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpulse.follow_apply'));
    WITH taken AS (
        DELETE FROM pgpulse.follow_log l
         WHERE l.ctid = ANY (ARRAY(SELECT f.ctid FROM pgpulse.follow_log f
                                    ORDER BY f.seq LIMIT p_limit FOR UPDATE))
        RETURNING l
    )
    SELECT array_agg(t.l) INTO v_rows FROM taken t;
    IF v_rows IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pgpulse._follow_entries(v_rows);
    RETURN cardinality(v_rows);
END
$$;

-- What bulk writes left to follow, for the health surfaces (readable by any role: counts
-- only): rows waiting, and the age of the oldest in seconds.
CREATE FUNCTION pgpulse.follow_pending(OUT pending bigint, OUT oldest_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT count(*), coalesce(extract(epoch FROM now() - min(logged_at))::float8, 0)
      FROM pgpulse.follow_log;
END;

-- A truncated monitors table: nothing is left to schedule.
CREATE FUNCTION pgpulse._follow_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM pgpulse.follow_log;
    DELETE FROM pgpulse.schedule;
    DELETE FROM pgpulse.outbox;
    DELETE FROM pgpulse.dead_letters;
    RETURN NULL;
END
$$;

-- A job put back after a failure (the relay's requeue, a dead letter retried) may have
-- been in flight while its monitor changed: it is dropped when the monitor is inactive or
-- parked, and otherwise carries the monitor's check as it is now. (A job without a schedule
-- row was not written by the tick, or its monitor was deleted while it was in flight: kept.)
CREATE OR REPLACE FUNCTION pgpulse._outbox_requeue_current() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_monitor record;
BEGIN
    SELECT s.is_active, s.parked, s.check_spec, s.criticality, s.allow_fallback
      INTO v_monitor
      FROM pgpulse.schedule s WHERE s.monitor_id = NEW.monitor_id;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF NOT v_monitor.is_active OR v_monitor.parked IS NOT NULL THEN
        RETURN NULL;
    END IF;
    NEW.payload := v_monitor.check_spec || jsonb_strip_nulls(
        jsonb_build_object('slot_regions', NEW.payload -> 'slot_regions'));
    NEW.criticality := v_monitor.criticality;
    NEW.allow_fallback := v_monitor.allow_fallback;
    RETURN NEW;
END
$$;

-- Whether the triggers that follow the product's table are there and enabled (readable by
-- any role: the relay's health checks). Following stops, silently for the product, under
-- ALTER TABLE ... DISABLE TRIGGER, a column drop that took a trigger with it (CASCADE),
-- session_replication_role = replica or pg_restore --disable-triggers: the last two leave
-- no trace here, pgpulse.drift() finds what they let through.
CREATE FUNCTION pgpulse.following(OUT ok boolean, OUT detail text)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT count(*) FILTER (WHERE t.tgenabled IN ('O', 'A')) = 6,
           CASE WHEN count(*) FILTER (WHERE t.tgenabled IN ('O', 'A')) < 6 THEN
               'not following public.monitors: '
               || coalesce(string_agg(t.tgname || ' disabled', ', ')
                               FILTER (WHERE t.tgenabled NOT IN ('O', 'A')), '')
               || CASE WHEN count(t.tgname) < 6
                       THEN format(' %s of 6 triggers missing', 6 - count(t.tgname)) ELSE '' END
           END
      FROM (VALUES ('pgpulse_follow_insert'), ('pgpulse_follow_update'),
                   ('pgpulse_follow_update_named'), ('pgpulse_follow_update_id_named'),
                   ('pgpulse_follow_delete'), ('pgpulse_follow_truncate')) n(name)
      LEFT JOIN pg_trigger t ON t.tgname = n.name AND t.tgrelid = to_regclass('public.monitors');
END;

-- The schedule against the product's table, read as the caller (doctor, `pgpulse resync`):
-- product rows without a schedule row, schedule rows without a product row, and rows whose
-- followed check, state or criticality differ. Refuses when row-level security may hide
-- product rows from the caller (it would see orphans that are not).
CREATE FUNCTION pgpulse.drift(
    OUT product_rows bigint, OUT schedule_rows bigint, OUT missing bigint, OUT orphaned bigint,
    OUT differing bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c
                WHERE c.oid = 'public.monitors'::regclass AND c.relrowsecurity
                  AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
                  AND NOT (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user)) THEN
        RAISE EXCEPTION 'pgpulse: row-level security on public.monitors may hide rows from "%"',
            current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'run it as a role with BYPASSRLS (or the table''s owner, without FORCE)';
    END IF;
    SELECT count(*) INTO product_rows FROM public.monitors;
    SELECT count(*) INTO schedule_rows FROM pgpulse.schedule;
    SELECT count(*) INTO missing FROM public.monitors m
     WHERE NOT EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = m.id)
       AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.id = m.id);
    SELECT count(*) INTO orphaned FROM pgpulse.schedule s
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
    SELECT count(*) INTO differing
      FROM public.monitors m JOIN pgpulse.schedule s ON s.monitor_id = m.id
     WHERE (s.is_active, s.criticality, s.allow_fallback, s.check_spec)
           IS DISTINCT FROM
           (coalesce(m.is_active, false), coalesce(m.criticality, ''),
            coalesce(m.allow_fallback, true),
            pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                m.check_retries, m.check_retry_delay_ms));
END
$$;

-- Repairs what pgpulse.drift() finds, as the caller: follows the product rows it missed,
-- drops schedule rows (and waiting jobs) of product rows that are gone, and takes the
-- product's check, state and criticality where they differ (their next slot stays).
-- Returns what it found, as drift() does, and changes nothing when p_dry_run.
CREATE FUNCTION pgpulse.resync(p_dry_run boolean DEFAULT false,
    OUT product_rows bigint, OUT schedule_rows bigint, OUT missing bigint, OUT orphaned bigint,
    OUT differing bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT * INTO product_rows, schedule_rows, missing, orphaned, differing FROM pgpulse.drift();
    IF p_dry_run THEN
        RETURN;
    END IF;
    PERFORM pgpulse._schedule_insert(ARRAY(
        SELECT m FROM public.monitors m
         WHERE NOT EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = m.id)
           AND NOT EXISTS (SELECT 1 FROM pgpulse.follow_log l WHERE l.id = m.id)));
    DELETE FROM pgpulse.outbox j
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = j.monitor_id)
       AND EXISTS (SELECT 1 FROM pgpulse.schedule s WHERE s.monitor_id = j.monitor_id);
    DELETE FROM pgpulse.schedule s
     WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
    UPDATE pgpulse.schedule s
       SET is_active = coalesce(m.is_active, false), criticality = coalesce(m.criticality, ''),
           allow_fallback = coalesce(m.allow_fallback, true),
           check_spec = pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                            m.check_retries, m.check_retry_delay_ms),
           parked = pgpulse._schedule_problem(
               s.check_interval_seconds, m.url, m.method, m.timeout_ms, m.expected_status,
               m.check_retries, m.check_retry_delay_ms, m.criticality, s.check_regions)
      FROM public.monitors m
     WHERE m.id = s.monitor_id
       AND (s.is_active, s.criticality, s.allow_fallback, s.check_spec)
           IS DISTINCT FROM
           (coalesce(m.is_active, false), coalesce(m.criticality, ''),
            coalesce(m.allow_fallback, true),
            pgpulse._check_spec(m.url, m.method, m.timeout_ms, m.expected_status,
                                m.check_retries, m.check_retry_delay_ms));
END
$$;

-- The backfill: what pgpulse held in the product's rows, as they are now. A parked row
-- (0016 parked by next_check_at 9999-12-31) keeps its reason. Every transaction older than
-- this snapshot's xmin is in it: the catch-up under the lock looks only at rows written by
-- the others.
SELECT set_config('pgpulse.backfill_xmin',
                  (txid_snapshot_xmin(txid_current_snapshot()) % 4294967296)::text, true);
INSERT INTO pgpulse.schedule (monitor_id, is_active, parked, next_check_at, last_scheduled_at, check_interval_seconds, preferred_region, allow_fallback, criticality, check_regions, check_spec)
    SELECT m.id, m.is_active,
           CASE WHEN m.next_check_at = '9999-12-31 23:59:59+00'
                THEN coalesce(p.problem, 'url: ' || coalesce(pgpulse.url_problem(m.url), 'refused'))
                ELSE p.problem END,
           m.next_check_at, m.last_scheduled_at, m.check_interval_seconds, m.preferred_region,
           m.allow_fallback, m.criticality, m.check_regions, m.check_spec
      FROM public.monitors m
     CROSS JOIN LATERAL (SELECT pgpulse._schedule_problem(
                                    m.check_interval_seconds, m.url, m.method, m.timeout_ms,
                                    m.expected_status, m.check_retries, m.check_retry_delay_ms,
                                    m.criticality, m.check_regions) AS problem) p;

-- Monitors that hold what pgpulse refuses now (a URL the stricter checks refuse) are parked:
-- kept, never due, until fixed; the product's rows are not written.
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

-- Writers of the product's table wait from here to the commit; readers do not. Rows
-- written since the backfill are copied again (only those: an xmin younger than the
-- backfill's snapshot, which frozen rows never are), rows deleted since go.
LOCK TABLE public.monitors IN SHARE ROW EXCLUSIVE MODE;
-- (its foreign key locks the windows against writers: only once the product's writers wait,
-- whose 0016 triggers count skipped slots in them)
-- Slots that a tick or a "schedule now" did not write because they fell in a maintenance
-- window, appended per chunk (a product's transaction may write jobs: it never locks a row
-- the tick updates); the tick folds them into maintenance_windows.skipped_slots.
CREATE TABLE pgpulse.maintenance_skips (
    -- a key: a table without one cannot be deleted from under a FOR ALL TABLES publication
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    window_id bigint NOT NULL REFERENCES pgpulse.maintenance_windows (id) ON DELETE CASCADE,
    slots     bigint NOT NULL
);
CREATE INDEX maintenance_skips_window ON pgpulse.maintenance_skips (window_id);
DELETE FROM pgpulse.schedule s
 WHERE NOT EXISTS (SELECT 1 FROM public.monitors m WHERE m.id = s.monitor_id);
INSERT INTO pgpulse.schedule AS s (monitor_id, is_active, parked, next_check_at, last_scheduled_at, check_interval_seconds, preferred_region, allow_fallback, criticality, check_regions, check_spec)
    SELECT m.id, m.is_active,
           CASE WHEN m.next_check_at = '9999-12-31 23:59:59+00'
                THEN coalesce(p.problem, 'url: ' || coalesce(pgpulse.url_problem(m.url), 'refused'))
                ELSE p.problem END,
           m.next_check_at, m.last_scheduled_at, m.check_interval_seconds, m.preferred_region,
           m.allow_fallback, m.criticality, m.check_regions, m.check_spec
      FROM public.monitors m
     CROSS JOIN LATERAL (SELECT pgpulse._schedule_problem(
                                    m.check_interval_seconds, m.url, m.method, m.timeout_ms,
                                    m.expected_status, m.check_retries, m.check_retry_delay_ms,
                                    m.criticality, m.check_regions) AS problem) p
     WHERE age(m.xmin) <= age(current_setting('pgpulse.backfill_xmin')::xid)
       AND NOT EXISTS (
           SELECT 1 FROM pgpulse.schedule o
            WHERE o.monitor_id = m.id
              AND (o.next_check_at, o.last_scheduled_at, o.is_active, o.check_interval_seconds,
                   o.preferred_region, o.allow_fallback, o.criticality, o.check_regions,
                   o.check_spec)
                  IS NOT DISTINCT FROM
                  (m.next_check_at, m.last_scheduled_at, m.is_active, m.check_interval_seconds,
                   m.preferred_region, m.allow_fallback, m.criticality, m.check_regions,
                   m.check_spec))
    ON CONFLICT (monitor_id) DO UPDATE
   SET is_active = excluded.is_active, parked = excluded.parked,
       next_check_at = excluded.next_check_at, last_scheduled_at = excluded.last_scheduled_at,
       check_interval_seconds = excluded.check_interval_seconds,
       preferred_region = excluded.preferred_region, allow_fallback = excluded.allow_fallback,
       criticality = excluded.criticality, check_regions = excluded.check_regions,
       check_spec = excluded.check_spec;

DROP TRIGGER IF EXISTS monitors_interval ON public.monitors;
DROP TRIGGER IF EXISTS monitors_check_regions ON public.monitors;
DROP TRIGGER IF EXISTS monitors_check_spec ON public.monitors;
DROP TRIGGER IF EXISTS monitors_set_phase ON public.monitors;
DROP TRIGGER IF EXISTS monitors_rephase ON public.monitors;
DROP TRIGGER IF EXISTS monitors_update_jobs ON public.monitors;
DROP TRIGGER IF EXISTS monitors_deactivated_drop_jobs ON public.monitors;
DROP TRIGGER IF EXISTS monitors_deleted_drop_jobs ON public.monitors;
DROP TRIGGER IF EXISTS monitors_url_checked ON public.monitors;
DROP TRIGGER IF EXISTS monitors_url_parked ON public.monitors;
DROP TRIGGER IF EXISTS monitors_inserted_schedule_now ON public.monitors;
DROP TRIGGER IF EXISTS monitors_rephased_schedule_now ON public.monitors;

CREATE TRIGGER pgpulse_follow_insert
    AFTER INSERT ON public.monitors
    REFERENCING NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_insert();

-- An UPDATE: _follow_update after the statement, with its old and new rows, told by
-- _follow_update_named (before it) whether the statement names a followed column or the id
-- (an UPDATE of the product's other columns pays only for the transition tables).
CREATE TRIGGER pgpulse_follow_update_id_named
    BEFORE UPDATE OF id ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update_named('id');

CREATE TRIGGER pgpulse_follow_update_named
    BEFORE UPDATE OF url, method, timeout_ms, expected_status, check_retries,
                     check_retry_delay_ms, check_interval_minutes, check_interval_seconds,
                     is_active, preferred_region, allow_fallback, criticality, next_check_at,
                     check_regions
    ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update_named('columns');

CREATE TRIGGER pgpulse_follow_update
    AFTER UPDATE ON public.monitors
    REFERENCING OLD TABLE AS old_monitors NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_update();

CREATE TRIGGER pgpulse_follow_delete
    AFTER DELETE ON public.monitors
    REFERENCING OLD TABLE AS old_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_delete();

CREATE TRIGGER pgpulse_follow_truncate
    AFTER TRUNCATE ON public.monitors
    FOR EACH STATEMENT EXECUTE FUNCTION pgpulse._follow_truncate();

-- What pgpulse put on the product's table goes. An adopted table's record
-- (pgpulse.adoption) keeps how to put each back, for a downgrade.
DO $release$
DECLARE
    v_adopted boolean := to_regclass('pgpulse.adoption') IS NOT NULL;
    v record;
BEGIN
    IF v_adopted THEN
        ALTER TABLE pgpulse.adoption DROP CONSTRAINT adoption_kind_known;
        ALTER TABLE pgpulse.adoption ADD CONSTRAINT adoption_kind_known
            CHECK (kind IN ('column', 'index', 'trigger', 'released'));
    END IF;
    FOR v IN SELECT c.conname, pg_get_constraintdef(c.oid) AS definition
               FROM pg_constraint c
              WHERE c.conrelid = 'public.monitors'::regclass
                AND (c.conname = ANY (ARRAY['monitor_method_known', 'monitor_timeout_100ms_to_120s', 'monitor_expected_status_http', 'monitor_check_retries_0_to_5', 'monitor_check_retry_delay', 'monitor_interval_1_to_1440_minutes', 'monitor_criticality_known', 'monitor_interval_seconds_10_to_86400', 'monitor_check_regions_list', 'monitor_next_check_at_finite', 'monitors_preferred_region_fkey'])
                     OR c.confrelid = 'pgpulse.regions'::regclass)
              ORDER BY c.conname LOOP
        IF v_adopted THEN
            INSERT INTO pgpulse.adoption (kind, name)
            VALUES ('released', format('ADD CONSTRAINT %I %s', v.conname, v.definition));
        END IF;
        EXECUTE format('ALTER TABLE public.monitors DROP CONSTRAINT %I', v.conname);
    END LOOP;
    FOR v IN SELECT a.attname FROM pg_attribute a
              WHERE a.attrelid = 'public.monitors'::regclass AND a.attnotnull
                AND a.attname = ANY (ARRAY['next_check_at', 'check_interval_seconds']) LOOP
        IF v_adopted THEN
            INSERT INTO pgpulse.adoption (kind, name)
            VALUES ('released', format('ALTER COLUMN %I SET NOT NULL', v.attname));
        END IF;
        EXECUTE format('ALTER TABLE public.monitors ALTER COLUMN %I DROP NOT NULL', v.attname);
    END LOOP;
    IF v_adopted THEN
        INSERT INTO pgpulse.adoption (kind, name)
        SELECT 'released', format('ADD COLUMN check_spec %s%s%s', format_type(a.atttypid, a.atttypmod),
                                  CASE WHEN a.attgenerated = 's'
                                       THEN format(' GENERATED ALWAYS AS (%s) STORED',
                                                   pg_get_expr(d.adbin, d.adrelid)) END,
                                  CASE WHEN a.attnotnull THEN ' NOT NULL' END)
          FROM pg_attribute a
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = 'public.monitors'::regclass AND a.attname = 'check_spec'
           AND NOT a.attisdropped;
        DELETE FROM pgpulse.adoption
         WHERE (kind, name) IN (('column', 'check_spec'), ('index', 'monitors_due'),
                                ('trigger', 'monitors_set_phase'));
    END IF;
END
$release$;
DROP INDEX IF EXISTS public.monitors_due;
ALTER TABLE public.monitors DROP COLUMN check_spec;

DROP FUNCTION pgpulse._monitor_set_phase(),
    pgpulse._monitor_check_spec(),
    pgpulse._monitor_interval(),
    pgpulse._monitor_check_regions(),
    pgpulse._monitor_rephase(),
    pgpulse._monitor_drop_jobs(),
    pgpulse._monitor_update_jobs(),
    pgpulse._monitor_url_checked(),
    pgpulse._monitors_inserted(),
    pgpulse._monitor_rephased(),
    pgpulse._schedule_now(text[]),
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]);

-- For the product: each monitor's next slot, when pgpulse last scheduled it, and why it is
-- parked (NULL: it is scheduled). security_invoker, through the product's own table: its
-- row-level security decides which monitors a role sees here.
CREATE VIEW pgpulse.monitor_schedule WITH (security_invoker = true) AS
SELECT m.id AS monitor_id, s.next_check_at, s.last_scheduled_at, s.parked, s.is_active
  FROM public.monitors m
  JOIN pgpulse.schedule s ON s.monitor_id = m.id;
COMMENT ON VIEW pgpulse.monitor_schedule IS
    'next_check_at, last_scheduled_at and why a monitor is parked, per product monitor';

REVOKE EXECUTE ON FUNCTION
    pgpulse._follow_insert(),
    pgpulse._follow_update(),
    pgpulse._follow_delete(),
    pgpulse._follow_truncate(),
    pgpulse._follow_update_named(),
    pgpulse._follow_change(pgpulse.follow_log),
    pgpulse._follow_entries(pgpulse.follow_log[]),
    pgpulse._region_renamed(),
    pgpulse.check_now(text),
    pgpulse._schedule_now(tid[]),
    pgpulse._schedule_insert(anyarray, boolean),
    pgpulse.follow_apply(integer),
    pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], tid[])
    FROM PUBLIC;
GRANT USAGE ON SCHEMA pgpulse TO PUBLIC;
GRANT SELECT (monitor_id, next_check_at, last_scheduled_at, parked, is_active)
    ON pgpulse.schedule TO PUBLIC;
GRANT SELECT ON pgpulse.monitor_schedule TO PUBLIC;

-- Checks a tick's arguments, follows what bulk writes logged, and opens its run record;
-- returns its deadline.
CREATE OR REPLACE FUNCTION pgpulse._tick_begin(
    p_trigger text, p_budget interval, p_lookahead interval, p_chunk integer,
    OUT run_id bigint, OUT deadline timestamptz, OUT rr bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
BEGIN
    -- a tick runs every minute and must end inside it
    IF p_budget IS NULL OR p_budget <= interval '0' OR p_budget > interval '55 seconds' THEN
        RAISE EXCEPTION 'pgpulse.tick: budget must be more than 0 and at most 55 seconds, not %',
            coalesce(p_budget::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lookahead IS NULL OR p_lookahead < interval '0' OR p_lookahead > interval '10 minutes' THEN
        RAISE EXCEPTION 'pgpulse.tick: lookahead must be 0 to 10 minutes, not %',
            coalesce(p_lookahead::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_chunk IS NULL OR p_chunk NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'pgpulse.tick: chunk must be 1 to 100000 monitors, not %',
            coalesce(p_chunk::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    deadline := v_started + p_budget;
    rr := floor(random() * 1000000)::bigint;
    PERFORM pgpulse._tick_bound_lock_wait(deadline);
    -- product rows that bulk writes logged are followed first, so this tick schedules them
    -- (the relay, woken when they were logged, has mostly done it already)
    BEGIN
        PERFORM pgpulse.follow_apply(100000);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pgpulse.tick: could not follow the rows bulk writes logged (%); the '
            'relay or the next tick will', SQLERRM;
    END;
    INSERT INTO pgpulse.tick_runs (trigger, started_at, budget_ms, lookahead_ms)
    VALUES (p_trigger, v_started, round(extract(epoch FROM p_budget) * 1000),
            round(extract(epoch FROM p_lookahead) * 1000))
    RETURNING id INTO run_id;
END
$$;

-- Issue 25: the alert evaluator's lease (pooler-safe, instead of a session advisory lock),
-- the record of the roles and the extension pgpulse creates, and what 0003 and this
-- release added to an adopted monitors table, listed in its adoption record.
CREATE TABLE pgpulse.leases (
    name       text PRIMARY KEY,
    holder     text NOT NULL,                     -- host:pid:nonce of the process
    taken_at   timestamptz NOT NULL,              -- since when this holder has it
    expires_at timestamptz NOT NULL
);

CREATE TABLE pgpulse.created (
    kind       text NOT NULL CONSTRAINT created_kind_known CHECK (kind IN ('role', 'extension')),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT created_once PRIMARY KEY (kind, name)
);

DO $adopted$
BEGIN
    IF to_regclass('pgpulse.adoption') IS NOT NULL THEN
        INSERT INTO pgpulse.adoption (kind, name)
        VALUES ('column', 'check_interval_seconds'), ('column', 'check_regions'),
               ('trigger', 'pgpulse_follow_insert'), ('trigger', 'pgpulse_follow_update'),
               ('trigger', 'pgpulse_follow_update_named'),
               ('trigger', 'pgpulse_follow_update_id_named'),
               ('trigger', 'pgpulse_follow_delete'), ('trigger', 'pgpulse_follow_truncate')
        ON CONFLICT DO NOTHING;
    END IF;
END
$adopted$;

-- Check results back in PostgreSQL (issue 24): workers acknowledge with results, the relay
-- ingests them (sql/90_results.sql); a region whose workers are gone is marked so by the
-- relay and routed around like an unhealthy one (sql/10_tables.sql, sql/60_routing.sql).
ALTER TABLE pgpulse.regions
    ADD COLUMN workers_absent boolean NOT NULL DEFAULT false,
    ADD COLUMN workers_absent_since timestamptz;

CREATE OR REPLACE FUNCTION pgpulse._routing(OUT route jsonb, OUT wheel text[])
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_default  text;
    v_any_open boolean;
BEGIN
    SELECT min(code) FILTER (WHERE is_default AND enabled AND healthy AND NOT workers_absent),
           coalesce(bool_or(enabled AND healthy AND NOT workers_absent), false)
      INTO v_default, v_any_open
      FROM pgpulse.regions;
    SELECT jsonb_object_agg(p.code, coalesce(
               CASE WHEN p.enabled AND p.healthy AND NOT p.workers_absent THEN p.code END,
               CASE WHEN f.enabled AND f.healthy AND NOT f.workers_absent THEN f.code END,
               v_default,
               CASE WHEN p.enabled AND NOT v_any_open THEN p.code END))
      INTO route
      FROM pgpulse.regions p
      LEFT JOIN pgpulse.regions f ON f.code = p.fallback_region;
    SELECT array_agg(r.code ORDER BY r.code, g) INTO wheel
      FROM (SELECT code, weight,
                   dense_rank() OVER (ORDER BY (healthy AND NOT workers_absent AND NOT degraded) DESC,
                                               (healthy AND NOT workers_absent) DESC) AS tier
              FROM pgpulse.regions WHERE enabled AND weight > 0) r,
           generate_series(1, r.weight) g
     WHERE r.tier = 1;
END
$$;

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

-- the product's own id type (an adopted table's bigint or text), as the outbox has it
DO $results_id_type$
DECLARE
    v_type text := (SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                     WHERE attrelid = 'pgpulse.outbox'::regclass AND attname = 'monitor_id');
BEGIN
    IF v_type <> 'uuid' THEN
        EXECUTE format('ALTER TABLE pgpulse.results_latest ALTER COLUMN monitor_id TYPE %s USING NULL', v_type);
        EXECUTE format('ALTER TABLE pgpulse.results_history ALTER COLUMN monitor_id TYPE %s USING NULL', v_type);
    END IF;
END
$results_id_type$;

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
