-- Vehicles report where they are and whether their doors are open through the same readings
-- as their probes: a telematics unit (GNSS) and door contacts are sensors of their own kind,
-- placed like probes, so the record keeps which unit reported for which vehicle and when.
-- Everything that judges temperature (rules, the record, KPIs, calibration alarms) reads
-- probes only.
CREATE TYPE sensor_kind AS ENUM ('probe', 'position', 'door');
ALTER TABLE sensors ADD COLUMN kind sensor_kind NOT NULL DEFAULT 'probe';

-- Nullable, without a default or a CHECK: adding them neither rewrites nor scans a table of
-- years of readings, and a probe's reading pays one bit each in the null bitmap. Their
-- ranges are checked with the message, as temperatures are (coldtrail.messages.PLAUSIBLE).
ALTER TABLE readings
    ADD COLUMN latitude double precision,
    ADD COLUMN longitude double precision,
    ADD COLUMN speed_kmh double precision,
    ADD COLUMN door_open boolean;
ALTER TABLE sensor_latest
    ADD COLUMN latitude double precision,
    ADD COLUMN longitude double precision,
    ADD COLUMN speed_kmh double precision,
    ADD COLUMN door_open boolean;
ALTER TABLE quarantined_readings
    ADD COLUMN latitude double precision,
    ADD COLUMN longitude double precision,
    ADD COLUMN speed_kmh double precision,
    ADD COLUMN door_open boolean;

-- A position unit reports for a vehicle; a door contact for a compartment or a room (a
-- vehicle's doors belong to its compartments). Checked where placements are written, so a
-- placement the API refuses is refused here too.
CREATE FUNCTION coldtrail_check_placement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    skind sensor_kind;
    lkind location_kind;
BEGIN
    SELECT kind INTO skind FROM sensors WHERE id = NEW.sensor_id;
    SELECT kind INTO lkind FROM locations WHERE id = NEW.location_id;
    IF skind = 'position' AND lkind <> 'vehicle' THEN
        RAISE EXCEPTION 'a position unit is placed in a vehicle, not a %', lkind
            USING ERRCODE = 'check_violation';
    END IF;
    IF skind = 'door' AND lkind = 'vehicle' THEN
        RAISE EXCEPTION 'a door contact is placed in a compartment or a room, not a vehicle'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER check_placement BEFORE INSERT OR UPDATE OF sensor_id, location_id
    ON sensor_assignments FOR EACH ROW EXECUTE FUNCTION coldtrail_check_placement();
