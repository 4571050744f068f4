"""Named, parameterised SQL of the rules stage."""

CLAIM_BATCHES = """
SELECT id FROM ingest_batches
WHERE processed_at IS NULL
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# The earliest new reading of each probe in the claimed batches: where judging must restart.
# (A vehicle's position unit and door contacts measure no temperature: nothing to judge.)
_BATCH_SENSORS = """
SELECT r.sensor_id, min(r.ts) FROM readings r
JOIN sensors s ON s.id = r.sensor_id AND s.kind = 'probe'
WHERE r.batch_id = ANY(%(batches)s){bounded}
GROUP BY r.sensor_id
ORDER BY r.sensor_id
"""
BATCH_SENSORS = _BATCH_SENSORS.format(bounded="")
BATCH_SENSORS_IN_SPAN = _BATCH_SENSORS.format(bounded=" AND r.ts BETWEEN %(first)s AND %(last)s")

# The span of the claimed batches' readings, so that they are looked up in its chunks only;
# NULL when a batch has none recorded (stored before migration 0015).
BATCH_SPAN = """
SELECT CASE WHEN bool_and(first_ts IS NOT NULL) THEN min(first_ts) END,
       CASE WHEN bool_and(last_ts IS NOT NULL) THEN max(last_ts) END
FROM ingest_batches WHERE id = ANY(%(batches)s)
"""

MAX_ALARM_DELAY_S = """
SELECT greatest((SELECT coalesce(max(alarm_delay_s), 0) FROM locations),
                (SELECT coalesce(max(alarm_delay_s), 0) FROM temperature_profiles))
"""

# Two rules workers must not judge the same sensor at once.
LOCK_SENSORS = """
SELECT pg_advisory_xact_lock(hashtext('coldtrail.rules'), hashtext(s))
FROM unnest(%(sensors)s::text[]) AS s ORDER BY s
"""

# Where each sensor's judging window starts. When all its new readings are newer than what
# was judged (live data), where its cursor says; otherwise (late data) a look-back before the
# earliest new reading and the reading before it, long enough for any run or span not yet
# confirmed there. Never inside an excursion recorded or a condition still open: then from
# where that began.
WINDOW_STARTS = """
SELECT w.sensor_id,
       least(w.since,
             (SELECT min(e.started_at) FROM excursions e
              WHERE e.sensor_id = w.sensor_id AND e.state <> 'withdrawn'
                AND e.started_at <= w.first_ts
                AND coalesce(e.ended_at, 'infinity') >= w.since),
             (SELECT min(a.started_at) FROM alarms a
              WHERE a.sensor_id = w.sensor_id AND a.ended_at IS NULL
                AND a.kind IN ('humidity', 'unavailable', 'rapid_change', 'battery_low')
                AND a.started_at <= w.first_ts))
FROM unnest(%(sensors)s::text[], %(firsts)s::timestamptz[]) AS w0(sensor_id, first_ts)
LEFT JOIN rules_cursors c ON c.sensor_id = w0.sensor_id
CROSS JOIN LATERAL (
    SELECT w0.sensor_id, w0.first_ts,
           CASE WHEN c.judged_until < w0.first_ts THEN c.resume_from
                ELSE least(w0.first_ts, (SELECT max(r.ts) FROM readings r
                                         WHERE r.sensor_id = w0.sensor_id
                                           AND r.ts < w0.first_ts))
                     - make_interval(secs => %(lookback_s)s)
           END AS since) w
"""

SAVE_CURSORS = """
INSERT INTO rules_cursors AS c (sensor_id, judged_until, resume_from, updated_at)
SELECT * , now() FROM unnest(%(sensors)s::text[], %(until)s::timestamptz[],
                            %(resume)s::timestamptz[])
ON CONFLICT (sensor_id) DO UPDATE
SET judged_until = excluded.judged_until, resume_from = excluded.resume_from,
    updated_at = excluded.updated_at
