-- Storage for years of readings on plain PostgreSQL: monthly partitions created ahead, and
-- 5-minute and 1-hour rollups that answer what TimescaleDB's continuous aggregates answer.
-- Where the timescaledb extension is available, readings stay one table here and
-- timescale.sql makes it a hypertable with continuous aggregates instead.

-- Partitions ----------------------------------------------------------------------------------

-- Creates the monthly partitions of readings that are missing from the month before `since`
-- up to `upto`; a no-op on TimescaleDB (readings is not a partitioned table there). A month
-- whose rows already sit in the default partition is left to an operator (see README).
CREATE FUNCTION coldtrail_ensure_partitions(since timestamptz, upto timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month   timestamptz := date_trunc('month', since - interval '1 month', 'UTC');
    name    text;
    created integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
                   WHERE c.relname = 'readings' AND c.relnamespace = current_schema()::regnamespace) THEN
        RETURN 0;
    END IF;
    WHILE month < upto LOOP
        name := 'readings_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(name) IS NULL THEN
            IF EXISTS (SELECT 1 FROM readings_default
                       WHERE ts >= month AND ts < month + interval '1 month') THEN
                RAISE NOTICE 'readings_default holds rows of %: partition not created', name;
            ELSE
                EXECUTE format('CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                               name, month, month + interval '1 month');
                created := created + 1;
            END IF;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

-- Whether TimescaleDB can be used here: created in a subtransaction that is then undone. An
-- extension listed as available may still be unusable (not in shared_preload_libraries).
CREATE FUNCTION coldtrail_timescaledb_usable() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RETURN false;
    END IF;
    BEGIN
        CREATE EXTENSION timescaledb;
        RAISE EXCEPTION 'created' USING ERRCODE = 'CT001';  -- undoes it
    EXCEPTION
        WHEN SQLSTATE 'CT001' THEN RETURN true;
        WHEN OTHERS THEN RETURN false;
    END;
END $$;

DO $$
DECLARE
    oldest timestamptz;
BEGIN
    IF coldtrail_timescaledb_usable() THEN
        RETURN;  -- hypertable chunks instead (timescale.sql)
    END IF;
    ALTER TABLE readings RENAME TO readings_unpartitioned;
    CREATE TABLE readings (LIKE readings_unpartitioned INCLUDING DEFAULTS)
        PARTITION BY RANGE (ts);
    -- Anything outside the created months still lands somewhere: nothing is refused for it.
    CREATE TABLE readings_default PARTITION OF readings DEFAULT;
    SELECT min(ts) INTO oldest FROM readings_unpartitioned;
    PERFORM coldtrail_ensure_partitions(coalesce(oldest, now()), now() + interval '3 months');
    INSERT INTO readings SELECT * FROM readings_unpartitioned;
    DROP TABLE readings_unpartitioned;
    -- A partitioned table's unique keys include the partition column. The edge stamps ts once
    -- and re-sends it unchanged, so a re-sent reading still collides and is stored once.
    ALTER TABLE readings ADD PRIMARY KEY (sensor_id, seq, ts);
    CREATE INDEX readings_sensor_ts ON readings (sensor_id, ts);
    CREATE INDEX readings_batch ON readings (batch_id);
    CREATE TRIGGER readings_no_update_delete BEFORE UPDATE OR DELETE ON readings
        FOR EACH ROW EXECUTE FUNCTION readings_are_immutable();
    CREATE TRIGGER readings_no_truncate BEFORE TRUNCATE ON readings
        FOR EACH STATEMENT EXECUTE FUNCTION readings_are_immutable();
END $$;

-- Rollups --------------------------------------------------------------------------------------

-- Sums, not means, are kept, so a late reading folds in exactly; the views give the mean.
CREATE TABLE readings_5m_acc (
    sensor_id  text NOT NULL,
    bucket     timestamptz NOT NULL,
    readings   bigint NOT NULL,           -- every reading, values or not
    n_c        bigint NOT NULL,           -- readings with a temperature
    min_c      double precision,
    max_c      double precision,
    sum_c      double precision,
    PRIMARY KEY (sensor_id, bucket)
);
CREATE TABLE readings_1h_acc (LIKE readings_5m_acc INCLUDING ALL);

CREATE VIEW readings_5m AS
SELECT sensor_id, bucket, readings, n_c, min_c, max_c, sum_c / nullif(n_c, 0) AS mean_c
FROM readings_5m_acc;
CREATE VIEW readings_1h AS
SELECT sensor_id, bucket, readings, n_c, min_c, max_c, sum_c / nullif(n_c, 0) AS mean_c
FROM readings_1h_acc;

-- Folds the readings of the given ingest batches into both rollups. Called once per batch,
-- by the rules engine in the transaction that marks the batch processed, so each reading is
-- counted exactly once. (timescale.sql makes it a no-op: continuous aggregates do this.)
CREATE FUNCTION coldtrail_rollup(batches bigint[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO readings_5m_acc AS a
    SELECT sensor_id, date_bin('5 minutes', ts, timestamptz '2000-01-01 00:00:00+00'),
           count(*), count(temperature_c), min(temperature_c), max(temperature_c),
           sum(temperature_c)
    FROM readings WHERE batch_id = ANY(batches)
    GROUP BY 1, 2
    ON CONFLICT (sensor_id, bucket) DO UPDATE SET
        readings = a.readings + excluded.readings, n_c = a.n_c + excluded.n_c,
        min_c = least(a.min_c, excluded.min_c), max_c = greatest(a.max_c, excluded.max_c),
        sum_c = coalesce(a.sum_c, 0) + coalesce(excluded.sum_c, 0);
    INSERT INTO readings_1h_acc AS a
    SELECT sensor_id, date_trunc('hour', ts, 'UTC'),
           count(*), count(temperature_c), min(temperature_c), max(temperature_c),
           sum(temperature_c)
    FROM readings WHERE batch_id = ANY(batches)
    GROUP BY 1, 2
    ON CONFLICT (sensor_id, bucket) DO UPDATE SET
        readings = a.readings + excluded.readings, n_c = a.n_c + excluded.n_c,
        min_c = least(a.min_c, excluded.min_c), max_c = greatest(a.max_c, excluded.max_c),
        sum_c = coalesce(a.sum_c, 0) + coalesce(excluded.sum_c, 0);
$$;

-- Readings stored before this migration: into the rollups once.
SELECT coldtrail_rollup(array_agg(id)) FROM ingest_batches WHERE processed_at IS NOT NULL;
