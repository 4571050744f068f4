-- The ERP core: products and their temperature profiles, lots, where each lot was and when,
-- shipments, holds with electronic signatures, CAPA, the hash-chained audit trail and the
-- outbox to other systems.
--
-- Business rules that must hold whoever writes (the API, the rules engine, a script, psql)
-- live here as triggers; they refuse with RAISE EXCEPTION (SQLSTATE P0001) and a sentence
-- the API passes on to the user as it is.

-- Database roles of a deployment: services log in as members of coldtrail_app, Grafana and
-- reporting tools as members of coldtrail_readonly. Neither may change or delete a GxP record.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coldtrail_app') THEN
        CREATE ROLE coldtrail_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'coldtrail_readonly') THEN
        CREATE ROLE coldtrail_readonly NOLOGIN;
    END IF;
END $$;

-- GMP: a quarantined lot is kept apart; these are the places it may go.
ALTER TABLE locations ADD COLUMN quarantine_area boolean NOT NULL DEFAULT false;

CREATE FUNCTION coldtrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is a GxP record: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- ---------------------------------------------------------------- products and lots

CREATE TABLE temperature_profiles (
    id                    text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name                  text NOT NULL,
    temp_min_c            double precision,
    temp_max_c            double precision,
    rh_min_pct            double precision,
    rh_max_pct            double precision,
    alarm_delay_s         integer NOT NULL DEFAULT 0 CHECK (alarm_delay_s >= 0),
    -- Total time out of range allowed over a lot's life, summed over every place (NULL: none).
    stability_budget_min  integer CHECK (stability_budget_min >= 0),
    mkt_max_c             double precision,
    hold_on_excursion     boolean NOT NULL DEFAULT true,
    -- Signatures a release needs: 2 for a QA reviewer and a second, different approver.
    release_signatures    smallint NOT NULL DEFAULT 1 CHECK (release_signatures IN (1, 2)),
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (temp_min_c IS NOT NULL OR temp_max_c IS NOT NULL),
    CHECK (temp_min_c IS NULL OR temp_max_c IS NULL OR temp_min_c < temp_max_c),
    CHECK (rh_min_pct IS NULL OR rh_max_pct IS NULL OR rh_min_pct < rh_max_pct)
);

CREATE TABLE products (
    gtin        text PRIMARY KEY CHECK (gtin ~ '^[0-9]{14}$'),
    name        text NOT NULL CHECK (btrim(name) <> ''),
    profile_id  text NOT NULL REFERENCES temperature_profiles,
    serialised  boolean NOT NULL DEFAULT false,  -- serial numbers (GS1 AI 21) are tracked
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE lot_status AS ENUM ('available', 'quarantined', 'released', 'rejected');

CREATE TABLE lots (
    id               bigserial PRIMARY KEY,
    gtin             text NOT NULL REFERENCES products,
    -- GS1 AI (10): up to 20 printable characters.
    lot_number       text NOT NULL CHECK (lot_number ~ '^[!-~]{1,20}$'),
    expiry           date,
    production_date  date,
    status           lot_status NOT NULL DEFAULT 'available',
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gtin, lot_number),
    CHECK (expiry IS NULL OR production_date IS NULL OR production_date <= expiry)
);

CREATE TABLE lot_serials (
    lot_id  bigint NOT NULL REFERENCES lots,
    serial  text NOT NULL CHECK (serial ~ '^[!-~]{1,20}$'),
    PRIMARY KEY (lot_id, serial)
);

-- ---------------------------------------------------------------- shipments and movements

CREATE TYPE shipment_state AS ENUM ('planned', 'in_transit', 'delivered', 'cancelled');

CREATE TABLE shipments (
    id            text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    vehicle_id    text NOT NULL REFERENCES locations,
    origin_site   text NOT NULL REFERENCES sites,
    destination   text NOT NULL CHECK (btrim(destination) <> ''),
    route         text NOT NULL DEFAULT '',
    state         shipment_state NOT NULL DEFAULT 'planned',
    departed_at   timestamptz,
    arrived_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state IN ('in_transit', 'delivered')) = (departed_at IS NOT NULL)),
    CHECK ((state = 'delivered') = (arrived_at IS NOT NULL)),
    CHECK (arrived_at IS NULL OR arrived_at >= departed_at)
);