"""

# The profiles of the products stored in these places since a time, each with the spans
# (merged over its lots) it was there: a place's range is the strictest of them.
# By product: a product moved to another profile (change control) is traced back per GTIN.
PRODUCT_RANGES = """
SELECT x.location_id, extract(epoch FROM lower(span))::float8,
       coalesce(extract(epoch FROM upper(span))::float8, 'Infinity'::float8),
       x.temp_min_c, x.temp_max_c, x.alarm_delay_s, x.rh_min_pct, x.rh_max_pct, x.id, x.gtin
FROM (SELECT s.location_id, p.id, p.temp_min_c, p.temp_max_c, p.alarm_delay_s, p.rh_min_pct,
             p.rh_max_pct, pr.gtin, range_agg(s.during) AS spans
      FROM lot_stays s
      JOIN lots lo ON lo.id = s.lot_id
      JOIN products pr ON pr.gtin = lo.gtin
      JOIN temperature_profiles p ON p.id = pr.profile_id
      WHERE s.location_id = ANY(%(locations)s)
        AND s.during && tstzrange(%(since)s, %(until)s::timestamptz)
      GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) x
CROSS JOIN LATERAL unnest(x.spans) AS span
ORDER BY 1, 2
"""

PROFILE_VALUES = """
SELECT id, temp_min_c, temp_max_c, alarm_delay_s, rh_min_pct, rh_max_pct
FROM temperature_profiles
"""

_EXCURSION_COLUMNS = """id, location_id, started_at, start_seq, ended_at, end_seq, last_seen_at,
limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c, readings, state::text"""

STORED_EXCURSIONS = f"""
SELECT sensor_id, {_EXCURSION_COLUMNS} FROM excursions
WHERE sensor_id = ANY(%(sensors)s) AND state <> 'withdrawn'
ORDER BY sensor_id, started_at
FOR UPDATE
"""  # noqa: S608 - a constant column list

INSERT_EXCURSION = """
INSERT INTO excursions (sensor_id, location_id, started_at, start_seq, ended_at, end_seq,
    last_seen_at, limit_min_c, limit_max_c, min_c, max_c, duration_s, degree_minutes, mkt_c,
    readings, state, late, detected_at)
VALUES (%(sensor)s, %(location_id)s, %(started_at)s, %(start_seq)s, %(ended_at)s, %(end_seq)s,
    %(last_seen_at)s, %(limit_min_c)s, %(limit_max_c)s, %(min_c)s, %(max_c)s, %(duration_s)s,
    %(degree_minutes)s, %(mkt_c)s, %(readings)s, %(state)s, %(late)s, %(now)s)
RETURNING id
"""

UPDATE_EXCURSION = """
UPDATE excursions SET location_id = %(location_id)s, started_at = %(started_at)s,
    start_seq = %(start_seq)s, ended_at = %(ended_at)s, end_seq = %(end_seq)s,
    last_seen_at = %(last_seen_at)s, limit_min_c = %(limit_min_c)s,
    limit_max_c = %(limit_max_c)s, min_c = %(min_c)s, max_c = %(max_c)s,
    duration_s = %(duration_s)s, degree_minutes = %(degree_minutes)s, mkt_c = %(mkt_c)s,
    readings = %(readings)s, state = %(state)s,
    revision = revision + %(revised)s::int,
    revised_at = CASE WHEN %(revised)s THEN %(now)s ELSE revised_at END
WHERE id = %(id)s
"""

WITHDRAW_EXCURSION = """
UPDATE excursions SET state = 'withdrawn', revision = revision + 1, revised_at = %(now)s
WHERE id = %(id)s
"""

# The 5-minute and 1-hour rollups take each batch once, in the transaction that finishes it.
ROLLUP = "SELECT coldtrail_rollup(%(batches)s)"

FINISH_BATCHES = "UPDATE ingest_batches SET processed_at = now() WHERE id = ANY(%(batches)s)"
