-- Where the rules left each sensor: the newest reading judged, and the measurement time the
-- next judging must start from so that nothing still going at that reading is cut (a run
-- out of range not yet past its alarm delay, a span of unavailable readings, an open
-- condition). Live readings then cost a window of a few readings, not a fixed look-back.
-- Working state of the rules worker, not a GxP record: rebuilt by judging, not audited.
CREATE TABLE rules_cursors (
    sensor_id     text PRIMARY KEY REFERENCES sensors ON DELETE CASCADE,
    judged_until  timestamptz NOT NULL,
    resume_from   timestamptz NOT NULL CHECK (resume_from <= judged_until),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON rules_cursors TO coldtrail_app;