CREATE TYPE movement_kind AS ENUM
    ('receiving', 'put_away', 'transfer', 'loading', 'delivery', 'return');

CREATE TABLE movements (
    id             bigserial PRIMARY KEY,
    lot_id         bigint NOT NULL REFERENCES lots,
    kind           movement_kind NOT NULL,
    from_location  text REFERENCES locations,
    to_location    text REFERENCES locations,
    quantity       numeric NOT NULL CHECK (quantity > 0),
    at             timestamptz NOT NULL,  -- when the goods moved, not when it was keyed in
    shipment_id    text REFERENCES shipments,
    party          text,                  -- the supplier received from, the customer delivered to
    recorded_by    text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE kind
        WHEN 'receiving' THEN from_location IS NULL AND to_location IS NOT NULL
        WHEN 'return' THEN from_location IS NULL AND to_location IS NOT NULL
        WHEN 'delivery' THEN from_location IS NOT NULL AND to_location IS NULL
        ELSE from_location IS NOT NULL AND to_location IS NOT NULL
             AND from_location <> to_location
    END),
    CHECK ((kind IN ('loading', 'delivery')) <= (shipment_id IS NOT NULL))
);
CREATE INDEX movements_lot ON movements (lot_id, at);
CREATE INDEX movements_shipment ON movements (shipment_id) WHERE shipment_id IS NOT NULL;

-- Where each lot was, and how much of it, over time: kept from movements by the trigger
-- below, so "which lots were in L between t1 and t2" is one GiST lookup.
CREATE TABLE lot_stays (
    id           bigserial PRIMARY KEY,
    lot_id       bigint NOT NULL REFERENCES lots,
    location_id  text NOT NULL REFERENCES locations,
    quantity     numeric NOT NULL CHECK (quantity > 0),
    during       tstzrange NOT NULL CHECK (NOT isempty(during)),
    EXCLUDE USING gist (lot_id WITH =, location_id WITH =, during WITH &&)
);
CREATE INDEX lot_stays_location ON lot_stays USING gist (location_id, during);
CREATE INDEX lot_stays_lot ON lot_stays (lot_id);

