"""Named, parameterised SQL of the API."""

# The live view as one JSON document, built by the database: for 10 000 sensors the API
# answers in about half the time it took to decode rows and lay them out through pydantic
# (bench.live: 209 ms against 381 ms). The states, their colours and which state is worst
# are decided here and nowhere else; Python passes the tables (models.STATE_COLOURS,
# models.STATE_RANK). The sort is by byte order: ids are codes.
#
# A place's state is the worst of its probes' (a vehicle's: of its compartments' too). A
# vehicle's position is its GNSS unit's last fix, kept when the unit falls silent (the last
# known position is what logistics needs then); a door's is its contact's last state, and
# since when it has been open.
#
# Most of a build's cost is each sensor's JSON, and most sensors are as they were two seconds
# ago. So the document is built in two queries (coldtrail.api.live.LiveBuilder): LIVE_FRAME
# gives the sensors in order with a key each, and the places and vehicles; LIVE_SENSORS
# gives the JSON of the sensors whose key the builder has not seen (LIVE_SITE_SENSORS: of all
# of them, for the first build). The key is made of the xmin of every row the sensor's JSON
# reads (PostgreSQL gives each new version of a row a new xmin, so any change to it changes
# the key) and of what depends on the time alone (the state, whether calibration is overdue).
_LIVE_SENSOR_ROWS = """
sensor AS MATERIALIZED (
  -- Values, not JSON: kept narrow, the rows stay in memory (a JSON document per row would
  -- spill to disk at 10 000 sensors).
  SELECT s.id, s.kind, s.model, s.serial, s.calibration_due, l.site_id AS site, l.id AS loc,
         l.name AS loc_name, l.kind AS loc_kind, l.parent_id, l.temp_min_c, l.temp_max_c,
         a.position, sl.seq, sl.ts, sl.received_at, sl.status, sl.temperature_c,
         sl.humidity_pct, sl.battery_pct, sl.gateway, sl.clock, sl.latitude, sl.longitude,
         sl.speed_kmh, sl.door_open, e.id AS excursion, e.started_at AS excursion_since,
         st.state, ov.overdue,
         -- Fields in a fixed order, the one free text (the place's id) last: two keys are
         -- equal only if every field is.
         concat(s.xmin, '|', a.xmin, '|', l.xmin, '|', sl.xmin, '|', e.id, '|', e.xmin, '|',
                st.state, '|', ov.overdue, '|', l.id) AS key
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
  CROSS JOIN LATERAL (SELECT coalesce(
      s.calibration_due < (%(now)s AT TIME ZONE 'UTC')::date, false) AS overdue) ov
  WHERE /* which sensors */
)"""

_SENSORS_OF_SITE = _LIVE_SENSOR_ROWS.replace(
    "/* which sensors */", "%(site)s::text IS NULL OR l.site_id = %(site)s"
)
_SENSORS_BY_ID = _LIVE_SENSOR_ROWS.replace("/* which sensors */", "s.id = ANY(%(ids)s::text[])")

