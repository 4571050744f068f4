-- Conformance over time: each check of a site against its profile is kept with what it found,
-- so each kind of finding is a KPI over time (the health dashboard, the console), and a site
-- with none is kept too (a zero on the chart, not a gap).
CREATE TABLE conformance_checks (
    id          bigserial PRIMARY KEY,
    checked_at  timestamptz NOT NULL,
    site_id     text NOT NULL REFERENCES sites (id),
    profile     text NOT NULL,
    findings    integer NOT NULL CHECK (findings >= 0)
);
CREATE INDEX conformance_checks_site_at ON conformance_checks (site_id, checked_at);
CREATE INDEX conformance_checks_at ON conformance_checks (checked_at);
CREATE TABLE conformance_findings (
    check_id    bigint NOT NULL REFERENCES conformance_checks (id),
    rule        text NOT NULL,
    subject     text NOT NULL,
    found       text NOT NULL,
    required    text NOT NULL,
    source      text NOT NULL
);
CREATE INDEX conformance_findings_check ON conformance_findings (check_id);
GRANT SELECT, INSERT ON conformance_checks, conformance_findings TO coldtrail_app;
GRANT USAGE, SELECT ON SEQUENCE conformance_checks_id_seq TO coldtrail_app;
GRANT SELECT ON conformance_checks, conformance_findings TO coldtrail_readonly;
