-- pgpulse schema, part 4 of 8: URL checks (which targets a worker may fetch, parking).

-- The problem with a monitor's URL as one line, or NULL when a worker may fetch it: http or
-- https, a host, port 1-65535, no whitespace or control characters, no user name or
-- password, at most 2048 characters, an ASCII host (a URL parser maps or drops characters
-- of a Unicode name: loc<U+00AD>alhost reaches localhost; internationalised names are
-- stored as A-labels, xn--...). A host that is an IP address (in any form a URL parser or
-- inet_aton reads: http://2130706433/, http://0x7f.1/, [::ffff:127.0.0.1], the IPv4 address
-- inside a NAT64, 6to4 or SIIT one) is refused when it is loopback, link-local,
-- unspecified, private (RFC 1918, 100.64/10, fc00::/7, 64:ff9b:1::/48), multicast or
-- reserved, and a name when it is loopback, single-label or a private network's (*.local,
-- *.internal, *.svc, ...), unless the setting pgpulse.allow_private_targets is on; cloud
-- metadata endpoints always. A name that resolves to such an address cannot be seen here:
-- workers refuse those (docs/queue-contract.md).
CREATE FUNCTION pgpulse.url_problem(p_url text)
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
CREATE FUNCTION pgpulse._schedule_row_problem(s pgpulse.schedule)
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
CREATE FUNCTION pgpulse.recheck_monitor_urls(OUT parked integer, OUT resumed integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH refused AS (
        UPDATE pgpulse.schedule s SET parked = p.problem
          FROM pgpulse.schedule o
         CROSS JOIN LATERAL pgpulse._schedule_row_problem(o) p(problem)
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
         WHERE s.parked IS NOT NULL AND pgpulse._schedule_row_problem(s) IS NULL
        RETURNING 1
    )
    SELECT count(*) INTO resumed FROM accepted;
END
$$;

-- Monitors whose check the rules refuse now, and whether they are parked.
CREATE FUNCTION pgpulse.monitor_url_problems()
RETURNS TABLE (monitor_id text, url text, problem text, parked boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.monitor_id::text, s.check_spec ->> 'url', p.problem, s.parked IS NOT NULL
      FROM pgpulse.schedule s
     CROSS JOIN LATERAL pgpulse._schedule_row_problem(s) p(problem)
     WHERE p.problem IS NOT NULL
     ORDER BY s.monitor_id::text
$$;
