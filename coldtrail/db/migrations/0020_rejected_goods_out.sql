-- Rejected goods leave the site one of two ways, each a movement signed by QA in the same
-- transaction: back to the supplier, or destroyed. Either leaves from a quarantine area
-- (rejected goods wait there), and only a rejected lot is destroyed. A lot under quarantine
-- (an open hold) leaves by neither: its decision is still to come.
ALTER TYPE movement_kind ADD VALUE IF NOT EXISTS 'return_to_supplier';
ALTER TYPE movement_kind ADD VALUE IF NOT EXISTS 'destruction';

-- The shape of every kind, the new ones compared as text: a value added to an enum can't
-- be used as one in the transaction that added it.
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'movements'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%receiving%'
    LOOP
        EXECUTE format('ALTER TABLE movements DROP CONSTRAINT %I', c);
    END LOOP;
END $$;
ALTER TABLE movements ADD CONSTRAINT movements_shape CHECK (CASE kind::text
    WHEN 'receiving' THEN from_location IS NULL AND to_location IS NOT NULL
    WHEN 'return' THEN from_location IS NULL AND to_location IS NOT NULL
    WHEN 'delivery' THEN from_location IS NOT NULL AND to_location IS NULL
    -- Who took the goods back, or who destroyed them: named, never blank.
    WHEN 'return_to_supplier' THEN from_location IS NOT NULL AND to_location IS NULL
         AND shipment_id IS NULL AND coalesce(btrim(party), '') <> ''
    WHEN 'destruction' THEN from_location IS NOT NULL AND to_location IS NULL
         AND shipment_id IS NULL AND coalesce(btrim(party), '') <> ''
    ELSE from_location IS NOT NULL AND to_location IS NOT NULL
         AND from_location <> to_location
END);

CREATE OR REPLACE FUNCTION coldtrail_movement_applies() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lot_state lot_status;
    last_at timestamptz;
    ship shipments;
    vehicle text;
    dest_quarantine boolean;
    src_quarantine boolean;
    leaving boolean := NEW.kind::text IN ('return_to_supplier', 'destruction');
BEGIN
    SELECT status INTO lot_state FROM lots WHERE id = NEW.lot_id FOR UPDATE;
    SELECT max(at) INTO last_at FROM movements WHERE lot_id = NEW.lot_id AND id <> NEW.id;
    IF last_at IS NOT NULL AND NEW.at < last_at THEN
        RAISE EXCEPTION 'lot % last moved at %; a movement at % would rewrite its history',
            NEW.lot_id, last_at, NEW.at;
    END IF;
    SELECT quarantine_area INTO src_quarantine FROM locations WHERE id = NEW.from_location;
    IF NEW.kind::text = 'destruction' AND lot_state <> 'rejected' THEN
        RAISE EXCEPTION 'lot % is %: only a rejected lot is destroyed (reject it by a signed '
            'disposition first)', NEW.lot_id, lot_state;
    END IF;
    IF lot_state = 'quarantined' OR (lot_state = 'rejected' AND NOT leaving) THEN
        SELECT quarantine_area INTO dest_quarantine FROM locations WHERE id = NEW.to_location;
        IF NEW.kind <> 'transfer' OR NOT coalesce(dest_quarantine, false) THEN
            IF lot_state = 'rejected' THEN
                RAISE EXCEPTION 'lot % is rejected: it goes to a quarantine area, and from '
                    'there back to its supplier or to destruction, each signed by QA', NEW.lot_id;
            END IF;
            RAISE EXCEPTION 'lot % is %: it may only be transferred to a quarantine area until '
                'QA releases it', NEW.lot_id, lot_state;
        END IF;
    END IF;
    IF leaving AND lot_state = 'rejected' AND NOT coalesce(src_quarantine, false) THEN
        RAISE EXCEPTION 'lot % is rejected: it leaves from a quarantine area, not from %',
            NEW.lot_id, NEW.from_location;
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

-- Checked at commit, when the signature made in the same transaction is there: the goods
-- don't leave on anyone's word but a signer's.
CREATE FUNCTION coldtrail_movement_signed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM signatures WHERE record_type = 'movement'
                   AND record_id = NEW.id AND action = NEW.kind::text) THEN
        RAISE EXCEPTION 'a % of lot % is signed by QA in the same transaction (movement %)',
            replace(NEW.kind::text, '_', ' '), NEW.lot_id, NEW.id;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER movements_signed AFTER INSERT ON movements
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.kind::text IN ('return_to_supplier', 'destruction'))
    EXECUTE FUNCTION coldtrail_movement_signed();
