"""The five ColdTrail dashboards. Each panel names the columns it reads; the tests run every
panel's SQL, macros expanded, as the read-only role on a database with demo data.

Live states come from what the rules engine decided (open alarms and excursions), not from
thresholds of the dashboards' own, so the wall screen and the alarm agree.
"""

from __future__ import annotations

from coldtrail.dashboards.grafana import Dashboard, Panel, Variable

# Raw readings for short ranges (every value and every gap shows), the 5-minute rollup up
# to a week, the hourly one beyond. The range test is constant, so PostgreSQL prunes the
# branches not taken at plan time ("One-Time Filter: false"): only one of them is read.
RAW_UP_TO = "interval '6 hours'"
FIVE_MIN_UP_TO = "interval '7 days'"
_SPAN = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"


def temperature_series(places: str) -> str:
    """Time series of temperature per probe (``metric``) for the locations that ``places``
    (a condition on ``l``, the location) selects, from the table fit for the range."""
    # Grafana SQL from this module's own constants: no user input reaches it.
    return f"""
WITH place AS (
    SELECT sa.sensor_id, sa.valid,
           l.name || coalesce(' · ' || nullif(sa.position, ''), '') || ' (' || sa.sensor_id || ')'
               AS metric
    FROM sensor_assignments sa JOIN locations l ON l.id = sa.location_id
    JOIN sensors s ON s.id = sa.sensor_id AND s.kind = 'probe'
    WHERE ({places}) AND sa.valid && tstzrange($__timeFrom(), $__timeTo(), '[]')
)
SELECT r.ts AS "time", p.metric, r.temperature_c
FROM readings r JOIN place p ON p.sensor_id = r.sensor_id AND p.valid @> r.ts
WHERE $__timeFilter(r.ts) AND {_SPAN} <= {RAW_UP_TO}
UNION ALL
SELECT b.bucket, p.metric, b.mean_c
FROM readings_5m b JOIN place p ON p.sensor_id = b.sensor_id AND p.valid @> b.bucket
WHERE $__timeFilter(b.bucket) AND {_SPAN} > {RAW_UP_TO} AND {_SPAN} <= {FIVE_MIN_UP_TO}
UNION ALL
SELECT b.bucket, p.metric, b.mean_c
FROM readings_1h b JOIN place p ON p.sensor_id = b.sensor_id AND p.valid @> b.bucket
WHERE $__timeFilter(b.bucket) AND {_SPAN} > {FIVE_MIN_UP_TO}
ORDER BY 1, 2
"""  # noqa: S608


# The state of a probe now, as the rules engine sees it.
_PROBE_STATE = """
CASE
    WHEN sl.sensor_id IS NULL THEN 'no data'
    WHEN EXISTS (SELECT 1 FROM alarms a WHERE a.sensor_id = s.id AND a.kind = 'offline'
                 AND a.ended_at IS NULL) THEN 'offline'
    WHEN sl.status <> 'ok' THEN 'unavailable'
    WHEN EXISTS (SELECT 1 FROM location_excursions le WHERE le.location_id = l.id
                 AND le.state = 'open') THEN 'excursion'
    WHEN sl.temperature_c < l.temp_min_c OR sl.temperature_c > l.temp_max_c THEN 'out of range'
    ELSE 'ok'
END"""

_PROBE_COLUMNS = (
    "position",
    "sensor",
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "measured_at",
    "state",
    "temp_min_c",
    "temp_max_c",
    "calibration_due",
)


