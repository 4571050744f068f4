"""Named, parameterised SQL of the ingest stage."""

# The measured values, as the statements below copy them from table to table.
VALUES = "temperature_c, humidity_pct, battery_pct, latitude, longitude, speed_kmh, door_open"
# The columns of a COPY line, in order (see coldtrail.ingest.copytext); batch_id comes from
# the transaction's coldtrail.ingest_batch setting (NEW_BATCH).
READING_COLUMNS = f"sensor_id, seq, ts, gateway, status, clock, {VALUES}"

COPY_READINGS = f"COPY readings ({READING_COLUMNS}) FROM STDIN"

NEW_BATCH = """
WITH b AS (INSERT INTO ingest_batches DEFAULT VALUES RETURNING id)
SELECT id, set_config('coldtrail.ingest_batch', id::text, true) FROM b
"""

# Adds each sensor's sequence numbers of this batch (runs lo..hi) to those stored, and returns
# for each sensor the numbers that were stored already: the only readings of the batch that
# can be a resend. The rows stay locked to the end of the transaction, so two workers given
# the same (sensor, seq) at once take turns and the second sees the first's.
CLAIM_SEQS = """
WITH b AS (
    SELECT sensor_id, range_agg(int8range(lo, hi, '[]')) AS seqs
    FROM unnest(%(sensors)s::text[], %(lo)s::bigint[], %(hi)s::bigint[]) AS b(sensor_id, lo, hi)
    GROUP BY sensor_id
), up AS (
    INSERT INTO sensor_seqs AS cur (sensor_id, seqs)
    SELECT sensor_id, seqs FROM b ORDER BY sensor_id
    ON CONFLICT (sensor_id) DO UPDATE
    SET seqs = cur.seqs + excluded.seqs, overlap = cur.seqs * excluded.seqs
    RETURNING sensor_id, overlap
)
SELECT sensor_id, overlap FROM up WHERE NOT isempty(overlap)
"""

# The stored readings of these (sensor, seq), whatever their time.
STORED = f"""
SELECT r.sensor_id, r.seq, r.ts, r.status::text, r.clock::text, {VALUES}
FROM unnest(%(sensors)s::text[], %(seqs)s::bigint[]) AS s(sensor_id, seq)
JOIN readings r ON r.sensor_id = s.sensor_id AND r.seq = s.seq
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

# Readings kept aside, whole, with the rule that kept them.
KEPT_ASIDE_COLUMNS = (
    f"topic, site_id, gateway, sensor_id, seq, ts, status, clock, {VALUES}, rule, reason"
)
COPY_KEPT_ASIDE = f"COPY quarantined_readings ({KEPT_ASIDE_COLUMNS}) FROM STDIN"

# What --release-quarantine looks at again: everything kept aside by a rule that master data
# can satisfy later. A conflicting resend is never released: the first stays the record.
PENDING = f"""
SELECT id, topic, site_id, gateway, sensor_id, seq, ts, status::text, clock::text, {VALUES}
FROM quarantined_readings
WHERE released_at IS NULL AND rule <> 'conflicting_resend' AND id > %(after)s
ORDER BY id LIMIT %(limit)s
"""  # noqa: S608 - a constant column list

RELEASED = """
UPDATE quarantined_readings SET released_at = now(), released_batch = %(batch_id)s
WHERE id = ANY(%(ids)s)
"""

# A reading looked at again and still refused: it says why now (the rule may have changed,
# e.g. an unknown sensor registered at another site).
STILL_KEPT = """
UPDATE quarantined_readings SET rule = %s::kept_aside_rule, reason = %s WHERE id = %s
"""

# One release at a time: two would each store what the other also found pending.
RELEASE_LOCK = "SELECT pg_advisory_xact_lock(7300116712)"

# Monthly partitions of readings (plain PostgreSQL), three months ahead of now.
ENSURE_PARTITIONS = "SELECT coldtrail_ensure_partitions(now(), now() + interval '3 months')"
