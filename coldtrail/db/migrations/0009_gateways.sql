-- Edge gateways registered by name, each with its own MQTT credential. The broker's password
-- and ACL files are generated from this table (`coldtrail mosquitto-auth`), so a gateway can
-- publish only under its own topic and a stolen credential is revoked by disabling one row.

CREATE TABLE gateways (
    -- The gateway id is its MQTT user name and the fourth topic level: globally unique.
    id             text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    site_id        text NOT NULL REFERENCES sites,
    name           text NOT NULL,
    -- Mosquitto's own PBKDF2-SHA512 form ($7$...): the password itself is shown once, at
    -- registration or rotation, and never stored.
    mqtt_password_hash  text NOT NULL CHECK (mqtt_password_hash ~ '^\$7\$[0-9]+\$'),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz NOT NULL DEFAULT now(),
    -- `events` is the topic level of what ColdTrail itself publishes (coldtrail/v1/events/...).
    CHECK (site_id <> 'events')
);

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON gateways
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id', 'mqtt_password_hash');

GRANT SELECT, INSERT, UPDATE ON gateways TO coldtrail_app;
-- Grafana and reporting tools see which gateways exist, never their credentials.
REVOKE SELECT ON gateways FROM coldtrail_readonly;
GRANT SELECT (id, site_id, name, disabled, created_at, rotated_at) ON gateways
    TO coldtrail_readonly;
