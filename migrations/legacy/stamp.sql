-- A legacy install becomes 0.2.0, part 3 of 3 (after 0.2.0_follow.sql): Alembic's version
-- row says 0.2.0, in pgpulse.alembic_version. Before 0002 the row was in public's table,
-- beside a host application's own rows: only pgpulse's goes, and the table only when empty.
CREATE TABLE pgpulse.alembic_version (version_num varchar(32) NOT NULL,
                                      CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO pgpulse.alembic_version VALUES ('0.2.0');
DO $version$
BEGIN
    IF to_regclass('public.alembic_version') IS NOT NULL THEN
        DELETE FROM public.alembic_version
         WHERE version_num IN ('0001', '0002', '0003', '0004', '0005', '0006', '0007', '0008',
                               '0009', '0010', '0011', '0012', '0013', '0014', '0015', '0016');
        IF NOT EXISTS (SELECT 1 FROM public.alembic_version) THEN
            DROP TABLE public.alembic_version;
        END IF;
    END IF;
END
$version$;