def probes_now(
    title: str, place: tuple[tuple[str, str], ...], where: str, order: str, joins: str = ""
) -> Panel:
    """A table of the probes placed now where ``where`` selects: ``place`` columns (name,
    expression) first, then each probe's latest reading and state."""
    place_sql = ", ".join(f"{expr} AS {name}" for name, expr in place)
    sql = f"""
SELECT {place_sql}, sa.position, s.id AS sensor, sl.temperature_c, sl.humidity_pct,
       sl.battery_pct, sl.ts AS measured_at, {_PROBE_STATE} AS state,
       l.temp_min_c, l.temp_max_c, s.calibration_due
FROM sensor_assignments sa
JOIN sensors s ON s.id = sa.sensor_id AND s.kind = 'probe'
JOIN locations l ON l.id = sa.location_id{joins}
LEFT JOIN sensor_latest sl ON sl.sensor_id = s.id
WHERE sa.valid @> now() AND {where}
ORDER BY {order}
"""  # noqa: S608
    return Panel(title, "table", sql, (*(n for n, _ in place), *_PROBE_COLUMNS), width=24)


SITE = Variable(
    "site",
    "Site",
    "SELECT id AS __value, name AS __text FROM sites ORDER BY name",
    multi=True,
    include_all=True,
)

FLEET = Dashboard(
    uid="coldtrail-fleet",
    title="ColdTrail · Fleet live",
    description="Every vehicle and compartment: temperature now, last reading, state.",
    variables=(SITE,),
    time_from="now-6h",
    refresh="10s",
    panels=(
        Panel(
            "Vehicles in excursion",
            "stat",
            """
SELECT count(DISTINCT coalesce(l.parent_id, l.id)) AS vehicles
FROM location_excursions le JOIN locations l ON l.id = le.location_id
WHERE le.state = 'open' AND l.kind IN ('vehicle', 'compartment') AND l.site_id IN ($site)
""",
            ("vehicles",),
            width=6,
            height=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "Probes offline",
            "stat",
            """
SELECT count(*) AS probes
FROM alarms a JOIN locations l ON l.id = a.location_id
WHERE a.kind = 'offline' AND a.ended_at IS NULL
  AND l.kind IN ('vehicle', 'compartment') AND l.site_id IN ($site)
""",
            ("probes",),
            width=6,
            height=4,
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Shipments under way",
            "stat",
            "SELECT count(*) AS shipments FROM shipments "
            "WHERE state = 'in_transit' AND origin_site IN ($site)",
            ("shipments",),
            width=12,
            height=4,
        ),
        probes_now(
            "Compartments now",
            (("vehicle", "coalesce(v.name, l.name)"), ("compartment", "l.name")),
            "l.kind IN ('vehicle', 'compartment') AND l.site_id IN ($site)",
            "vehicle, compartment, sensor",
            joins="\nLEFT JOIN locations v ON v.id = l.parent_id",
        ),
        Panel(
            "Compartment temperatures",
            "timeseries",
            temperature_series("l.kind IN ('vehicle', 'compartment') AND l.site_id IN ($site)"),
            ("time", "metric", "temperature_c"),
            unit="celsius",
            width=24,
            height=10,
        ),
    ),
)

STOREROOMS = Dashboard(
    uid="coldtrail-storerooms",
    title="ColdTrail · Storerooms",
    description="A probe grid per cold room and ambient store, and their temperatures.",
    variables=(
        SITE,
        Variable(
            "room",
            "Room",
            "SELECT id AS __value, name AS __text FROM locations "
            "WHERE kind IN ('cold_room', 'ambient_store') AND site_id IN ($site) ORDER BY name",
            multi=True,
            include_all=True,
        ),
    ),
    panels=(
        probes_now(
            "Probes now",
            (("room", "l.name"),),
            "l.id IN ($room)",
            "room, sa.position, sensor",
        ),
        Panel(
            "Room temperatures",
            "timeseries",
            temperature_series("l.id IN ($room)"),
            ("time", "metric", "temperature_c"),
            unit="celsius",
            width=24,
            height=10,
        ),
        Panel(
            "Calibration due within 30 days",
            "table",
            """
SELECT s.id AS sensor, s.model, s.serial, l.name AS room, s.calibration_due
FROM sensors s
JOIN sensor_assignments sa ON sa.sensor_id = s.id AND sa.valid @> now()
JOIN locations l ON l.id = sa.location_id
WHERE l.id IN ($room) AND s.calibration_due < current_date + 30
ORDER BY s.calibration_due
""",
            ("sensor", "model", "serial", "room", "calibration_due"),
            width=24,
        ),
    ),
)

