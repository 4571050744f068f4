-- Core schema: where things are, which sensor measured where and when, what it measured.

CREATE EXTENSION IF NOT EXISTS btree_gist;  -- for the no-overlap rule on sensor assignments

CREATE TABLE sites (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TYPE location_kind AS ENUM ('cold_room', 'ambient_store', 'vehicle', 'compartment');

CREATE TABLE locations (
    id           text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    site_id      text NOT NULL REFERENCES sites,
    parent_id    text REFERENCES locations,  -- a compartment's vehicle
    kind         location_kind NOT NULL,
    name         text NOT NULL,
    area_m2      double precision CHECK (area_m2 > 0),
    volume_m3    double precision CHECK (volume_m3 > 0),
    -- The location's own allowed range; product profiles may narrow it (rules engine).
    temp_min_c   double precision,
    temp_max_c   double precision,
    rh_min_pct   double precision,
    rh_max_pct   double precision,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (temp_min_c IS NULL OR temp_max_c IS NULL OR temp_min_c < temp_max_c),
    CHECK (rh_min_pct IS NULL OR rh_max_pct IS NULL OR rh_min_pct < rh_max_pct),
    CHECK ((kind = 'compartment') = (parent_id IS NOT NULL))
);

CREATE TABLE sensors (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    model            text NOT NULL,
    serial           text NOT NULL,
    calibration_due  date,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, serial)
);

-- Which location a sensor measured, over time: the record must say where each value came from.
CREATE TABLE sensor_assignments (
    id           bigserial PRIMARY KEY,
    sensor_id    text NOT NULL REFERENCES sensors,
    location_id  text NOT NULL REFERENCES locations,
    position     text NOT NULL DEFAULT '',
    valid        tstzrange NOT NULL CHECK (NOT isempty(valid)),
    EXCLUDE USING gist (sensor_id WITH =, valid WITH &&)
);
CREATE INDEX sensor_assignments_location ON sensor_assignments USING gist (location_id, valid);

CREATE TYPE reading_status AS ENUM ('ok', 'unavailable', 'not_available');

-- One row per committed ingest transaction: the hand-off to the rules engine. Rules claims
-- unprocessed batches with SKIP LOCKED, so no reading is missed whatever order ingest
-- workers commit in (a watermark over a sequence could skip a slow transaction's rows).
CREATE TABLE ingest_batches (
    id            bigserial PRIMARY KEY,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    readings      integer NOT NULL DEFAULT 0,
    processed_at  timestamptz
);
CREATE INDEX ingest_batches_pending ON ingest_batches (id) WHERE processed_at IS NULL;

CREATE TABLE readings (
    sensor_id      text NOT NULL,
    seq            bigint NOT NULL,
    ts             timestamptz NOT NULL,           -- time of measurement
    received_at    timestamptz NOT NULL DEFAULT now(),  -- time of arrival at ingest
    gateway        text NOT NULL,
    status         reading_status NOT NULL,
    temperature_c  double precision,
    humidity_pct   double precision,
    battery_pct    double precision,
    batch_id       bigint NOT NULL,
    PRIMARY KEY (sensor_id, seq)
);
CREATE INDEX readings_sensor_ts ON readings (sensor_id, ts);
CREATE INDEX readings_batch ON readings (batch_id);

-- GSP: recorded data can't be changed or deleted. The trigger stops it even for the owner;
-- a separate database role without UPDATE/DELETE comes with the audit-trail work.
CREATE FUNCTION readings_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'readings are a GxP record: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER readings_no_update_delete BEFORE UPDATE OR DELETE ON readings
    FOR EACH ROW EXECUTE FUNCTION readings_are_immutable();
CREATE TRIGGER readings_no_truncate BEFORE TRUNCATE ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION readings_are_immutable();

-- The latest reading per sensor, kept by ingest so the live view never scans readings.
CREATE TABLE sensor_latest (
    sensor_id      text PRIMARY KEY REFERENCES sensors,
    seq            bigint NOT NULL,
    ts             timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    gateway        text NOT NULL,
    status         reading_status NOT NULL,
    temperature_c  double precision,
    humidity_pct   double precision,
    battery_pct    double precision
);

-- Whatever ingest could not store, with the raw bytes and the reason: nothing is lost.
CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    payload      bytea NOT NULL,
    reason       text NOT NULL
);

CREATE TABLE excursions (
    id               bigserial PRIMARY KEY,
    sensor_id        text NOT NULL REFERENCES sensors,
    location_id      text NOT NULL REFERENCES locations,
    started_at       timestamptz NOT NULL,   -- measurement time of the first reading out of range
    start_seq        bigint NOT NULL,
    ended_at         timestamptz,            -- measurement time of the first reading back in range
    end_seq          bigint,
    limit_min_c      double precision,
    limit_max_c      double precision,
    min_c            double precision NOT NULL,
    max_c            double precision NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    acknowledged_by  text,
    acknowledged_at  timestamptz,
    ack_comment      text,
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL))
);
CREATE UNIQUE INDEX excursions_one_open_per_sensor ON excursions (sensor_id) WHERE ended_at IS NULL;
CREATE INDEX excursions_location_time ON excursions (location_id, started_at);

CREATE TYPE user_role AS ENUM ('admin', 'logistics', 'qa', 'auditor');

CREATE TABLE users (
    username       text PRIMARY KEY CHECK (username ~ '^[a-z0-9_.-]{1,64}$'),
    full_name      text NOT NULL,
    role           user_role NOT NULL,
    password_hash  text NOT NULL,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
