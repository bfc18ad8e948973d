-- A legacy install (revisions 0001-0016, never released) becomes 0.2.0, part 1 of 3: its
-- schema steps aside (its objects keep working for the product's other sessions until this
-- transaction commits), and 0.2.0.sql then makes the release's schema beside it. The
-- product's monitors table is adopted again unless pgpulse made it (no adoption record).
SELECT set_config('pgpulse.legacy_table',
                  CASE WHEN to_regclass('pgpulse.adoption') IS NULL THEN 'created'
                       ELSE 'adopted' END, true);
ALTER SCHEMA pgpulse RENAME TO pgpulse_legacy;
