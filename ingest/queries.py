"""Named, parameterised SQL of the ingest stage."""

from coldtrail.readingchain import COLUMNS

# The measured values, as the statements below copy them from table to table.
VALUES = "temperature_c, humidity_pct, battery_pct, latitude, longitude, speed_kmh, door_open"
# The columns of a COPY line, in order (see coldtrail.ingest.copytext and the canonical line
# of coldtrail.readingchain); batch_id comes from the transaction's coldtrail.ingest_batch
# setting (NEW_BATCH).
COPY_READINGS = f"COPY readings ({COLUMNS}) FROM STDIN"

NEW_BATCH = """
WITH b AS (INSERT INTO ingest_batches DEFAULT VALUES RETURNING id)
SELECT id, set_config('coldtrail.ingest_batch', id::text, true) FROM b
"""

# The stored readings of these (sensor, seq), whatever their time.
STORED = f"""
SELECT r.sensor_id, r.seq, r.ts, r.status::text, r.clock::text, {VALUES}
FROM unnest(%(sensors)s::text[], %(seqs)s::bigint[]) AS s(sensor_id, seq)
JOIN readings r ON r.sensor_id = s.sensor_id AND r.seq = s.seq
"""  # noqa: S608 - a constant column list

# Each sensor's newest reading among those this batch stored, and its sequence numbers, in one
# write of the sensor's row, worked out by the database from the batch's rows (the worker's
# Python thread is the busier side). The stored latest moves forward, never back; the numbers
# are added, and the sensors with a number stored already, or given twice, are returned. The
# rows stay locked to the end of the transaction, so two workers given the same (sensor, seq)
# at once take turns, and the second sees the first's numbers.
_LATEST = "seq, ts, received_at, gateway, status, clock, " + VALUES
_NEWER = "(excluded.ts, excluded.seq) > (cur.ts, cur.seq)"
# The row is written at every batch (its numbers change); its latest values only move forward.
_KEEP_NEWER = ", ".join(
    f"{c} = CASE WHEN {_NEWER} THEN excluded.{c} ELSE cur.{c} END" for c in _LATEST.split(", ")
)
UPDATE_LATEST = f"""
WITH g AS (
    SELECT sensor_id, range_agg(int8range(seq, seq, '[]')) AS seqs, count(*) AS n
    FROM readings
    WHERE batch_id = %(batch_id)s AND ts BETWEEN %(first)s AND %(last)s GROUP BY sensor_id
), n AS (
    -- Grouped bytewise: only equal ids need to meet, and the collation's comparisons were
    -- a good part of this sort.
    SELECT DISTINCT ON (sensor_id COLLATE "C") sensor_id, {_LATEST}
    FROM readings WHERE batch_id = %(batch_id)s AND ts BETWEEN %(first)s AND %(last)s
    ORDER BY sensor_id COLLATE "C", ts DESC, seq DESC
), up AS (
    INSERT INTO sensor_latest AS cur (sensor_id, {_LATEST}, seqs)
    SELECT n.*, g.seqs FROM n JOIN g USING (sensor_id) ORDER BY sensor_id
    ON CONFLICT (sensor_id) DO UPDATE SET
        {_KEEP_NEWER},
        seqs = cur.seqs + excluded.seqs,
        overlap = CASE WHEN cur.seqs && excluded.seqs THEN cur.seqs * excluded.seqs
                       ELSE '{{}}' END
    RETURNING sensor_id, overlap
)
-- A number stored already ...
SELECT sensor_id, true, false FROM up WHERE NOT isempty(overlap)
UNION ALL
-- ... or one the batch holds twice: more readings than numbers (counted from the hull when
-- the numbers are one run, the usual case).
SELECT sensor_id, false, true FROM g
WHERE n > upper(seqs) - lower(seqs)
   OR (seqs <> int8multirange(range_merge(seqs))
       AND n > (SELECT sum(upper(r) - lower(r)) FROM unnest(seqs) r))
"""  # noqa: S608 - constant column lists

# The careful path: the batch's sensors locked (in one order, as UPDATE_LATEST locks them)
# and their stored numbers read, before anything of the batch is written.
LOCK_SEQS = """
SELECT sensor_id, seqs FROM sensor_latest WHERE sensor_id = ANY(%(sensors)s::text[])
ORDER BY sensor_id FOR UPDATE
"""

FINISH_BATCH = """
UPDATE ingest_batches
SET readings = %(n)s,
    first_ts = %(first)s,
    last_ts = %(last)s,
    committed_at = clock_timestamp(),  -- the moment before COMMIT, not the transaction's start
    processed_at = CASE WHEN %(n)s = 0 THEN now() END
WHERE id = %(batch_id)s
"""

# A batch that stored readings, in one round trip: finished, the rules engine told, and linked
# into the readings' hash chain (migration 0016), which locks the chain's head to COMMIT.
FINISH_NOTIFY_LINK = f"""
WITH finished AS ({FINISH_BATCH} RETURNING id)
SELECT pg_notify('coldtrail_readings', id::text),
       coldtrail_link_readings(id, %(n)s, %(body)s, %(fps)s)
FROM finished
"""  # noqa: S608 - a constant statement

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
