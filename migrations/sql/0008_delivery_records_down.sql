-- Revision 0008 downgrade: the records go; dead letters lose allow_fallback.
DROP TABLE pgpulse.region_observations;
DROP TABLE pgpulse.push_intents;
ALTER TABLE pgpulse.dead_letters DROP COLUMN allow_fallback;
