-- Revision 0004 downgrade.
DROP FUNCTION pgpulse.next_slot(anyelement, integer, timestamptz);
DROP FUNCTION pgpulse._slot_phase(anyelement, integer);
