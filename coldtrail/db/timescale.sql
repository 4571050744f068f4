-- TimescaleDB-only SQL, all of it. Applied by `coldtrail db upgrade` when the timescaledb
-- extension is available; plain PostgreSQL keeps readings as an ordinary table.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- A hypertable's unique indexes must include the partitioning column, so (sensor_id, seq)
-- becomes (sensor_id, seq, ts) here. The edge stamps ts once and re-sends it unchanged, so a
-- re-sent reading still collides and is stored once.
ALTER TABLE readings DROP CONSTRAINT readings_pkey;
ALTER TABLE readings ADD PRIMARY KEY (sensor_id, seq, ts);
SELECT create_hypertable('readings', by_range('ts', INTERVAL '7 days'), migrate_data => true);