EXCURSIONS = Dashboard(
    uid="coldtrail-excursions",
    title="ColdTrail · Excursions and holds",
    description="Excursions in the period, the lots they touched, holds still open.",
    variables=(SITE,),
    time_from="now-30d",
    refresh="1m",
    panels=(
        Panel(
            "Open excursions",
            "stat",
            """
SELECT count(*) AS excursions FROM location_excursions le
JOIN locations l ON l.id = le.location_id
WHERE le.state = 'open' AND l.site_id IN ($site)
""",
            ("excursions",),
            width=8,
            height=4,
            thresholds=((None, "green"), (1, "red")),
        ),
        Panel(
            "Open holds",
            "stat",
            "SELECT count(*) AS holds FROM holds WHERE state = 'open'",
            ("holds",),
            width=8,
            height=4,
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Alarms not acknowledged",
            "stat",
            """
SELECT count(*) AS alarms FROM alarms a LEFT JOIN locations l ON l.id = a.location_id
WHERE a.acknowledged_at IS NULL AND (l.site_id IS NULL OR l.site_id IN ($site))
""",
            ("alarms",),
            width=8,
            height=4,
            thresholds=((None, "green"), (1, "orange")),
        ),
        Panel(
            "Excursions in the period",
            "table",
            """
SELECT le.id, l.name AS location, le.state::text AS state, le.started_at, le.ended_at,
       round((le.duration_s / 60)::numeric, 1) AS minutes, le.min_c, le.max_c,
       le.limit_min_c, le.limit_max_c, le.late,
       (SELECT count(*) FROM excursion_impacts i WHERE i.location_excursion_id = le.id) AS lots,
       (SELECT count(*) FROM holds h WHERE h.excursion_id = le.id AND h.state = 'open')
           AS open_holds
FROM location_excursions le JOIN locations l ON l.id = le.location_id
WHERE le.started_at <= $__timeTo()::timestamptz
  AND coalesce(le.ended_at, 'infinity') >= $__timeFrom()::timestamptz
  AND l.site_id IN ($site)
ORDER BY le.started_at DESC
""",
            (
                "id",
                "location",
                "state",
                "started_at",
                "ended_at",
                "minutes",
                "min_c",
                "max_c",
                "limit_min_c",
                "limit_max_c",
                "late",
                "lots",
                "open_holds",
            ),
            width=24,
        ),
        Panel(
            "Excursions per day",
            "barchart",
            """
SELECT date_trunc('day', le.started_at) AS day, count(*) AS excursions
FROM location_excursions le JOIN locations l ON l.id = le.location_id
WHERE $__timeFilter(le.started_at) AND le.state <> 'withdrawn' AND l.site_id IN ($site)
GROUP BY 1 ORDER BY 1
""",
            ("day", "excursions"),
            width=12,
        ),
        Panel(
            "Holds still open",
            "table",
            """
SELECT h.id, lt.lot_number, p.name AS product, h.reason, h.placed_by, h.placed_at,
       round((extract(epoch FROM now() - h.placed_at) / 3600)::numeric, 1) AS hours_open
FROM holds h JOIN lots lt ON lt.id = h.lot_id JOIN products p ON p.gtin = lt.gtin
WHERE h.state = 'open'
ORDER BY h.placed_at
""",
            ("id", "lot_number", "product", "reason", "placed_by", "placed_at", "hours_open"),
            width=12,
        ),
    ),
)

