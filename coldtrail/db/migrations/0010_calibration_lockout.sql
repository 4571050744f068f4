-- Calibration certificates of sensors, and the lock-out of accounts after failed logins.

-- GSP: the record shows which probe produced each value and its calibration status then.
-- A single due date on the sensor can't say that for a value of last year, so each
-- certificate is kept, append-only, and a value is covered when a passed certificate's
-- [calibrated_on, valid_until] holds its date.
CREATE TABLE calibration_certificates (
    id               bigserial PRIMARY KEY,
    sensor_id        text NOT NULL REFERENCES sensors,
    certificate_no   text NOT NULL CHECK (btrim(certificate_no) <> ''),
    issuer           text NOT NULL CHECK (btrim(issuer) <> ''),
    calibrated_on    date NOT NULL,
    valid_until      date NOT NULL,
    passed           boolean NOT NULL,
    max_error_c      double precision CHECK (max_error_c >= 0),
    document_sha256  bytea CHECK (length(document_sha256) = 32),
    recorded_by      text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until > calibrated_on),
    UNIQUE (sensor_id, certificate_no)
);
CREATE INDEX calibration_certificates_sensor ON calibration_certificates (sensor_id, calibrated_on);
CREATE TRIGGER calibration_certificates_append_only BEFORE UPDATE OR DELETE
    ON calibration_certificates FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON calibration_certificates
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
GRANT SELECT, INSERT ON calibration_certificates TO coldtrail_app;
GRANT USAGE, SELECT ON SEQUENCE calibration_certificates_id_seq TO coldtrail_app;

-- Consecutive failed logins per user name. Kept apart from `users`: each failure is already
-- in the audit trail as `login_failed`, and a counter on the audited row would add a
-- second entry per attempt.
CREATE TABLE login_failures (
    username      text PRIMARY KEY,
    failures      integer NOT NULL CHECK (failures >= 0),
    last_failed   timestamptz NOT NULL,
    locked_until  timestamptz
);
GRANT SELECT, INSERT, UPDATE, DELETE ON login_failures TO coldtrail_app;