LIVE_FRAME = f"""WITH{_SENSORS_OF_SITE}, own AS (
  SELECT loc, max(array_position(%(ranked)s::text[], state)) AS rank, count(*) AS probes
  FROM sensor WHERE kind = 'probe' AND loc IS NOT NULL GROUP BY loc
), place AS MATERIALIZED (
  SELECT l.id, l.name, l.kind, l.site_id, l.parent_id, l.temp_min_c, l.temp_max_c,
         l.alarm_delay_s,
         -- What the rules judge by now (rules.ranges.with_ranges): the place's range narrowed
         -- by the profiles of the products stored there; its delay if it has a range and a
         -- delay of its own, else the shortest of the products', else none (0).
         json_build_object(
           'temp_min_c', greatest(l.temp_min_c, pr.lo), 'temp_max_c', least(l.temp_max_c, pr.hi),
           'alarm_delay_s', coalesce(least(
               CASE WHEN l.temp_min_c IS NOT NULL OR l.temp_max_c IS NOT NULL
                    THEN l.alarm_delay_s END, pr.delay), 0),
           'profiles', coalesce(pr.profiles, ARRAY[]::text[])) AS effective,
         coalesce(o.probes, 0) AS probes,
         (%(ranked)s::text[])[coalesce(CASE WHEN l.kind = 'vehicle' THEN
             (SELECT max(o2.rank) FROM own o2 JOIN locations c ON c.id = o2.loc
              WHERE c.id = l.id OR c.parent_id = l.id)
           ELSE o.rank END, 1)] AS state,
         (SELECT min(le.id) FROM location_excursions le
          WHERE le.location_id = l.id AND le.state = 'open') AS open_excursion
  FROM locations l LEFT JOIN own o ON o.loc = l.id
  LEFT JOIN LATERAL (
    SELECT max(p.temp_min_c) AS lo, min(p.temp_max_c) AS hi, min(p.alarm_delay_s) AS delay,
           array_agg(DISTINCT p.id ORDER BY p.id) AS profiles
    FROM lot_stays s
    JOIN lots lo ON lo.id = s.lot_id
    JOIN products pd ON pd.gtin = lo.gtin
    JOIN temperature_profiles p ON p.id = pd.profile_id
    WHERE s.location_id = l.id AND s.during @> %(now)s::timestamptz) pr ON true
  WHERE %(site)s::text IS NULL OR l.site_id = %(site)s
), door AS (
  SELECT d.loc, d.id, json_build_object(
    'sensor', d.id, 'position', d.position, 'state', d.state, 'ts', f.ts, 'open', f.door_open,
    'open_since', CASE WHEN f.door_open THEN (
        SELECT min(r.ts) FROM readings r
        WHERE r.sensor_id = d.id AND r.door_open AND r.ts <= f.ts
          AND r.ts > coalesce((SELECT max(c.ts) FROM readings c WHERE c.sensor_id = d.id
                               AND NOT c.door_open AND c.ts < f.ts), '-infinity')) END
  ) AS doc
  FROM sensor d
  LEFT JOIN LATERAL (SELECT r.ts, r.door_open FROM readings r
                     WHERE r.sensor_id = d.id AND r.door_open IS NOT NULL
                     ORDER BY r.ts DESC LIMIT 1) f ON true
  WHERE d.kind = 'door' AND d.loc IS NOT NULL
), fix AS MATERIALIZED (
  SELECT p.loc, p.id, f.ts, json_build_object(
    'sensor', p.id, 'state', p.state, 'ts', f.ts, 'latitude', f.latitude,
    'longitude', f.longitude, 'speed_kmh', f.speed_kmh) AS doc
  FROM sensor p
  LEFT JOIN LATERAL (SELECT r.ts, r.latitude, r.longitude, r.speed_kmh FROM readings r
                     WHERE r.sensor_id = p.id AND r.latitude IS NOT NULL
                     ORDER BY r.ts DESC LIMIT 1) f ON true
  WHERE p.kind = 'position' AND p.loc IS NOT NULL
)
SELECT
  -- [[id, key], ...] in the document's order: one aggregate, one sort.
  (SELECT coalesce(array_agg(ARRAY[s.id, s.key]
                             ORDER BY s.site COLLATE "C", s.loc COLLATE "C", s.id COLLATE "C"),
                   ARRAY[]::text[]) FROM sensor s),
  (SELECT coalesce(json_agg(json_build_object(
      'id', l.id, 'name', l.name, 'kind', l.kind, 'site_id', l.site_id,
      'parent_id', l.parent_id, 'temp_min_c', l.temp_min_c, 'temp_max_c', l.temp_max_c,
      'alarm_delay_s', l.alarm_delay_s, 'effective', l.effective, 'probes', l.probes,
      'state', l.state, 'colour', %(colours)s::jsonb ->> l.state,
      'open_location_excursion_id', l.open_excursion,
      'doors', coalesce((SELECT json_agg(d.doc ORDER BY d.id COLLATE "C") FROM door d
                         WHERE d.loc = l.id), '[]'))
    ORDER BY l.site_id COLLATE "C", l.id COLLATE "C"), '[]') FROM place l)::text,
  (SELECT coalesce(json_agg(json_build_object(
      'id', v.id, 'name', v.name, 'site_id', v.site_id, 'state', v.state,
      'colour', %(colours)s::jsonb ->> v.state,
      'position', (SELECT f.doc FROM fix f WHERE f.loc = v.id
                   ORDER BY f.ts DESC NULLS LAST, f.id COLLATE "C" LIMIT 1),
      'compartments', coalesce((
          SELECT json_agg(json_build_object(
            'id', c.id, 'name', c.name, 'temp_min_c', c.temp_min_c, 'temp_max_c', c.temp_max_c,
            'alarm_delay_s', c.alarm_delay_s, 'effective', c.effective, 'state', c.state,
            'colour', %(colours)s::jsonb ->> c.state,
            'doors', coalesce((SELECT json_agg(d.doc ORDER BY d.id COLLATE "C") FROM door d
                               WHERE d.loc = c.id), '[]'))
          ORDER BY c.id COLLATE "C") FROM place c WHERE c.parent_id = v.id), '[]'),
      'shipments', coalesce((
          SELECT json_agg(json_build_object(
            'id', sh.id, 'destination', sh.destination, 'departed_at', sh.departed_at)
          ORDER BY sh.departed_at, sh.id COLLATE "C")
          FROM shipments sh WHERE sh.vehicle_id = v.id AND sh.state = 'in_transit'), '[]'))
    ORDER BY v.site_id COLLATE "C", v.id COLLATE "C"), '[]')
   FROM place v WHERE v.kind = 'vehicle')::text
"""  # noqa: S608 - constant SQL pieces