SHIPMENT = Dashboard(
    uid="coldtrail-shipment",
    title="ColdTrail · Shipment record",
    description="One shipment: its journey, the temperatures aboard, excursions on the way. "
    "The signed record for auditors comes from the API (CSV, PDF, EPCIS).",
    variables=(
        Variable(
            "shipment",
            "Shipment",
            "SELECT id FROM shipments WHERE state <> 'planned' ORDER BY departed_at DESC",
        ),
    ),
    time_from="now-7d",
    refresh="1m",
    panels=(
        Panel(
            "Journey",
            "table",
            """
SELECT sh.id AS shipment, v.name AS vehicle, sh.origin_site, sh.destination,
       sh.state::text AS state, sh.departed_at, sh.arrived_at,
       (SELECT string_agg(DISTINCT lt.lot_number, ', ') FROM movements m
        JOIN lots lt ON lt.id = m.lot_id WHERE m.shipment_id = sh.id) AS lots
FROM shipments sh JOIN locations v ON v.id = sh.vehicle_id
WHERE sh.id = ${shipment:sqlstring}
""",
            (
                "shipment",
                "vehicle",
                "origin_site",
                "destination",
                "state",
                "departed_at",
                "arrived_at",
                "lots",
            ),
            width=24,
            height=5,
        ),
        Panel(
            "Temperatures aboard",
            "timeseries",
            temperature_series(
                "(l.id = (SELECT vehicle_id FROM shipments WHERE id = ${shipment:sqlstring}) "
                "OR l.parent_id = (SELECT vehicle_id FROM shipments "
                "WHERE id = ${shipment:sqlstring}))"
            ),
            ("time", "metric", "temperature_c"),
            unit="celsius",
            width=24,
            height=10,
        ),
        Panel(
            "Excursions on the way",
            "table",
            """
SELECT le.id, l.name AS compartment, le.state::text AS state, le.started_at, le.ended_at,
       le.min_c, le.max_c, le.limit_min_c, le.limit_max_c
FROM shipments sh
JOIN locations l ON l.id = sh.vehicle_id OR l.parent_id = sh.vehicle_id
JOIN location_excursions le ON le.location_id = l.id
WHERE sh.id = ${shipment:sqlstring} AND sh.departed_at IS NOT NULL
  AND le.started_at <= coalesce(sh.arrived_at, 'infinity')
  AND coalesce(le.ended_at, 'infinity') >= sh.departed_at
ORDER BY le.started_at
""",
            (
                "id",
                "compartment",
                "state",
                "started_at",
                "ended_at",
                "min_c",
                "max_c",
                "limit_min_c",
                "limit_max_c",
            ),
            width=24,
        ),
    ),
)

