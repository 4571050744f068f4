-- Credentials out of what is audited and read. An outbox destination's URL may carry a token
-- in its query (a webhook receiver's key); the audit trail, readable by QA and auditors,
-- showed it whole, and an MQTT destination's URL carried the broker password. The URL is
-- now audited as shown (credentials as ***), and an MQTT password lives in `secret`, which
-- is never copied into the trail. Rows of the trail from before stay as they are: it is
-- append-only. Rotate the passwords and tokens it holds (README, "Deployment").

-- The same rule as coldtrail.redact.redact_url, for what the database itself writes.
CREATE FUNCTION coldtrail_redact_url(url text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT regexp_replace(
        regexp_replace(url, '(://[^:/@?#]*):[^@/?#]*@', '\1:***@'),
        '([?&][^=&#]*(pass|secret|token|key|sig|auth|credential)[^=&#]*)=[^&#]*', '\1=***',
        'gi')
$$;

ALTER TABLE outbox_destinations
    ADD COLUMN url_shown text GENERATED ALWAYS AS (coldtrail_redact_url(url)) STORED;
DROP TRIGGER audit ON outbox_destinations;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON outbox_destinations
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('name', 'secret,url');

-- An MQTT destination's password moves from its URL to `secret` (unused by MQTT before);
-- after the trigger above, so the move itself is audited without it.
UPDATE outbox_destinations
SET secret = coalesce(secret, substring(url FROM '://[^:/@?#]*:([^@/?#]*)@')),
    url = regexp_replace(url, '(://[^:/@?#]*):[^@/?#]*@', '\1@')
WHERE kind = 'mqtt' AND url ~ '://[^:/@?#]*:[^@/?#]*@';

-- An alarm contact's target may be a webhook with its key in the query, the same way.
ALTER TABLE alarm_contacts
    ADD COLUMN target_shown text GENERATED ALWAYS AS (coldtrail_redact_url(target)) STORED;
DROP TRIGGER audit ON alarm_contacts;
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON alarm_contacts
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id', 'target');
