"""Named, parameterised SQL of the rules stage."""

CLAIM_BATCHES = """
SELECT id FROM ingest_batches
WHERE processed_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# Each reading with the range of the location its sensor was in at the time of measurement.
BATCH_READINGS = """
SELECT r.sensor_id, r.seq, r.ts, r.status::text, r.temperature_c,
       a.location_id, l.temp_min_c, l.temp_max_c
FROM readings r
LEFT JOIN sensor_assignments a ON a.sensor_id = r.sensor_id AND a.valid @> r.ts
LEFT JOIN locations l ON l.id = a.location_id
WHERE r.batch_id = ANY(%(batches)s)
ORDER BY r.sensor_id, r.ts, r.seq
"""

# Two rules workers must not judge the same sensor at once.
LOCK_SENSOR = "SELECT pg_advisory_xact_lock(hashtext('coldtrail.rules'), hashtext(%(sensor)s))"

OPEN_EXCURSION = """
SELECT id, min_c, max_c FROM excursions
WHERE sensor_id = %(sensor)s AND ended_at IS NULL
FOR UPDATE
"""

INSERT_EXCURSION = """
INSERT INTO excursions (sensor_id, location_id, started_at, start_seq, limit_min_c, limit_max_c,
                        min_c, max_c)
VALUES (%(sensor)s, %(location)s, %(ts)s, %(seq)s, %(lo)s, %(hi)s, %(t)s, %(t)s)
RETURNING id
"""

UPDATE_EXCURSION = """
UPDATE excursions SET min_c = %(min_c)s, max_c = %(max_c)s, ended_at = %(ended_at)s,
                      end_seq = %(end_seq)s
WHERE id = %(id)s
"""

# The 5-minute and 1-hour rollups take each batch once, in the transaction that finishes it.
ROLLUP = "SELECT coldtrail_rollup(%(batches)s)"

FINISH_BATCHES = "UPDATE ingest_batches SET processed_at = now() WHERE id = ANY(%(batches)s)"