HEALTH = Dashboard(
    uid="coldtrail-health",
    title="ColdTrail · Platform health",
    description="Ingest rate, rules lag, dead letters, readings kept aside and by whom, "
    "nonconformities with the sites' compliance profiles over time, gateways not heard from.",
    time_from="now-6h",
    refresh="30s",
    panels=(
        Panel(
            "Readings stored per second",
            "timeseries",
            """
SELECT $__timeGroupAlias(committed_at, $__interval),
       sum(readings) / extract(epoch FROM interval '$__interval') AS readings_per_s
FROM ingest_batches WHERE $__timeFilter(committed_at)
GROUP BY 1 ORDER BY 1
""",
            ("time", "readings_per_s"),
            unit="reqps",
        ),
        Panel(
            "Rules lag (oldest batch not yet judged)",
            "stat",
            """
SELECT coalesce(extract(epoch FROM now() - min(committed_at)), 0) AS seconds
FROM ingest_batches WHERE processed_at IS NULL
""",
            ("seconds",),
            unit="s",
            width=6,
            thresholds=((None, "green"), (5, "orange"), (60, "red")),
        ),
        Panel(
            "Measurement to storage, now (p95 over probes)",
            "stat",
            """
SELECT coalesce(percentile_cont(0.95) WITHIN GROUP (
           ORDER BY extract(epoch FROM received_at - ts)), 0) AS seconds
FROM sensor_latest
""",
            ("seconds",),
            unit="s",
            width=6,
            thresholds=((None, "green"), (30, "orange"), (300, "red")),
        ),
        Panel(
            "Dead letters",
            "timeseries",
            """
SELECT $__timeGroupAlias(received_at, $__interval), count(*) AS dead_letters
FROM dead_letters WHERE $__timeFilter(received_at)
GROUP BY 1 ORDER BY 1
""",
            ("time", "dead_letters"),
        ),
        Panel(
            "Latest dead letters",
            "table",
            """
SELECT received_at, topic, reason, length(payload) AS bytes
FROM dead_letters WHERE $__timeFilter(received_at)
ORDER BY received_at DESC LIMIT 100
""",
            ("received_at", "topic", "reason", "bytes"),
        ),
        Panel(
            "Readings kept aside, by rule",
            "timeseries",
            """
SELECT $__timeGroupAlias(received_at, $__interval), rule::text AS metric, count(*) AS readings
FROM quarantined_readings WHERE $__timeFilter(received_at)
GROUP BY 1, 2 ORDER BY 1
""",
            ("time", "metric", "readings"),
        ),
        Panel(
            "Who sent what was kept aside",
            "table",
            # A gateway reporting for sensors of another site, a disabled or misplaced gateway,
            # conflicting resends: a misconfigured or stolen gateway shows here.
            """
SELECT gateway, site_id AS site, rule::text AS rule, count(*) AS readings,
       count(*) FILTER (WHERE released_at IS NULL) AS still_kept,
       max(received_at) AS last_at, (array_agg(reason ORDER BY id DESC))[1] AS last_reason
FROM quarantined_readings WHERE $__timeFilter(received_at)
GROUP BY gateway, site_id, rule
ORDER BY still_kept DESC, last_at DESC LIMIT 100
""",
            ("gateway", "site", "rule", "readings", "still_kept", "last_at", "last_reason"),
            width=24,
        ),
        Panel(
            "Nonconformities by rule (each check of each site)",
            "timeseries",
            # Kept by the rules worker (COLDTRAIL_RULES_CONFORMANCE_EVERY_S): a rule's line
            # rising is a site drifting from its profile; zero is a check that found none.
            """
SELECT $__timeGroupAlias(c.checked_at, $__interval), coalesce(f.rule, 'none') AS metric,
       max(coalesce(f.n, 0)) AS findings
FROM conformance_checks c
LEFT JOIN LATERAL (SELECT rule, count(*) AS n FROM conformance_findings
                   WHERE check_id = c.id GROUP BY rule) f ON true
WHERE $__timeFilter(c.checked_at)
GROUP BY 1, 2 ORDER BY 1
""",
            ("time", "metric", "findings"),
        ),
        Panel(
            "Nonconformities found by the latest check",
            "table",
            """
SELECT c.site_id AS site, c.profile, f.rule, f.subject, f.found, f.required, f.source,
       c.checked_at
FROM (SELECT DISTINCT ON (site_id) * FROM conformance_checks
      ORDER BY site_id, checked_at DESC) c
JOIN conformance_findings f ON f.check_id = c.id
ORDER BY c.site_id, f.rule, f.subject
""",
            ("site", "profile", "rule", "subject", "found", "required", "source", "checked_at"),
            width=24,
        ),
        Panel(
            "Gateways",
            "table",
            """
SELECT g.id AS gateway, g.site_id AS site, g.name, last.seen AS last_reading_at,
       CASE WHEN g.disabled THEN 'disabled'
            WHEN last.seen IS NULL THEN 'never heard from'
            WHEN now() - last.seen > interval '10 minutes' THEN 'offline'
            ELSE 'online' END AS state
FROM gateways g
LEFT JOIN LATERAL (SELECT max(received_at) AS seen FROM sensor_latest sl
                   WHERE sl.gateway = g.id) last ON true
ORDER BY (last.seen IS NULL OR now() - last.seen > interval '10 minutes') DESC, g.id
""",
            ("gateway", "site", "name", "last_reading_at", "state"),
            width=24,
        ),
    ),
)

ALL: tuple[Dashboard, ...] = (FLEET, STOREROOMS, EXCURSIONS, SHIPMENT, HEALTH)
