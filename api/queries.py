"""Named, parameterised SQL of the API."""

# The live view as one JSON document, built by the database: for 10 000 sensors the API
# answers in about half the time it took to decode rows and lay them out through pydantic
# (bench.live: 209 ms against 381 ms). The state and its colour are decided here and nowhere
# else. The sort is by byte order: ids are codes.
LIVE = """
SELECT coalesce(json_agg(doc ORDER BY site COLLATE "C", loc COLLATE "C", sensor COLLATE "C"),
                '[]')::text
FROM (
  SELECT l.site_id AS site, l.id AS loc, s.id AS sensor, json_build_object(
    'sensor', s.id, 'model', s.model, 'serial', s.serial,
    'calibration_due', s.calibration_due,
    'calibration_overdue', coalesce(s.calibration_due < (%(now)s AT TIME ZONE 'UTC')::date, false),
    'location', CASE WHEN l.id IS NOT NULL THEN json_build_object(
        'id', l.id, 'name', l.name, 'kind', l.kind, 'site_id', l.site_id,
        'parent_id', l.parent_id, 'position', a.position,
        'temp_min_c', l.temp_min_c, 'temp_max_c', l.temp_max_c) END,
    'latest', CASE WHEN sl.seq IS NOT NULL THEN json_build_object(
        'seq', sl.seq, 'ts', sl.ts, 'received_at', sl.received_at, 'status', sl.status,
        'temperature_c', sl.temperature_c, 'humidity_pct', sl.humidity_pct,
        'battery_pct', sl.battery_pct, 'gateway', sl.gateway, 'clock', sl.clock) END,
    'state', st.state,
    'colour', %(colours)s::jsonb ->> st.state,
    'open_excursion_id', e.id,
    'open_excursion_since', e.started_at) AS doc
  FROM sensors s
  LEFT JOIN sensor_assignments a ON a.sensor_id = s.id AND a.valid @> %(now)s::timestamptz
  LEFT JOIN locations l ON l.id = a.location_id
  LEFT JOIN sensor_latest sl ON sl.sensor_id = s.id
  LEFT JOIN excursions e ON e.sensor_id = s.id AND e.state = 'open'
  CROSS JOIN LATERAL (SELECT CASE
      WHEN l.id IS NULL THEN 'unassigned'
      WHEN sl.seq IS NULL THEN 'no_data'
      WHEN e.id IS NOT NULL THEN 'excursion'
      WHEN %(now)s::timestamptz - sl.ts > make_interval(secs => %(stale_s)s) THEN 'offline'
      WHEN sl.status <> 'ok' THEN 'unavailable'
      ELSE 'ok' END AS state) st
  WHERE %(site)s::text IS NULL OR l.site_id = %(site)s
) live
"""

EXCURSION_COLUMNS = """e.id, e.sensor_id, e.location_id, l.name, e.started_at, e.ended_at,
e.limit_min_c, e.limit_max_c, e.min_c, e.max_c, e.detected_at, e.acknowledged_by,
e.acknowledged_at, e.ack_comment, e.state::text, e.late, e.duration_s, e.degree_minutes,
e.mkt_c, e.revision, e.location_excursion_id"""

EXCURSIONS = f"""
SELECT {EXCURSION_COLUMNS}
FROM excursions e JOIN locations l ON l.id = e.location_id
WHERE (%(state)s = 'all' OR e.state::text = %(state)s)
ORDER BY e.started_at DESC, e.id DESC
LIMIT %(limit)s
"""  # noqa: S608 - a constant column list

PROBE_EXCURSIONS_OF = f"""
SELECT {EXCURSION_COLUMNS}
FROM excursions e JOIN locations l ON l.id = e.location_id
WHERE e.location_excursion_id = %(id)s
ORDER BY e.started_at, e.id
"""  # noqa: S608 - a constant column list

ACKNOWLEDGE = """
UPDATE excursions SET acknowledged_by = %(user)s, acknowledged_at = %(now)s,
                      ack_comment = %(comment)s
WHERE id = %(id)s AND acknowledged_at IS NULL
RETURNING id
"""

EXCURSION_EXISTS = "SELECT 1 FROM excursions WHERE id = %(id)s"

SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations"
