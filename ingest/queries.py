"""Named, parameterised SQL of the ingest stage."""

# The measured values, as the statements below copy them from table to table.
VALUES = "temperature_c, humidity_pct, battery_pct, latitude, longitude, speed_kmh, door_open"
# The columns of a COPY line, in order (see coldtrail.ingest.copytext); batch_id comes from
# the transaction's coldtrail.ingest_batch setting (NEW_BATCH).
READING_COLUMNS = f"sensor_id, seq, ts, gateway, status, clock, {VALUES}"

COPY_READINGS = f"COPY readings ({READING_COLUMNS}) FROM STDIN"

CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    sensor_id text, seq bigint, ts timestamptz, gateway text, status reading_status,
    clock clock_state, temperature_c double precision, humidity_pct double precision,
    battery_pct double precision, latitude double precision, longitude double precision,
    speed_kmh double precision, door_open boolean
) ON COMMIT DELETE ROWS
"""

COPY_STAGE = f"COPY ingest_stage ({READING_COLUMNS}) FROM STDIN"

NEW_BATCH = """
WITH b AS (INSERT INTO ingest_batches DEFAULT VALUES RETURNING id)
SELECT id, set_config('coldtrail.ingest_batch', id::text, true) FROM b
"""

# The slow path, for a batch holding a reading already stored (a redelivery after a crash,
# or the same message reaching two workers): each (sensor, seq) once, the rest skipped.
MERGE_STAGE = f"""
WITH ins AS (
    INSERT INTO readings (sensor_id, seq, ts, gateway, status, clock, {VALUES}, batch_id)
    SELECT DISTINCT ON (sensor_id, seq) sensor_id, seq, ts, gateway, status, clock,
           {VALUES}, %(batch_id)s
    FROM ingest_stage ORDER BY sensor_id, seq
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM ins
"""  # noqa: S608 - a constant column list

# Each sensor's newest reading among those this batch stored; the stored latest moves
# forward, never back. (A reading skipped as already stored moved it when it was stored.)
UPDATE_LATEST = f"""
INSERT INTO sensor_latest AS cur (sensor_id, seq, ts, received_at, gateway, status, clock,
                                  {VALUES})
SELECT DISTINCT ON (sensor_id) sensor_id, seq, ts, received_at, gateway, status, clock, {VALUES}
FROM readings WHERE batch_id = %(batch_id)s
ORDER BY sensor_id, ts DESC, seq DESC
ON CONFLICT (sensor_id) DO UPDATE SET
    seq = excluded.seq, ts = excluded.ts, received_at = excluded.received_at,
    gateway = excluded.gateway, status = excluded.status, clock = excluded.clock,
    temperature_c = excluded.temperature_c, humidity_pct = excluded.humidity_pct,
    battery_pct = excluded.battery_pct, latitude = excluded.latitude,
    longitude = excluded.longitude, speed_kmh = excluded.speed_kmh,
    door_open = excluded.door_open
WHERE (excluded.ts, excluded.seq) > (cur.ts, cur.seq)
"""  # noqa: S608 - a constant column list

FINISH_BATCH = """
UPDATE ingest_batches
SET readings = %(n)s,
    committed_at = clock_timestamp(),  -- the moment before COMMIT, not the transaction's start
    processed_at = CASE WHEN %(n)s = 0 THEN now() END
WHERE id = %(batch_id)s
"""

NOTIFY_RULES = "SELECT pg_notify('coldtrail_readings', %(batch_id)s::text)"

DEAD_LETTER = "INSERT INTO dead_letters (topic, payload, reason) VALUES (%s, %s, %s)"

QUARANTINE = f"""
INSERT INTO quarantined_readings (topic, gateway, sensor_id, seq, ts, status, clock, {VALUES},
                                  reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""  # noqa: S608 - a constant column list

KNOWN_SENSORS = "SELECT id FROM sensors"

# Quarantined readings of sensors registered since: into readings as one ingest batch (so
# rules judge them like any late reading), each marked released.
RELEASE_QUARANTINE = f"""
WITH rel AS (
    UPDATE quarantined_readings q
    SET released_at = now(), released_batch = %(batch_id)s
    FROM sensors s
    WHERE q.sensor_id = s.id AND q.released_at IS NULL
    RETURNING q.sensor_id, q.seq, q.ts, q.gateway, q.status, q.clock, q.temperature_c,
              q.humidity_pct, q.battery_pct, q.latitude, q.longitude, q.speed_kmh, q.door_open
), ins AS (
    INSERT INTO readings (sensor_id, seq, ts, gateway, status, clock, {VALUES}, batch_id)
    SELECT DISTINCT ON (sensor_id, seq) sensor_id, seq, ts, gateway, status, clock,
           {VALUES}, %(batch_id)s
    FROM rel ORDER BY sensor_id, seq
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM rel), (SELECT count(*) FROM ins)
"""  # noqa: S608 - a constant column list

# Monthly partitions of readings (plain PostgreSQL), three months ahead of now.
ENSURE_PARTITIONS = "SELECT coldtrail_ensure_partitions(now(), now() + interval '3 months')"