_SENSOR_JSON = """
SELECT s.id, s.key, json_build_object(
    'sensor', s.id, 'kind', s.kind, 'model', s.model, 'serial', s.serial,
    'calibration_due', s.calibration_due, 'calibration_overdue', s.overdue,
    'location', CASE WHEN s.loc IS NOT NULL THEN json_build_object(
        'id', s.loc, 'name', s.loc_name, 'kind', s.loc_kind, 'site_id', s.site,
        'parent_id', s.parent_id, 'position', s.position,
        'temp_min_c', s.temp_min_c, 'temp_max_c', s.temp_max_c) END,
    'latest', CASE WHEN s.seq IS NULL THEN NULL
      WHEN s.kind = 'probe' THEN json_build_object(
        'seq', s.seq, 'ts', s.ts, 'received_at', s.received_at, 'status', s.status,
        'temperature_c', s.temperature_c, 'humidity_pct', s.humidity_pct,
        'battery_pct', s.battery_pct, 'gateway', s.gateway, 'clock', s.clock)
      ELSE json_build_object(
        'seq', s.seq, 'ts', s.ts, 'received_at', s.received_at, 'status', s.status,
        'temperature_c', s.temperature_c, 'humidity_pct', s.humidity_pct,
        'battery_pct', s.battery_pct, 'gateway', s.gateway, 'clock', s.clock,
        'latitude', s.latitude, 'longitude', s.longitude, 'speed_kmh', s.speed_kmh,
        'door_open', s.door_open) END,
    'state', s.state,
    'colour', %(colours)s::jsonb ->> s.state,
    'open_excursion_id', s.excursion,
    'open_excursion_since', s.excursion_since)::text
FROM sensor s
"""
LIVE_SENSORS = f"WITH{_SENSORS_BY_ID}{_SENSOR_JSON}"
# Every sensor of the site filter: for a build that needs most of them (the first), cheaper
# than passing them all by id.
LIVE_SITE_SENSORS = f"WITH{_SENSORS_OF_SITE}{_SENSOR_JSON}"

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
