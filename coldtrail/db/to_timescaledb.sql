-- Readings of a database made on plain PostgreSQL (monthly partitions) into a plain table of
-- the same columns, constraints, indexes, triggers and grants, ready for timescale.sql to make
-- a hypertable of. Run by `coldtrail db to-timescaledb` in one transaction with that file and
-- a count-and-hash check of every row before and after; it is refused on any difference.
ALTER TABLE readings RENAME TO readings_plain;
ALTER TABLE readings_plain RENAME CONSTRAINT readings_pkey TO readings_plain_pkey;
ALTER INDEX readings_sensor_ts RENAME TO readings_plain_sensor_ts;
ALTER INDEX readings_batch RENAME TO readings_plain_batch;
CREATE TABLE readings (LIKE readings_plain INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                       INCLUDING STORAGE INCLUDING COMMENTS);
INSERT INTO readings SELECT * FROM readings_plain;
ALTER TABLE readings ADD PRIMARY KEY (sensor_id, seq, ts);
CREATE INDEX readings_sensor_ts ON readings (sensor_id, ts);
CREATE INDEX readings_batch ON readings (batch_id);
CREATE TRIGGER readings_no_update_delete BEFORE UPDATE OR DELETE ON readings
    FOR EACH ROW EXECUTE FUNCTION readings_are_immutable();
CREATE TRIGGER readings_no_truncate BEFORE TRUNCATE ON readings
    FOR EACH STATEMENT EXECUTE FUNCTION readings_are_immutable();
DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
             WHERE table_name = 'readings_plain' AND table_schema = current_schema()
               AND grantee <> current_user LOOP
        EXECUTE format('GRANT %s ON readings TO %I', g.privilege_type, g.grantee);
    END LOOP;
END $$;
