-- Revision 0011 down: the CHECK as revision 0001 made it, on a table pgpulse created (an
-- adopted table never had it). Every URL written since passed the stricter trigger.
DO $$
BEGIN
    IF to_regclass('pgpulse.adoption') IS NULL THEN  -- created by pgpulse, not adopted
        ALTER TABLE public.monitors ADD CONSTRAINT monitor_url_http CHECK (
            url ~ '^https?://[^\s/?#@]+(:[0-9]{1,5})?([/?#]\S*)?$' AND length(url) <= 2048);
    END IF;
END
$$;
