-- What the rules raise beyond a probe's excursion: one excursion per place spanning its
-- probes, what it touched (lots, shipments, stability budgets), and alarms with escalation.

-- ------------------------------------------------------------- location excursions

-- A place is out of range while any of its probes is: the probes' overlapping excursions
-- make one location excursion, and holds, CAPA and budget charges follow that one, so a
-- room with two probes does not put its lots on hold twice.
CREATE TABLE location_excursions (
    id              bigserial PRIMARY KEY,
    location_id     text NOT NULL REFERENCES locations,
    started_at      timestamptz NOT NULL,
    ended_at        timestamptz,
    last_seen_at    timestamptz NOT NULL,
    state           excursion_state NOT NULL DEFAULT 'open',
    late            boolean NOT NULL DEFAULT false,
    sensors         text[] NOT NULL,
    limit_min_c     double precision,
    limit_max_c     double precision,
    min_c           double precision NOT NULL,
    max_c           double precision NOT NULL,
    duration_s      double precision NOT NULL,
    degree_minutes  double precision NOT NULL,   -- the probe with the largest area
    mkt_c           double precision,            -- the warmest probe's MKT over its excursion
    capa_id         bigint REFERENCES capas,
    detected_at     timestamptz NOT NULL,
    revision        integer NOT NULL DEFAULT 0,
    revised_at      timestamptz,
    CHECK (state <> 'open' OR ended_at IS NULL),
    CHECK (state <> 'closed' OR ended_at IS NOT NULL)
);
CREATE INDEX location_excursions_place ON location_excursions (location_id, started_at);

ALTER TABLE excursions ADD COLUMN location_excursion_id bigint REFERENCES location_excursions;
CREATE INDEX excursions_location_excursion ON excursions (location_excursion_id);

-- Each lot a location excursion touched: how long it was exposed (charged to its product's
-- stability budget) and the shipment it travelled on there, if any.
CREATE TABLE excursion_impacts (
    location_excursion_id  bigint NOT NULL REFERENCES location_excursions,
    lot_id                 bigint NOT NULL REFERENCES lots,
    shipment_id            text REFERENCES shipments,
    exposed_from           timestamptz NOT NULL,
    exposed_to             timestamptz NOT NULL,
    minutes                double precision NOT NULL CHECK (minutes >= 0),
    PRIMARY KEY (location_excursion_id, lot_id),
    CHECK (exposed_to >= exposed_from)
);
CREATE INDEX excursion_impacts_lot ON excursion_impacts (lot_id);

-- Holds follow the location excursion from now on. Excursions recorded before become
-- location excursions of one probe each, and their holds point at those.
ALTER TABLE location_excursions ADD COLUMN from_excursion bigint;
INSERT INTO location_excursions (location_id, started_at, ended_at, last_seen_at, state, late,
    sensors, limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c,
    detected_at, revision, revised_at, from_excursion)
SELECT location_id, started_at, ended_at, coalesce(last_seen_at, ended_at, started_at), state,
    late, ARRAY[sensor_id], limit_min_c, limit_max_c, min_c, max_c,
    coalesce(duration_s, extract(epoch FROM coalesce(ended_at, last_seen_at, started_at)
                                             - started_at)),
    coalesce(degree_minutes, 0), mkt_c, detected_at, revision, revised_at, id
FROM excursions ORDER BY id;
UPDATE excursions e SET location_excursion_id = le.id
FROM location_excursions le WHERE le.from_excursion = e.id;
ALTER TABLE holds DROP CONSTRAINT holds_excursion_id_fkey;
UPDATE holds h SET excursion_id = e.location_excursion_id
FROM excursions e WHERE e.id = h.excursion_id;
ALTER TABLE holds ADD CONSTRAINT holds_excursion_id_fkey
    FOREIGN KEY (excursion_id) REFERENCES location_excursions;
ALTER TABLE location_excursions DROP COLUMN from_excursion;

-- The moment a lot's summed exposure passed its profile's stability budget, once per lot.
CREATE TABLE budget_exhaustions (
    lot_id        bigint PRIMARY KEY REFERENCES lots,
    exhausted_at  timestamptz NOT NULL,
    used_min      double precision NOT NULL,
    budget_min    integer NOT NULL,
    hold_id       bigint REFERENCES holds
);

-- ------------------------------------------------------------------------ alarms

CREATE TYPE alarm_kind AS ENUM ('excursion', 'offline', 'unavailable', 'record_interval',
    'rapid_change', 'battery_low', 'calibration_overdue', 'humidity');

CREATE TABLE alarms (
    id                     bigserial PRIMARY KEY,
    -- What makes the alarm the same one when the rules look again (idempotent raising).
    key                    text NOT NULL UNIQUE,
    kind                   alarm_kind NOT NULL,
    sensor_id              text REFERENCES sensors,
    location_id            text REFERENCES locations,
    location_excursion_id  bigint REFERENCES location_excursions,
    started_at             timestamptz NOT NULL,   -- time of measurement the condition began
    ended_at               timestamptz,            -- and ended (NULL: still on)
    message                text NOT NULL,
    detail                 jsonb NOT NULL DEFAULT '{}',
    raised_at              timestamptz NOT NULL,
    -- The escalation step reached: contacts of levels up to this one have been called.
    level                  smallint NOT NULL DEFAULT 0,
    acknowledged_by        text REFERENCES users,
    acknowledged_at        timestamptz,
    ack_comment            text,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL)),
    CHECK (acknowledged_at IS NULL OR btrim(ack_comment) <> ''),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX alarms_unacknowledged ON alarms (raised_at) WHERE acknowledged_at IS NULL;
CREATE INDEX alarms_sensor ON alarms (sensor_id, started_at);

-- Who is called, how, and how long after the alarm was raised if nobody has acknowledged it.
-- Level 0 is called at once; level n after after_min minutes unacknowledged.
CREATE TABLE alarm_contacts (
    id         bigserial PRIMARY KEY,
    site_id    text REFERENCES sites,       -- NULL: every site
    level      smallint NOT NULL CHECK (level >= 0),
    after_min  integer NOT NULL CHECK (after_min >= 0),
    name       text NOT NULL CHECK (btrim(name) <> ''),
    channel    text NOT NULL,               -- a notifier's registered name
    target     text NOT NULL CHECK (btrim(target) <> ''),
    kinds      alarm_kind[],                -- NULL: every kind
    CHECK (level > 0 OR after_min = 0)
);

CREATE TABLE alarm_notifications (
    id               bigserial PRIMARY KEY,
    alarm_id         bigint NOT NULL REFERENCES alarms,
    contact_id       bigint NOT NULL REFERENCES alarm_contacts,
    level            smallint NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    sent_at          timestamptz,
    last_error       text,
    UNIQUE (alarm_id, contact_id)
);
CREATE INDEX alarm_notifications_due ON alarm_notifications (next_attempt_at)
    WHERE sent_at IS NULL;

-- ------------------------------------------------------------ audit, privileges

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON location_excursions
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON excursion_impacts
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('location_excursion_id,lot_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON budget_exhaustions
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('lot_id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON alarms
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON alarm_contacts
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER budget_exhaustions_append_only BEFORE UPDATE OR DELETE ON budget_exhaustions
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

GRANT SELECT, INSERT, UPDATE ON location_excursions, excursion_impacts, alarms,
    alarm_notifications TO coldtrail_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON alarm_contacts TO coldtrail_app;
GRANT SELECT, INSERT ON budget_exhaustions TO coldtrail_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO coldtrail_app;
REVOKE SELECT ON alarm_contacts FROM coldtrail_readonly;
