-- The ingest trust boundary. A gateway reports only for the sensors placed at a location of
-- its own site when they measured; a resend that disagrees with what is stored never
-- replaces it. What fails either rule is kept aside whole, with the rule that kept it.

CREATE TYPE kept_aside_rule AS ENUM (
    'unknown_sensor',      -- no such sensor is registered (released once it is)
    'not_at_site',         -- the sensor was not placed at the topic's site when it measured
    'gateway_site',        -- the gateway is registered at another site than its topic names
    'gateway_disabled',    -- the gateway is disabled
    'conflicting_resend'   -- (sensor, seq) is stored with another time or other values
);
ALTER TABLE quarantined_readings
    ADD COLUMN rule kept_aside_rule NOT NULL DEFAULT 'unknown_sensor',
    -- The site the topic named: what the placement rule was checked against.
    ADD COLUMN site_id text;
UPDATE quarantined_readings SET site_id = split_part(topic, '/', 3);
ALTER TABLE quarantined_readings ALTER COLUMN site_id SET NOT NULL;
-- Admins look at what each gateway got kept aside, newest first.
CREATE INDEX quarantined_readings_gateway ON quarantined_readings (gateway, received_at);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

-- Which sequence numbers of each sensor are stored, as ranges (a sensor's history is one or a
-- few of them), kept with its latest reading: the statement that moves the latest value after
-- a batch adds the batch's numbers and returns, under the row's lock, those that were there
-- already. Only such readings can repeat a stored one, and only they are looked up in
-- readings, whose key must include ts and so can't hold (sensor, seq) unique by itself.
-- Constant defaults: adding the columns rewrites nothing.
ALTER TABLE sensor_latest
    ADD COLUMN seqs int8multirange NOT NULL DEFAULT '{}',
    -- The numbers of the last batch that were stored already (read back through RETURNING).
    ADD COLUMN overlap int8multirange NOT NULL DEFAULT '{}';
UPDATE sensor_latest l SET seqs = s.seqs
FROM (SELECT sensor_id, range_agg(int8range(seq, seq, '[]')) AS seqs
      FROM readings GROUP BY sensor_id) s
WHERE s.sensor_id = l.sensor_id;

-- Ingest keeps who may report what in memory and reloads it when this number moves: every
-- change to sensors, placements, locations' sites or gateways moves it, in the transaction
-- that makes the change (a reload sees the change itself, never an older state).
CREATE TABLE ingest_trust_version (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint NOT NULL
);
INSERT INTO ingest_trust_version VALUES (true, 1);
GRANT SELECT, UPDATE ON ingest_trust_version TO coldtrail_app;
GRANT SELECT ON ingest_trust_version TO coldtrail_readonly;

CREATE FUNCTION coldtrail_ingest_trust_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ingest_trust_version SET version = version + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER ingest_trust AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sensor_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_ingest_trust_changed();
CREATE TRIGGER ingest_trust AFTER INSERT OR DELETE OR UPDATE OF id ON sensors
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_ingest_trust_changed();
CREATE TRIGGER ingest_trust AFTER INSERT OR DELETE OR UPDATE OF site_id ON locations
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_ingest_trust_changed();
CREATE TRIGGER ingest_trust AFTER INSERT OR DELETE OR UPDATE OF site_id, disabled ON gateways
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_ingest_trust_changed();

-- ColdTrail's own services take MQTT client ids starting with `coldtrail-`; the broker binds
-- each gateway to the client id of its own name, so no gateway may be named into that space
-- (it could then take over a service's session). Rows from before are left to the admin.
ALTER TABLE gateways ADD CONSTRAINT gateways_not_a_service_id
    CHECK (id !~* '^coldtrail-') NOT VALID;

-- An admin looks at one gateway's dead letters (the gateway is the topic's fourth level).
CREATE INDEX dead_letters_gateway ON dead_letters (split_part(topic, '/', 4), id);
