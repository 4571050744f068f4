"""Named, parameterised SQL of the ingest stage."""

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    sensor_id text, seq bigint, ts timestamptz, gateway text, status reading_status,
    clock clock_state, temperature_c double precision, humidity_pct double precision,
    battery_pct double precision
) ON COMMIT DELETE ROWS
"""

COPY_STAGE = """
COPY ingest_stage (sensor_id, seq, ts, gateway, status, clock, temperature_c, humidity_pct,
                   battery_pct)
FROM STDIN
"""

NEW_BATCH = "INSERT INTO ingest_batches DEFAULT VALUES RETURNING id"

# One statement: store the new readings (a repeated sensor+seq, within the batch or from
# before, is stored once) and move each sensor's latest value forward, never back.
MERGE_STAGE = """
WITH staged AS (
    SELECT DISTINCT ON (sensor_id, seq) * FROM ingest_stage ORDER BY sensor_id, seq
), ins AS (
    INSERT INTO readings (sensor_id, seq, ts, gateway, status, clock, temperature_c,
                          humidity_pct, battery_pct, batch_id)
    SELECT sensor_id, seq, ts, gateway, status, clock, temperature_c, humidity_pct, battery_pct,
           %(batch_id)s
    FROM staged
    ON CONFLICT DO NOTHING
    RETURNING *
), latest AS (
    INSERT INTO sensor_latest AS cur (sensor_id, seq, ts, received_at, gateway, status, clock,
                                      temperature_c, humidity_pct, battery_pct)
    SELECT DISTINCT ON (sensor_id) sensor_id, seq, ts, received_at, gateway, status, clock,
           temperature_c, humidity_pct, battery_pct
    FROM ins ORDER BY sensor_id, ts DESC, seq DESC
    ON CONFLICT (sensor_id) DO UPDATE SET
        seq = excluded.seq, ts = excluded.ts, received_at = excluded.received_at,
        gateway = excluded.gateway, status = excluded.status, clock = excluded.clock,
        temperature_c = excluded.temperature_c, humidity_pct = excluded.humidity_pct,
        battery_pct = excluded.battery_pct
    WHERE (excluded.ts, excluded.seq) > (cur.ts, cur.seq)
)
SELECT count(*) FROM ins
"""

FINISH_BATCH = """
UPDATE ingest_batches
SET readings = %(n)s,
    processed_at = CASE WHEN %(n)s = 0 THEN now() END
WHERE id = %(batch_id)s
"""

NOTIFY_RULES = "SELECT pg_notify('coldtrail_readings', %(batch_id)s::text)"

DEAD_LETTER = "INSERT INTO dead_letters (topic, payload, reason) VALUES (%s, %s, %s)"

KNOWN_SENSORS = "SELECT id FROM sensors"
