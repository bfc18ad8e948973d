-- Revision 0011: the URL is checked when it is written (trigger monitors_url_checked, which
-- raises under this constraint's name), not again on each of the tick's updates. An adopted
-- table never had this constraint.
ALTER TABLE public.monitors DROP CONSTRAINT IF EXISTS monitor_url_http;
