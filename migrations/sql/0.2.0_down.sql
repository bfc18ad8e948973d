-- Release 0.2.0 (unreleased), downgrade to 0016: the inverse of each change in 0.2.0.sql,
-- the latest change first. 0009_roles.sql and 0007_cron.sql, applied after this file, give
-- the roles and the pg_cron jobs back their 0016 rights and commands.

-- URL checks (issue 26), undone: url_problem as 0016 had it; the monitors only the new rules
-- refused are scheduled again.
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
        RAISE EXCEPTION 'pgpulse.allow_private_targets must be on or off, not "%"', v_switch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_url IS NULL THEN
        RETURN NULL;
    ELSIF length(p_url) <= 2048
          -- the usual URL, a public-looking DNS name in lower case (up to 63 characters
          -- with the port), port 1-9999 or none, printable ASCII without a backslash after
          -- it, is fine: no need to take it apart (a tenth of the time)
          AND length(split_part(p_url, '/', 3)) <= 63
          AND p_url ~ '^https?://([a-z0-9-]+\.)+[a-z][a-z0-9-]*(:[1-9][0-9]?[0-9]?[0-9]?)?([/?#][!-\[\]-~]*)?$'
          AND p_url !~ '^https?://[^/?#]*\.(localhost|internal|local|localdomain|lan|intranet|corp|arpa|goog)(:|/|\?|#|$)' THEN
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
        -- a name, as a worker's URL parser sees it: IDNA maps full-width characters and
        -- ideographic full stops to ASCII (１２７。０。０。１ is 127.0.0.1); a final dot
        -- names the same host
        v_name := lower(v_host);
        IF v_name ~ '[^\x01-\x7f]' THEN
            IF current_setting('server_encoding') <> 'UTF8' THEN
                RETURN format('host %s is not ASCII (write it as punycode, xn--...)', v_host);
            END IF;
            v_name := translate(lower(normalize(v_name, NFKC)), '。．｡', '...');
        END IF;
        IF right(v_name, 1) = '.' THEN
            v_name := left(v_name, -1);
        END IF;
        IF v_name = '' OR v_name ~ '(^|\.)(\.|$)' THEN
            RETURN format('host %s has an empty label', v_host);
        ELSIF regexp_replace(v_name, '[^\x01-\x7f]', '', 'g') !~ '^[a-z0-9._-]*$' THEN
            RETURN format('host %s has characters a host name cannot have', v_host);
        ELSIF length(v_name) > 253 OR v_name ~ '[^.]{64}' THEN
            RETURN format('host %s is longer than DNS allows', left(v_host, 80));
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
        ELSIF v_name IN ('localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback')
              OR v_name LIKE '%.localhost' THEN
            RETURN format('host %s is loopback (allowed only with pgpulse.allow_private_targets = on)',
                          v_host);
        ELSIF v_name ~ '(^|\.)(internal|local|localdomain|lan|intranet|corp|home\.arpa)$' THEN
            RETURN format('host %s is a private network name (allowed only with '
                          'pgpulse.allow_private_targets = on)', v_host);
        ELSE
            RETURN NULL;
        END IF;
    END IF;

    -- an IPv6 address that embeds an IPv4 one (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d,
    -- NAT64 64:ff9b::a.b.c.d) reaches that one
    v_v4 := v_ip;
    IF family(v_ip) = 6 AND (v_ip << '::ffff:0:0/96' OR v_ip << '64:ff9b::/96'
                             OR (v_ip << '::/96' AND v_ip > '::1')) THEN
        v_v4 := '0.0.0.0'::inet + (v_ip - network(set_masklen(v_ip, 96)));
    END IF;
    v_kind := CASE
        WHEN v_v4 IN ('169.254.169.254', '169.254.170.2', '100.100.100.200', 'fd00:ec2::254')
            THEN 'a cloud metadata endpoint'
        WHEN v_v4 << '127.0.0.0/8' OR v_v4 = '::1' THEN 'loopback'
        WHEN v_v4 << '169.254.0.0/16' OR v_v4 << 'fe80::/10' THEN 'link-local'
        WHEN v_v4 << '0.0.0.0/8' OR v_v4 = '0.0.0.0' OR v_v4 = '::' THEN 'the unspecified address'
        WHEN v_v4 << '10.0.0.0/8' OR v_v4 << '172.16.0.0/12' OR v_v4 << '192.168.0.0/16'
             OR v_v4 << '100.64.0.0/10' OR v_v4 << 'fc00::/7' OR v_v4 << 'fec0::/10' THEN 'private'
        WHEN v_v4 << '224.0.0.0/4' OR v_v4 << 'ff00::/8' THEN 'multicast'
        WHEN v_v4 << '240.0.0.0/4' OR v_v4 << '192.0.0.0/24' OR v_v4 << '198.18.0.0/15'
            THEN 'reserved'
    END;
    IF v_kind IS NULL OR (v_private AND v_kind <> 'a cloud metadata endpoint') THEN
        RETURN NULL;
    END IF;
    RETURN format('host %s is %s%s', v_shown,
                  CASE WHEN host(v_v4) <> v_host THEN host(v_v4) || ', ' END,
                  CASE WHEN v_kind = 'a cloud metadata endpoint'
                       THEN v_kind || ' (always refused)'
                       ELSE v_kind || ' (allowed only with pgpulse.allow_private_targets = on)' END);
END
$$;

DO $$
DECLARE
    v_resumed integer;
BEGIN
    SELECT r.resumed INTO v_resumed FROM pgpulse.recheck_monitor_urls() r;
    IF v_resumed > 0 THEN
        RAISE NOTICE 'pgpulse: % parked monitor(s) whose URL 0016 accepts are scheduled again',
            v_resumed;
    END IF;
END
$$;

-- The tick's steps and the monitors' job triggers go back to the migrating role; the owner
-- role keeps no right here (roles belong to the cluster: it stays). The relay's grants that
-- 0009_roles.sql makes after the ticker's are taken first, to come back in 0016's order.
ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
    SECURITY INVOKER;
ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) SECURITY INVOKER;
DO $owner$
BEGIN
    IF to_regrole('pgpulse_owner') IS NULL THEN
        RETURN;
    END IF;
    ALTER FUNCTION pgpulse._tick_begin(text, interval, interval, integer) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_step(bigint, timestamptz, interval, integer, bigint, text[], interval)
        OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._tick_finish(bigint, timestamptz, interval, text) OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_drop_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_update_jobs() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._outbox_requeue_current() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitors_inserted() OWNER TO CURRENT_USER;
    ALTER FUNCTION pgpulse._monitor_rephased() OWNER TO CURRENT_USER;
    REVOKE ALL ON public.monitors, pgpulse.regions, pgpulse.outbox, pgpulse.tick_runs,
        pgpulse.dead_letters, pgpulse.maintenance_windows FROM pgpulse_owner;
    REVOKE ALL ON FUNCTION
        pgpulse._tick_chunk(timestamptz, integer, bigint, jsonb, text[], boolean, timestamptz, text[], text[]),
        pgpulse._tick_bound_lock_wait(timestamptz),
        pgpulse._routing(),
        pgpulse._unrouted(timestamptz, jsonb, integer)
        FROM pgpulse_owner;
    REVOKE ALL ON SCHEMA pgpulse FROM pgpulse_owner;
    IF to_regrole('pgpulse_relay') IS NOT NULL THEN
        REVOKE SELECT ON pgpulse.maintenance_windows FROM pgpulse_relay;
        REVOKE EXECUTE ON FUNCTION pgpulse._routing() FROM pgpulse_relay;
    END IF;
END
$owner$;
