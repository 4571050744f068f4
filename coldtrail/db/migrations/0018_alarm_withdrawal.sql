-- An alarm the record no longer supports is withdrawn, with the reason, as an excursion is:
-- a gap ("no record for 181 min") or a silence that late readings filled. It is no longer
-- active and no one is called for it; the row stays, and the trail keeps the change.
ALTER TABLE alarms
    ADD COLUMN withdrawn_at timestamptz,
    ADD COLUMN withdrawn_reason text,
    ADD CONSTRAINT alarms_withdrawn_with_reason
        CHECK ((withdrawn_at IS NULL) = (withdrawn_reason IS NULL));
