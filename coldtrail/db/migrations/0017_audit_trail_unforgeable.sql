-- The audit trail no longer trusts anything the application's role can set.
--
-- Before, the chain carried its state through the transaction in two settings
-- (coldtrail.audit_prev, coldtrail.audit_last) that any session may set: `SET LOCAL
-- coldtrail.audit_last = '0'` kept the head from moving (verify then reported rows at the end
-- removed, for good), a wrong audit_prev linked the next row to nothing. And the application's
-- role could insert audit rows itself, naming any actor.
--
-- Now the state comes from the tables alone: a transaction's own newest row is the one after
-- the head (only the transaction holding the head's lock can have written past it), and the
-- head is moved, at commit, to the newest row. Audit rows are written only by the functions
-- below, owned by the migrating role; an entry's actor is the one the transaction acts as.

CREATE OR REPLACE FUNCTION coldtrail_audit_chain() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev bytea;
BEGIN
    -- This transaction's newest row, if it has written one: it has held the head's lock since.
    SELECT a.hash INTO prev FROM audit_log a
    WHERE a.id > (SELECT last_id FROM audit_head) ORDER BY a.id DESC LIMIT 1;
    IF prev IS NULL THEN
        -- The first row: wait for the head (the latest version, once it is ours).
        SELECT hash INTO prev FROM audit_head FOR UPDATE;
    END IF;
    NEW.id := nextval('audit_log_id_seq');
    NEW.at := clock_timestamp();
    NEW.actor := coalesce(NULLIF(current_setting('coldtrail.actor', true), ''),
                          'db:' || session_user);
    NEW.prev_hash := prev;
    NEW.hash := sha256(coldtrail_audit_message(NEW));
    RETURN NEW;
END $$;

-- At commit: the newest row (no row after it) moves the head; the others find one after them.
CREATE OR REPLACE FUNCTION coldtrail_audit_head() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_log WHERE id > NEW.id) THEN
        UPDATE audit_head SET last_id = NEW.id, hash = NEW.hash;
    END IF;
    RETURN NULL;
END $$;

-- The row triggers of the GxP tables write with the owner's rights: the application's role
-- may no longer insert into audit_log.
ALTER FUNCTION coldtrail_audit_row() SECURITY DEFINER SET search_path = public, pg_temp;

-- An entry no table change carries (a login, a failed one, a signature, an export): named
-- after the user the transaction acts as (erp.tx.acting), and refused if it names another.
CREATE FUNCTION coldtrail_audit_record(
    actor text, action text, record_type text, record_id text, details jsonb
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    acting text := NULLIF(current_setting('coldtrail.actor', true), '');
BEGIN
    IF acting IS NULL OR actor IS DISTINCT FROM acting THEN
        RAISE EXCEPTION 'an audit entry names the user the transaction acts as (%), not %',
            coalesce(acting, 'nobody'), coalesce(actor, 'nobody')
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_log (actor, action, record_type, record_id, new_value)
    VALUES (actor, action, record_type, record_id, details);
END $$;

REVOKE INSERT ON audit_log FROM coldtrail_app;
