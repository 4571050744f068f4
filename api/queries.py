"""Named, parameterised SQL of the API."""

LIVE = """
SELECT s.id, s.model, s.serial, s.calibration_due,
       l.id, l.name, l.kind::text, l.site_id, l.parent_id, l.temp_min_c, l.temp_max_c, a.position,
       sl.seq, sl.ts, sl.received_at, sl.status::text, sl.temperature_c, sl.humidity_pct,
       sl.battery_pct, sl.gateway, sl.clock::text,
       e.id, e.started_at
FROM sensors s
LEFT JOIN sensor_assignments a ON a.sensor_id = s.id AND a.valid @> %(now)s::timestamptz
LEFT JOIN locations l ON l.id = a.location_id
LEFT JOIN sensor_latest sl ON sl.sensor_id = s.id
LEFT JOIN excursions e ON e.sensor_id = s.id AND e.state = 'open'
ORDER BY l.site_id NULLS LAST, l.id NULLS LAST, s.id
"""

EXCURSIONS = """
SELECT e.id, e.sensor_id, e.location_id, l.name, e.started_at, e.ended_at, e.limit_min_c,
       e.limit_max_c, e.min_c, e.max_c, e.detected_at, e.acknowledged_by, e.acknowledged_at,
       e.ack_comment, e.state::text, e.late, e.duration_s, e.degree_minutes, e.mkt_c, e.revision
FROM excursions e JOIN locations l ON l.id = e.location_id
WHERE (%(state)s = 'all' OR e.state::text = %(state)s)
ORDER BY e.started_at DESC, e.id DESC
LIMIT %(limit)s
"""

ACKNOWLEDGE = """
UPDATE excursions SET acknowledged_by = %(user)s, acknowledged_at = %(now)s,
                      ack_comment = %(comment)s
WHERE id = %(id)s AND acknowledged_at IS NULL
RETURNING id
"""

EXCURSION_EXISTS = "SELECT 1 FROM excursions WHERE id = %(id)s"

SCHEMA_VERSION = "SELECT max(version) FROM schema_migrations"
