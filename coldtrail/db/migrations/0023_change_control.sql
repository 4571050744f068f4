-- Change control: the settings the rules judge goods by (a place's range and alarm delay, a
-- storage profile's, the profile a product is stored under, the compliance regime a site is
-- held to) change only as a change record with its reason, signed in the same transaction by QA (21 CFR 11.10(k), EU GMP
-- Annex 11 §10). A validation pack lists the changes since the last validation.
CREATE TABLE changes (
    id          bigserial PRIMARY KEY,
    subject     text NOT NULL
                CHECK (subject IN ('location', 'temperature_profile', 'product', 'site')),
    subject_id  text NOT NULL,
    site_id     text REFERENCES sites (id),
    before      jsonb NOT NULL,
    after       jsonb NOT NULL,
    reason      text NOT NULL CHECK (btrim(reason) <> ''),
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL,
    txid        bigint NOT NULL DEFAULT txid_current()
);
CREATE INDEX changes_subject ON changes (subject, subject_id, changed_at);
CREATE INDEX changes_at ON changes (changed_at);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON changes
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER changes_append_only BEFORE UPDATE OR DELETE ON changes
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();
GRANT SELECT, INSERT ON changes TO coldtrail_app;
GRANT USAGE, SELECT ON SEQUENCE changes_id_seq TO coldtrail_app;
GRANT SELECT ON changes TO coldtrail_readonly;

-- Checked at commit, when the change record and its signature made in the same transaction
-- are there. A superuser (migrations, a restore) is not held to it; every change it makes
-- is in the audit trail all the same.
CREATE FUNCTION coldtrail_change_signed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (
        SELECT FROM changes c
        JOIN signatures s ON s.record_type = 'change' AND s.record_id = c.id
        JOIN users u ON u.username = s.signer AND u.role = 'qa'
        WHERE c.subject = TG_ARGV[0] AND c.txid = txid_current()
          AND c.subject_id = to_jsonb(NEW) ->> TG_ARGV[1]
    ) THEN
        RAISE EXCEPTION 'the limits of % % change only as a change signed by QA with a reason',
            replace(TG_ARGV[0], '_', ' '), to_jsonb(NEW) ->> TG_ARGV[1];
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER locations_change_signed AFTER UPDATE ON locations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((OLD.temp_min_c, OLD.temp_max_c, OLD.rh_min_pct, OLD.rh_max_pct, OLD.alarm_delay_s)
          IS DISTINCT FROM
          (NEW.temp_min_c, NEW.temp_max_c, NEW.rh_min_pct, NEW.rh_max_pct, NEW.alarm_delay_s))
    EXECUTE FUNCTION coldtrail_change_signed('location', 'id');
CREATE CONSTRAINT TRIGGER temperature_profiles_change_signed AFTER UPDATE ON temperature_profiles
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((OLD.temp_min_c, OLD.temp_max_c, OLD.rh_min_pct, OLD.rh_max_pct, OLD.alarm_delay_s,
           OLD.stability_budget_min, OLD.mkt_max_c, OLD.hold_on_excursion, OLD.release_signatures)
          IS DISTINCT FROM
          (NEW.temp_min_c, NEW.temp_max_c, NEW.rh_min_pct, NEW.rh_max_pct, NEW.alarm_delay_s,
           NEW.stability_budget_min, NEW.mkt_max_c, NEW.hold_on_excursion, NEW.release_signatures))
    EXECUTE FUNCTION coldtrail_change_signed('temperature_profile', 'id');
CREATE CONSTRAINT TRIGGER sites_change_signed AFTER UPDATE ON sites
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.compliance_profile IS DISTINCT FROM NEW.compliance_profile)
    EXECUTE FUNCTION coldtrail_change_signed('site', 'id');
CREATE CONSTRAINT TRIGGER products_change_signed AFTER UPDATE ON products
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.profile_id IS DISTINCT FROM NEW.profile_id)
    EXECUTE FUNCTION coldtrail_change_signed('product', 'gtin');

-- Each validation run kept whole (its JSON document, and the SHA-256 of the document as
-- first written): signed for execution and QA review like any record, and the point the next
-- pack lists the changes from.
CREATE TABLE validation_runs (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('iq', 'oq', 'pack')),
    site_id     text,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    passed      boolean NOT NULL,
    cases       integer NOT NULL,
    deviations  integer NOT NULL,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    document    jsonb NOT NULL,
    run_by      text NOT NULL
);
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON validation_runs
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER validation_runs_append_only BEFORE UPDATE OR DELETE ON validation_runs
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();
GRANT SELECT, INSERT ON validation_runs TO coldtrail_app;
GRANT USAGE, SELECT ON SEQUENCE validation_runs_id_seq TO coldtrail_app;
GRANT SELECT ON validation_runs TO coldtrail_readonly;
