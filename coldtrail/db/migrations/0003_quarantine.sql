-- Readings of sensors nobody has registered yet: kept whole, in columns, so they can be
-- released into readings once the sensor is registered (nothing lost, nothing guessed).
CREATE TABLE quarantined_readings (
    id             bigserial PRIMARY KEY,
    received_at    timestamptz NOT NULL DEFAULT now(),
    topic          text NOT NULL,
    gateway        text NOT NULL,
    sensor_id      text NOT NULL,
    seq            bigint NOT NULL,
    ts             timestamptz NOT NULL,
    status         reading_status NOT NULL,
    clock          clock_state NOT NULL,
    temperature_c  double precision,
    humidity_pct   double precision,
    battery_pct    double precision,
    reason         text NOT NULL,
    released_at    timestamptz,
    released_batch bigint
);
CREATE INDEX quarantined_readings_pending ON quarantined_readings (sensor_id)
    WHERE released_at IS NULL;

-- sensor_latest is rewritten at every ingest batch: room on each page lets PostgreSQL update
-- in place (HOT), without touching the index.
ALTER TABLE sensor_latest SET (fillfactor = 50);

-- Ingest writes readings by COPY without a batch_id column: the batch is named once per
-- transaction (set_config(..., true)), and a write that forgets it fails instead of filing
-- readings under no batch.
ALTER TABLE readings
    ALTER COLUMN batch_id SET DEFAULT current_setting('coldtrail.ingest_batch')::bigint;

-- Which ingest worker committed each batch (its connection's application_name), for
-- operations: load sharing across workers shows here.
ALTER TABLE ingest_batches ADD COLUMN worker text DEFAULT current_setting('application_name');
