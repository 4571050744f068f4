-- TimescaleDB-only SQL, all of it. Applied by `coldtrail db upgrade` when the timescaledb
-- extension can be created (migration 0004 then leaves readings unpartitioned for it), in
-- one transaction with the later steps (timescale_*.sql).
CREATE EXTENSION IF NOT EXISTS timescaledb;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid
               WHERE c.relname = 'readings') THEN
        RAISE EXCEPTION 'readings is already partitioned (created on plain PostgreSQL): '
            'moving it to a hypertable is a data migration to plan, not done automatically';
    END IF;
END $$;

-- A hypertable's unique indexes must include the partitioning column, so (sensor_id, seq)
-- becomes (sensor_id, seq, ts) here. The edge stamps ts once and re-sends it unchanged, so a
-- re-sent reading still collides and is stored once.
ALTER TABLE readings DROP CONSTRAINT readings_pkey;
ALTER TABLE readings ADD PRIMARY KEY (sensor_id, seq, ts);
-- Moving existing readings into chunks truncates the original table, which readings'
-- immutability refuses: stepped around inside this transaction only (the rows are the
-- same rows, moved; a reading deleted here would fail the whole upgrade instead).
ALTER TABLE readings DISABLE TRIGGER readings_no_truncate;
SELECT create_hypertable('readings', by_range('ts', INTERVAL '7 days'), migrate_data => true);
ALTER TABLE readings ENABLE TRIGGER readings_no_truncate;

-- Old chunks compressed (segment by sensor: a sensor's series reads back in one pass); no
-- retention policy: GxP records are kept for years, deleting them is an operator's decision.
ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor_id',
                          timescaledb.compress_orderby = 'ts, seq');
SELECT add_compression_policy('readings', INTERVAL '30 days');

-- The rollups as continuous aggregates, with the columns of the plain-PostgreSQL views.
DROP VIEW readings_5m;
DROP VIEW readings_1h;
DROP TABLE readings_5m_acc;
DROP TABLE readings_1h_acc;
CREATE MATERIALIZED VIEW readings_5m WITH (timescaledb.continuous) AS
SELECT sensor_id, time_bucket(INTERVAL '5 minutes', ts) AS bucket, count(*) AS readings,
       count(temperature_c) AS n_c, min(temperature_c) AS min_c, max(temperature_c) AS max_c,
       avg(temperature_c) AS mean_c
FROM readings GROUP BY sensor_id, bucket WITH NO DATA;
CREATE MATERIALIZED VIEW readings_1h WITH (timescaledb.continuous) AS
SELECT sensor_id, time_bucket(INTERVAL '1 hour', ts) AS bucket, count(*) AS readings,
       count(temperature_c) AS n_c, min(temperature_c) AS min_c, max(temperature_c) AS max_c,
       avg(temperature_c) AS mean_c
FROM readings GROUP BY sensor_id, bucket WITH NO DATA;
-- Real-time aggregation (the default) adds the not yet materialised tail at query time.
SELECT add_continuous_aggregate_policy('readings_5m', start_offset => NULL,
    end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('readings_1h', start_offset => NULL,
    end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes');

CREATE OR REPLACE FUNCTION coldtrail_rollup(batches bigint[]) RETURNS void
LANGUAGE sql AS $$ SELECT $$;