CREATE FUNCTION coldtrail_lot_leaves(lot bigint, loc text, qty numeric, t timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stay lot_stays;
BEGIN
    SELECT * INTO stay FROM lot_stays
    WHERE lot_id = lot AND location_id = loc AND upper_inf(during) FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'lot % is not in location %', lot, loc;
    END IF;
    IF stay.quantity < qty THEN
        RAISE EXCEPTION 'lot % has only % in location %, not %', lot, stay.quantity, loc, qty;
    END IF;
    IF lower(stay.during) = t THEN
        -- Two movements at the same instant: adjust the stay instead of leaving an empty one.
        IF stay.quantity = qty THEN
            DELETE FROM lot_stays WHERE id = stay.id;
        ELSE
            UPDATE lot_stays SET quantity = quantity - qty WHERE id = stay.id;
        END IF;
        RETURN;
    END IF;
    UPDATE lot_stays SET during = tstzrange(lower(during), t, '[)') WHERE id = stay.id;
    IF stay.quantity > qty THEN
        INSERT INTO lot_stays (lot_id, location_id, quantity, during)
        VALUES (lot, loc, stay.quantity - qty, tstzrange(t, NULL, '[)'));
    END IF;
END $$;

CREATE FUNCTION coldtrail_lot_arrives(lot bigint, loc text, qty numeric, t timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    stay lot_stays;
BEGIN
    SELECT * INTO stay FROM lot_stays
    WHERE lot_id = lot AND location_id = loc AND upper_inf(during) FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO lot_stays (lot_id, location_id, quantity, during)
        VALUES (lot, loc, qty, tstzrange(t, NULL, '[)'));
    ELSIF lower(stay.during) = t THEN
        UPDATE lot_stays SET quantity = quantity + qty WHERE id = stay.id;
    ELSE
        UPDATE lot_stays SET during = tstzrange(lower(during), t, '[)') WHERE id = stay.id;
        INSERT INTO lot_stays (lot_id, location_id, quantity, during)
        VALUES (lot, loc, stay.quantity + qty, tstzrange(t, NULL, '[)'));
    END IF;
END $$;

CREATE FUNCTION coldtrail_movement_applies() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lot_state lot_status;
    last_at timestamptz;
    ship shipments;
    vehicle text;
    dest_quarantine boolean;
BEGIN
    SELECT status INTO lot_state FROM lots WHERE id = NEW.lot_id FOR UPDATE;
    SELECT max(at) INTO last_at FROM movements WHERE lot_id = NEW.lot_id AND id <> NEW.id;
    IF last_at IS NOT NULL AND NEW.at < last_at THEN
        RAISE EXCEPTION 'lot % last moved at %; a movement at % would rewrite its history',
            NEW.lot_id, last_at, NEW.at;
    END IF;
    IF lot_state IN ('quarantined', 'rejected') THEN
        SELECT quarantine_area INTO dest_quarantine FROM locations WHERE id = NEW.to_location;
        IF NEW.kind <> 'transfer' OR NOT coalesce(dest_quarantine, false) THEN
            RAISE EXCEPTION 'lot % is %: it may only be transferred to a quarantine area until '
                'QA releases it', NEW.lot_id, lot_state;
        END IF;
    END IF;
    IF NEW.shipment_id IS NOT NULL THEN
        SELECT * INTO ship FROM shipments WHERE id = NEW.shipment_id FOR SHARE;
        IF NEW.kind NOT IN ('loading', 'delivery', 'transfer') THEN
            RAISE EXCEPTION 'a % is not part of a shipment', NEW.kind;
        END IF;
        -- The vehicle's side of the movement: where it is loaded to, or unloaded from.
        vehicle := CASE WHEN NEW.kind = 'loading' THEN NEW.to_location ELSE NEW.from_location END;
        IF NOT EXISTS (SELECT FROM locations WHERE id = vehicle
                       AND (id = ship.vehicle_id OR parent_id = ship.vehicle_id)) THEN
            RAISE EXCEPTION 'location % is not on vehicle % of shipment %',
                vehicle, ship.vehicle_id, ship.id;
        END IF;
        IF NEW.kind = 'loading' AND ship.state <> 'planned' THEN
            RAISE EXCEPTION 'shipment % is %: lots are loaded before departure', ship.id, ship.state;
        END IF;
        IF NEW.kind = 'delivery' AND ship.state <> 'in_transit' THEN
            RAISE EXCEPTION 'shipment % is %: lots are delivered while it is in transit',
                ship.id, ship.state;
        END IF;
        IF NEW.kind = 'transfer' AND ship.state NOT IN ('planned', 'in_transit') THEN
            RAISE EXCEPTION 'shipment % is %: nothing is unloaded from it any more',
                ship.id, ship.state;
        END IF;
    END IF;
    IF NEW.from_location IS NOT NULL THEN
        PERFORM coldtrail_lot_leaves(NEW.lot_id, NEW.from_location, NEW.quantity, NEW.at);
    END IF;
    IF NEW.to_location IS NOT NULL THEN
        PERFORM coldtrail_lot_arrives(NEW.lot_id, NEW.to_location, NEW.quantity, NEW.at);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER movements_apply AFTER INSERT ON movements
    FOR EACH ROW EXECUTE FUNCTION coldtrail_movement_applies();
-- A movement is a record of what happened: a wrong one is corrected by another movement.
CREATE TRIGGER movements_append_only BEFORE UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

-- ---------------------------------------------------------------- holds and signatures

CREATE TYPE hold_state AS ENUM ('open', 'released', 'rejected');
-- 21 CFR 11.50: what the signer meant by signing.
CREATE TYPE signature_meaning AS ENUM
    ('authorship', 'review', 'approval', 'responsibility', 'verification');

CREATE TABLE holds (
    id                bigserial PRIMARY KEY,
    lot_id            bigint NOT NULL REFERENCES lots,
    reason            text NOT NULL CHECK (btrim(reason) <> ''),
    excursion_id      bigint REFERENCES excursions,
    placed_by         text NOT NULL,
    placed_at         timestamptz NOT NULL,
    state             hold_state NOT NULL DEFAULT 'open',
    disposed_at       timestamptz,
    CHECK ((state = 'open') = (disposed_at IS NULL))
);
CREATE INDEX holds_lot ON holds (lot_id);
CREATE INDEX holds_open ON holds (placed_at) WHERE state = 'open';
-- One excursion puts a lot on hold once, however often the rules engine looks at it.
CREATE UNIQUE INDEX holds_once_per_excursion ON holds (lot_id, excursion_id)
    WHERE excursion_id IS NOT NULL;

CREATE TABLE signatures (
    id             bigserial PRIMARY KEY,
    signer         text NOT NULL REFERENCES users,
    signer_name    text NOT NULL,        -- the printed name as it was at signing (11.50)
    signer_role    user_role NOT NULL,
    meaning        signature_meaning NOT NULL,
    reason         text NOT NULL CHECK (btrim(reason) <> ''),
    signed_at      timestamptz NOT NULL,
    record_type    text NOT NULL,        -- 'hold', 'capa'
    record_id      bigint NOT NULL,
    action         text NOT NULL,        -- what the signature decides: release, reject, close
    -- SHA-256 of the record as it stood when signed (11.70: the signature stays bound to it).
    record_digest  bytea NOT NULL CHECK (length(record_digest) = 32)
);
CREATE INDEX signatures_record ON signatures (record_type, record_id);
CREATE TRIGGER signatures_append_only BEFORE UPDATE OR DELETE ON signatures
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

-- A lot's status follows from its holds: rejected once any disposition rejects it,
-- quarantined while any hold is open, released once holds were released, else available.
CREATE FUNCTION coldtrail_lot_status(lot bigint) RETURNS lot_status
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN bool_or(state = 'rejected') THEN 'rejected'
        WHEN bool_or(state = 'open') THEN 'quarantined'
        WHEN bool_or(state = 'released') THEN 'released'
        ELSE 'available'
    END::lot_status
    FROM holds WHERE lot_id = lot
$$;

CREATE FUNCTION coldtrail_hold_sets_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND (SELECT status FROM lots WHERE id = NEW.lot_id) = 'rejected' THEN
        RAISE EXCEPTION 'lot % is rejected already: a new hold changes nothing', NEW.lot_id;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state <> 'open' THEN
        RAISE EXCEPTION 'hold % was % at %: a disposition is final', OLD.id, OLD.state,
            OLD.disposed_at;
    END IF;
    UPDATE lots SET status = coldtrail_lot_status(NEW.lot_id) WHERE id = NEW.lot_id;
    RETURN NULL;
END $$;
CREATE TRIGGER holds_set_status AFTER INSERT OR UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION coldtrail_hold_sets_status();
CREATE TRIGGER holds_not_deleted BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

CREATE FUNCTION coldtrail_lot_status_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       AND NEW.status IS DISTINCT FROM coldtrail_lot_status(NEW.id) THEN
        RAISE EXCEPTION 'the status of lot % changes only through holds and dispositions', NEW.id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER lots_status_guard BEFORE UPDATE ON lots
    FOR EACH ROW EXECUTE FUNCTION coldtrail_lot_status_guard();

-- ---------------------------------------------------------------- CAPA

CREATE TYPE capa_state AS ENUM
    ('open', 'investigation', 'actions', 'effectiveness_check', 'closed');

CREATE TABLE capas (
    id             bigserial PRIMARY KEY,
    title          text NOT NULL CHECK (btrim(title) <> ''),
    description    text NOT NULL DEFAULT '',
    state          capa_state NOT NULL DEFAULT 'open',
    owner          text NOT NULL REFERENCES users,
    due_date       date NOT NULL,
    opened_by      text NOT NULL,
    opened_at      timestamptz NOT NULL,
    root_cause     text,
    effectiveness  text,
    closed_at      timestamptz,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX capas_not_closed ON capas (due_date) WHERE state <> 'closed';

CREATE TABLE capa_transitions (
    id          bigserial PRIMARY KEY,
    capa_id     bigint NOT NULL REFERENCES capas,
    from_state  capa_state,
    to_state    capa_state NOT NULL,
    at          timestamptz NOT NULL,
    by_user     text NOT NULL,
    comment     text NOT NULL DEFAULT ''
);
CREATE INDEX capa_transitions_capa ON capa_transitions (capa_id, at);

CREATE TABLE capa_actions (
    id           bigserial PRIMARY KEY,
    capa_id      bigint NOT NULL REFERENCES capas,
    description  text NOT NULL CHECK (btrim(description) <> ''),
    owner        text NOT NULL REFERENCES users,
    due_date     date NOT NULL,
    done_at      timestamptz,
    done_by      text,
    outcome      text,
    CHECK ((done_at IS NULL) = (done_by IS NULL))
);
CREATE INDEX capa_actions_capa ON capa_actions (capa_id);

CREATE TABLE capa_links (
    capa_id  bigint NOT NULL REFERENCES capas,
    kind     text NOT NULL CHECK (kind IN ('excursion', 'lot', 'hold', 'shipment')),
    ref      text NOT NULL,
    PRIMARY KEY (capa_id, kind, ref)
);
CREATE INDEX capa_links_ref ON capa_links (kind, ref);

CREATE TABLE capa_evidence (
    id          bigserial PRIMARY KEY,
    capa_id     bigint NOT NULL REFERENCES capas,
    filename    text NOT NULL CHECK (filename ~ '^[^/\\]{1,255}$'),
    media_type  text NOT NULL,
    sha256      bytea NOT NULL CHECK (length(sha256) = 32),
    content     bytea NOT NULL,
    added_by    text NOT NULL,
    added_at    timestamptz NOT NULL,
    CHECK (sha256 = sha256(content))
);
CREATE TRIGGER capa_evidence_append_only BEFORE UPDATE OR DELETE ON capa_evidence
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

-- ---------------------------------------------------------------- outbox

CREATE TABLE outbox_destinations (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_.-]{1,64}$'),
    kind        text NOT NULL,   -- a sink registered in coldtrail.erp.outbox.SINKS
    url         text NOT NULL,
    secret      text,            -- HMAC key of a webhook
    kinds       text[],          -- event kinds it takes (NULL: all)
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Written in the transaction of the change it reports, so an event exists if and only if
-- the change committed.
CREATE TABLE outbox_events (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    kind         text NOT NULL CHECK (kind ~ '^[a-z_]+(\.[a-z_]+)+$'),
    subject      text NOT NULL,
    payload      jsonb NOT NULL,
    occurred_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER outbox_events_append_only BEFORE UPDATE OR DELETE ON outbox_events
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

CREATE TABLE outbox_deliveries (
    event_id         bigint NOT NULL REFERENCES outbox_events,
    destination      text NOT NULL REFERENCES outbox_destinations,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz,
    dead_at          timestamptz,   -- given up on: kept, listed, and can be retried by hand
    last_error       text,
    PRIMARY KEY (destination, event_id)
);
CREATE INDEX outbox_deliveries_pending ON outbox_deliveries (destination, event_id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;

CREATE FUNCTION coldtrail_outbox_fan_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_deliveries (event_id, destination, next_attempt_at)
    SELECT NEW.id, d.name, NEW.occurred_at
    FROM outbox_destinations d
    WHERE d.enabled AND (d.kinds IS NULL OR NEW.kind = ANY(d.kinds));
    PERFORM pg_notify('coldtrail_outbox', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_events_fan_out AFTER INSERT ON outbox_events
    FOR EACH ROW EXECUTE FUNCTION coldtrail_outbox_fan_out();

-- ---------------------------------------------------------------- audit trail

-- Every create, change and delete of a GxP record, and every login, failed login, signature
-- and export. Each row's hash covers its content and the previous row's hash, so an edited,
-- removed or inserted row breaks the chain from there on; audit_head holds the newest hash,
-- so removing rows at the end shows too.
CREATE TABLE audit_log (
    id           bigint PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor        text NOT NULL,
    action       text NOT NULL,
    record_type  text NOT NULL,
    record_id    text,
    old_value    jsonb,
    new_value    jsonb,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL
);
CREATE INDEX audit_log_record ON audit_log (record_type, record_id, id);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE SEQUENCE audit_log_id_seq OWNED BY audit_log.id;

CREATE TABLE audit_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id    bigint NOT NULL,
    hash       bytea NOT NULL
);
INSERT INTO audit_head (last_id, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- The bytes a row's hash covers: each field length-prefixed, so no separator inside a value
-- can make two different rows hash alike. coldtrail.erp.audit builds the same bytes.
CREATE FUNCTION coldtrail_audit_message(a audit_log) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT a.prev_hash || convert_to(string_agg(octet_length(f)::text || ':' || f, '' ORDER BY n), 'UTF8')
    FROM unnest(ARRAY[
        a.id::text,
        to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        a.actor, a.action, a.record_type, coalesce(a.record_id, ''),
        coalesce(a.old_value::text, ''), coalesce(a.new_value::text, '')
    ]) WITH ORDINALITY AS t(f, n)
$$;

-- SECURITY DEFINER: the application's role can't write audit_head itself, only through here.
-- The first audit row of a transaction locks the head row until commit: that orders writers,
-- so ids and links are handed out in commit order. The link to follow is then carried in a
-- transaction-local setting (rolled back with a savepoint like the rows themselves), and the
-- head is written once, at commit, by the deferred trigger below: updating one row for every
-- audit row would make a bulk transaction quadratic.
CREATE FUNCTION coldtrail_audit_chain() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    prev text := NULLIF(current_setting('coldtrail.audit_prev', true), '');
BEGIN
    IF prev IS NULL THEN
        SELECT encode(hash, 'hex') INTO prev FROM audit_head FOR UPDATE;
    END IF;
    NEW.id := nextval('audit_log_id_seq');
    NEW.at := clock_timestamp();
    NEW.actor := coalesce(NULLIF(NEW.actor, ''), NULLIF(current_setting('coldtrail.actor', true), ''),
                          'db:' || session_user);
    NEW.prev_hash := decode(prev, 'hex');
    NEW.hash := sha256(coldtrail_audit_message(NEW));
    PERFORM set_config('coldtrail.audit_prev', encode(NEW.hash, 'hex'), true);
    PERFORM set_config('coldtrail.audit_last', NEW.id::text, true);
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_chain();

CREATE FUNCTION coldtrail_audit_head() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NEW.id = current_setting('coldtrail.audit_last')::bigint THEN
        UPDATE audit_head SET last_id = NEW.id, hash = NEW.hash;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER audit_log_head AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_head();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION coldtrail_append_only();
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION coldtrail_append_only();

-- TG_ARGV[0]: the key columns naming the record (comma-separated); TG_ARGV[1]: columns never
-- copied into the trail (secrets, file contents already fingerprinted by a hash column).
CREATE FUNCTION coldtrail_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_doc jsonb;
    new_doc jsonb;
    doc jsonb;
    keys text[] := string_to_array(TG_ARGV[0], ',');
    hidden text[] := coalesce(string_to_array(NULLIF(TG_ARGV[1], ''), ','), '{}');
BEGIN
    IF TG_OP <> 'INSERT' THEN old_doc := to_jsonb(OLD) - hidden; END IF;
    IF TG_OP <> 'DELETE' THEN new_doc := to_jsonb(NEW) - hidden; END IF;
    IF TG_OP = 'UPDATE' AND old_doc = new_doc THEN
        RETURN NULL;
    END IF;
    doc := coalesce(new_doc, old_doc);
    INSERT INTO audit_log (actor, action, record_type, record_id, old_value, new_value)
    VALUES (NULL, lower(TG_OP), TG_TABLE_NAME,
            (SELECT string_agg(doc ->> k, '/') FROM unnest(keys) AS k), old_doc, new_doc);
    RETURN NULL;
END $$;

CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sites
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON locations
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sensors
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON sensor_assignments
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('username', 'password_hash');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON excursions
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON temperature_profiles
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('gtin');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON lots
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON lot_serials
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('lot_id,serial');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON shipments
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON signatures
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON capas
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON capa_actions
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON capa_links
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('capa_id,kind,ref');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON capa_evidence
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('id', 'content');
CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON outbox_destinations
    FOR EACH ROW EXECUTE FUNCTION coldtrail_audit_row('name', 'secret');

-- ---------------------------------------------------------------- privileges

-- Ingest makes next months' reading partitions as it goes; the app role may not create
-- tables, so the function does it with its owner's rights (the partitions then take the
-- default privileges below: read and append).
ALTER FUNCTION coldtrail_ensure_partitions(timestamptz, timestamptz)
    SECURITY DEFINER SET search_path = public, pg_temp;

GRANT USAGE ON SCHEMA public TO coldtrail_app, coldtrail_readonly;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO coldtrail_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO coldtrail_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO coldtrail_app;
REVOKE UPDATE, DELETE, TRUNCATE ON readings, audit_log, signatures, movements, outbox_events,
    capa_evidence FROM coldtrail_app;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_head FROM coldtrail_app;
DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'readings'::regclass
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM coldtrail_app', part);
    END LOOP;
END $$;
-- Tables made later (monthly reading partitions) take the same: read and append.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO coldtrail_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO coldtrail_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO coldtrail_readonly;
REVOKE SELECT ON users, outbox_destinations FROM coldtrail_readonly;
