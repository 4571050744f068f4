"""Named, parameterised SQL of the ERP core."""

from coldtrail.readingchain import COLUMNS as READING_LINE

# ------------------------------------------------------------------ audit

# Refused unless the actor is the one the transaction acts as (migration 0017).
AUDIT_RECORD = """
SELECT coldtrail_audit_record(%(actor)s, %(action)s, %(type)s, %(id)s, %(details)s)
"""

AUDIT_ENTRIES = """
SELECT id, at, actor, action, record_type, record_id, old_value, new_value
FROM audit_log
WHERE (%(type)s::text IS NULL OR record_type = %(type)s)
  AND (%(id)s::text IS NULL OR record_id = %(id)s)
  AND (%(actor)s::text IS NULL OR actor = %(actor)s)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""

# The same, newest first, before an id (paging back through the trail).
AUDIT_LATEST = AUDIT_ENTRIES.replace("AND id > %(after)s", "AND id < %(before)s").replace(
    "ORDER BY id", "ORDER BY id DESC"
)

AUDIT_CHAIN = """
SELECT id, at, actor, action, record_type, record_id, old_value::text, new_value::text,
       prev_hash, hash
FROM audit_log ORDER BY id
"""

AUDIT_HEAD = "SELECT last_id, hash FROM audit_head"

# The tables whose changes the trail records, with their trigger's arguments (the key
# columns, then the columns never copied into the trail), NUL-separated.
AUDITED_TABLES = """
SELECT c.relname, t.tgargs FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE p.proname = 'coldtrail_audit_row' AND c.relnamespace = current_schema()::regnamespace
  AND NOT t.tgisinternal
ORDER BY c.relname
"""

COUNT_ROWS_OF = "SELECT count(*) FROM {table}"

# One table's rows against the latest trail entry of each record. The trail's image is read
# back through the table's row type, so values compare as values (a time written in another
# session's time zone is the same time), on the columns the image holds (a column added
# later is in no earlier image). {table} is an identifier from AUDITED_TABLES.
STATE_AGAINST_TRAIL = """
WITH latest AS (
    SELECT DISTINCT ON (record_id) record_id, action, new_value
    FROM audit_log WHERE record_type = %(type)s ORDER BY record_id, id DESC
), cur AS (
    SELECT (SELECT string_agg(d ->> k, '/') FROM unnest(%(keys)s::text[]) AS k) AS record_id, d
    FROM (SELECT to_jsonb(x) - %(hidden)s::text[] AS d FROM {table} x) AS rows
), joined AS (
    SELECT coalesce(cur.record_id, latest.record_id) AS record_id, cur.d, latest.action,
           latest.new_value,
           to_jsonb(jsonb_populate_record(NULL::{table}, latest.new_value))
               - %(hidden)s::text[] AS image
    FROM cur FULL JOIN latest ON latest.record_id = cur.record_id
)
SELECT record_id, problem, columns FROM (
    SELECT record_id,
           CASE WHEN d IS NULL AND action <> 'delete' THEN 'removed'
                WHEN d IS NOT NULL AND (action IS NULL OR action = 'delete') THEN 'added'
                WHEN d IS NOT NULL THEN 'changed' END AS problem,
           ARRAY(SELECT key FROM jsonb_object_keys(new_value) AS key
                 WHERE image -> key IS DISTINCT FROM d -> key ORDER BY key) AS columns
    FROM joined
) AS judged
WHERE problem IN ('removed', 'added') OR (problem = 'changed' AND columns <> '{{}}')
ORDER BY record_id LIMIT %(limit)s
"""

# ------------------------------------------------------------------ the readings' chain

# Links in order, with their batch's span of measured times (from ingest).
READING_CHAIN_LINKS = """
SELECT c.link, c.batch_id, c.readings, c.body, c.prev_hash, c.hash, b.first_ts, b.last_ts
FROM reading_chain c LEFT JOIN ingest_batches b ON b.id = c.batch_id
WHERE %(since)s::timestamptz IS NULL OR c.at >= %(since)s
ORDER BY c.link
"""

READING_CHAIN_HEAD = "SELECT link, hash FROM reading_chain_head"

# Both chains' heads, for an anchor.
CHAIN_HEADS = """
SELECT a.last_id, a.hash, r.link, r.hash FROM audit_head a, reading_chain_head r
"""

# The hashes an anchor names, as the chains hold them now (NULL where the row is gone).
CHAIN_HASHES_AT = """
SELECT (SELECT hash FROM audit_log WHERE id = %(id)s),
       (SELECT hash FROM reading_chain WHERE link = %(link)s)
"""

READING_CHAIN_FINGERPRINTS = "SELECT fingerprints FROM reading_chain WHERE link = %(link)s"

# A group of batches' readings (coldtrail.readingchain: the caller sets the session). The
# span bounds ts so that only the partitions or chunks the batches touched are read; NULL for
# batches without one.
_IN_BATCHES = """
batch_id = ANY(%(batches)s::bigint[])
AND ts >= coalesce(%(first)s::timestamptz, '-infinity')
AND ts <= coalesce(%(last)s::timestamptz, 'infinity')
"""
# The batches' readings, each as its batch id and its canonical line: what COPY prints
# (the caller sets the session), in no order.
COPY_READINGS_OF_BATCHES = f"""
COPY (SELECT batch_id, {READING_LINE} FROM readings WHERE {_IN_BATCHES}) TO STDOUT
"""  # noqa: S608 - constant column lists

READINGS_COUNT = "SELECT count(*) FROM readings"

READINGS_OUTSIDE_CHAIN = """
SELECT r.sensor_id, r.seq, r.batch_id FROM readings r
WHERE NOT EXISTS (SELECT 1 FROM reading_chain c WHERE c.batch_id = r.batch_id)
ORDER BY r.batch_id, r.sensor_id, r.seq LIMIT 10
"""

# A sensor's numbers that ingest claimed (sensor_latest.seqs) and no reading holds.
CLAIMED_NOT_STORED = """
SELECT s FROM sensor_latest l, unnest(l.seqs) AS r, generate_series(lower(r), upper(r) - 1) AS s
WHERE l.sensor_id = %(sensor)s
  AND NOT EXISTS (SELECT 1 FROM readings x WHERE x.sensor_id = l.sensor_id AND x.seq = s)
ORDER BY s LIMIT 10
"""

# ------------------------------------------------------------------ products and lots

_PROFILE_COLUMNS = """id, name, temp_min_c, temp_max_c, rh_min_pct, rh_max_pct, alarm_delay_s,
stability_budget_min, mkt_max_c, hold_on_excursion, release_signatures"""

UPSERT_PROFILE = f"""
INSERT INTO temperature_profiles ({_PROFILE_COLUMNS})
VALUES (%(id)s, %(name)s, %(temp_min_c)s, %(temp_max_c)s, %(rh_min_pct)s, %(rh_max_pct)s,
        %(alarm_delay_s)s, %(stability_budget_min)s, %(mkt_max_c)s, %(hold_on_excursion)s,
        %(release_signatures)s)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name, temp_min_c = excluded.temp_min_c, temp_max_c = excluded.temp_max_c,
    rh_min_pct = excluded.rh_min_pct, rh_max_pct = excluded.rh_max_pct,
    alarm_delay_s = excluded.alarm_delay_s, stability_budget_min = excluded.stability_budget_min,
    mkt_max_c = excluded.mkt_max_c, hold_on_excursion = excluded.hold_on_excursion,
    release_signatures = excluded.release_signatures
"""  # noqa: S608 - a constant column list

PROFILE = f"SELECT {_PROFILE_COLUMNS} FROM temperature_profiles WHERE id = %(id)s"  # noqa: S608
PROFILES = f"SELECT {_PROFILE_COLUMNS} FROM temperature_profiles ORDER BY id"  # noqa: S608

UPSERT_PRODUCT = """
INSERT INTO products (gtin, name, profile_id, serialised)
VALUES (%(gtin)s, %(name)s, %(profile_id)s, %(serialised)s)
ON CONFLICT (gtin) DO UPDATE SET
    name = excluded.name, profile_id = excluded.profile_id, serialised = excluded.serialised
"""

PRODUCTS = "SELECT gtin, name, profile_id, serialised FROM products ORDER BY gtin"
PRODUCT = "SELECT gtin, name, profile_id, serialised FROM products WHERE gtin = %(gtin)s"
PRODUCT_SERIALISED = "SELECT serialised FROM products WHERE gtin = %(gtin)s"

LOT_BY_NUMBER = """
SELECT id, expiry, production_date FROM lots WHERE gtin = %(gtin)s AND lot_number = %(lot)s
FOR UPDATE
"""

INSERT_LOT = """
INSERT INTO lots (gtin, lot_number, expiry, production_date)
VALUES (%(gtin)s, %(lot)s, %(expiry)s, %(production)s)
RETURNING id, expiry, production_date
"""

INSERT_SERIAL = """
INSERT INTO lot_serials (lot_id, serial) VALUES (%(lot)s, %(serial)s) ON CONFLICT DO NOTHING
"""

_LOT_SELECT = """
SELECT l.id, l.gtin, l.lot_number, l.expiry, l.production_date, l.status::text,
       ARRAY(SELECT serial FROM lot_serials s WHERE s.lot_id = l.id ORDER BY serial)
FROM lots l
"""

LOT = _LOT_SELECT + "WHERE l.id = %(id)s"

LOTS = (
    _LOT_SELECT
    + """
WHERE (%(status)s::text IS NULL OR l.status::text = %(status)s)
  AND (%(gtin)s::text IS NULL OR l.gtin = %(gtin)s)
  AND l.id > %(after)s
ORDER BY l.id
LIMIT %(limit)s
"""
)

# ------------------------------------------------------------------ movements and shipments

_MOVEMENT_COLUMNS = """id, lot_id, kind::text, from_location, to_location, quantity, at,
shipment_id, party, recorded_by"""

INSERT_MOVEMENT = f"""
INSERT INTO movements (lot_id, kind, from_location, to_location, quantity, at, shipment_id,
                       party, recorded_by)
VALUES (%(lot)s, %(kind)s, %(from)s, %(to)s, %(qty)s, %(at)s, %(shipment)s, %(party)s, %(by)s)
RETURNING {_MOVEMENT_COLUMNS}
"""  # noqa: S608 - a constant column list

LOT_MOVEMENTS = f"""
SELECT {_MOVEMENT_COLUMNS} FROM movements WHERE lot_id = %(lot)s ORDER BY at, id
"""  # noqa: S608 - a constant column list

_STAY_SELECT = """
SELECT s.lot_id, l.gtin, l.lot_number, s.location_id, s.quantity, lower(s.during),
       upper(s.during)
FROM lot_stays s JOIN lots l ON l.id = s.lot_id
"""

# The GiST index on (location_id, during) answers this; compartments are found by parent.
LOTS_IN_LOCATION = f"""{_STAY_SELECT}
WHERE s.location_id IN (
        SELECT %(loc)s
        UNION ALL
        SELECT id FROM locations WHERE %(children)s AND parent_id = %(loc)s)
  AND s.during && tstzrange(%(start)s, %(end)s, '[)')
ORDER BY lower(s.during), s.lot_id, s.location_id
"""  # noqa: S608 - constant parts

LOT_STAYS = _STAY_SELECT + "WHERE s.lot_id = %(lot)s ORDER BY lower(s.during), s.location_id"

# What lies where now: every open stay, with the lot's product and status.
STOCK_NOW = """
SELECT s.lot_id, l.gtin, p.name, l.lot_number, l.status::text, l.expiry, s.location_id,
       s.quantity, lower(s.during)
FROM lot_stays s
JOIN lots l ON l.id = s.lot_id
JOIN products p ON p.gtin = l.gtin
WHERE upper_inf(s.during)
ORDER BY s.location_id, s.lot_id
LIMIT %(limit)s
"""

LOCATION_KIND = "SELECT kind::text FROM locations WHERE id = %(id)s"
QUARANTINE_AREA = "SELECT quarantine_area FROM locations WHERE id = %(id)s"

# Where on the vehicle each of these lots lies now, of those under quarantine or rejected.
HELD_ABOARD = """
SELECT s.lot_id, s.location_id, s.quantity
FROM lot_stays s
JOIN lots l ON l.id = s.lot_id
JOIN locations v ON v.id = s.location_id
WHERE upper_inf(s.during) AND s.lot_id = ANY(%(lots)s)
  AND (v.id = %(vehicle)s OR v.parent_id = %(vehicle)s)
  AND l.status IN ('quarantined', 'rejected')
ORDER BY s.lot_id, s.location_id
"""

INSERT_SHIPMENT = """
INSERT INTO shipments (id, vehicle_id, origin_site, destination, route)
VALUES (%(id)s, %(vehicle)s, %(origin)s, %(destination)s, %(route)s)
"""

SHIPMENT = """
SELECT id, vehicle_id, origin_site, destination, route, state::text, departed_at, arrived_at
FROM shipments WHERE id = %(id)s
"""

DEPART_SHIPMENT = """
UPDATE shipments SET state = 'in_transit', departed_at = %(at)s WHERE id = %(id)s
"""

ARRIVE_SHIPMENT = """
UPDATE shipments SET state = 'delivered', arrived_at = %(at)s WHERE id = %(id)s
"""

# Each lot a shipment carried: loaded, delivered, and still aboard (loaded, less what was
# delivered or moved off the vehicle under this shipment). Counted per shipment, not from the
# vehicle's contents: two shipments may share a vehicle.
SHIPMENT_LOTS = """
SELECT m.lot_id, l.gtin, l.lot_number,
       coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'loading'), 0),
       coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'delivery'), 0),
       coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'loading'), 0)
       - coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'delivery'
                                         OR (m.kind = 'transfer' AND NOT dst.on_vehicle)), 0)
FROM movements m
JOIN lots l ON l.id = m.lot_id
JOIN shipments sh ON sh.id = m.shipment_id
LEFT JOIN LATERAL (
    SELECT EXISTS (SELECT FROM locations v WHERE v.id = m.to_location
                   AND (v.id = sh.vehicle_id OR v.parent_id = sh.vehicle_id)) AS on_vehicle
) dst ON true
WHERE m.shipment_id = %(id)s
GROUP BY m.lot_id, l.gtin, l.lot_number
ORDER BY m.lot_id
"""

# ------------------------------------------------------------------ outbox

EMIT_EVENT = """
INSERT INTO outbox_events (kind, subject, payload, occurred_at)
VALUES (%(kind)s, %(subject)s, %(payload)s, %(at)s)
RETURNING event_id
"""

UPSERT_DESTINATION = """
INSERT INTO outbox_destinations (name, kind, url, secret, kinds, enabled)
VALUES (%(name)s, %(kind)s, %(url)s, %(secret)s, %(kinds)s, %(enabled)s)
ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url,
    secret = excluded.secret, kinds = excluded.kinds, enabled = excluded.enabled
"""

DESTINATIONS = (
    "SELECT name, kind, url, secret, kinds, enabled FROM outbox_destinations ORDER BY name"
)

LOCK_DESTINATION = """
SELECT name FROM outbox_destinations WHERE name = %(name)s AND enabled FOR UPDATE SKIP LOCKED
"""

# The oldest undelivered events of the destination: deliveries go out in order.
NEXT_DELIVERIES = """
SELECT d.next_attempt_at, d.attempts, e.occurred_at,
       e.id, e.event_id, e.kind, e.subject, e.payload, e.occurred_at
FROM outbox_deliveries d JOIN outbox_events e ON e.id = d.event_id
WHERE d.destination = %(dest)s AND d.delivered_at IS NULL AND d.dead_at IS NULL
ORDER BY d.event_id
LIMIT %(limit)s
"""

DELIVERED = """
UPDATE outbox_deliveries SET delivered_at = %(now)s, attempts = attempts + 1, last_error = NULL
WHERE destination = %(dest)s AND event_id = ANY(%(events)s)
"""

DELIVERY_FAILED = """
UPDATE outbox_deliveries
SET attempts = %(attempts)s, next_attempt_at = %(next)s, dead_at = %(dead)s,
    last_error = %(error)s
WHERE destination = %(dest)s AND event_id = %(event)s
"""

DELIVERY_DEAD = """
SELECT 1 FROM outbox_deliveries
WHERE destination = %(dest)s AND event_id = %(event)s AND dead_at IS NOT NULL
"""

DEAD_DELIVERIES = """
SELECT d.destination, e.event_id, e.kind, d.attempts, d.dead_at, d.last_error
FROM outbox_deliveries d JOIN outbox_events e ON e.id = d.event_id
WHERE d.dead_at IS NOT NULL
ORDER BY d.dead_at DESC
LIMIT %(limit)s
"""

RETRY_DEAD = """
UPDATE outbox_deliveries d SET dead_at = NULL, next_attempt_at = %(now)s
FROM outbox_events e
WHERE e.id = d.event_id AND d.destination = %(dest)s AND e.event_id = %(event)s
  AND d.dead_at IS NOT NULL
RETURNING d.event_id
"""

# ------------------------------------------------------------------ signatures and holds

_SIGNATURE_COLUMNS = """id, signer, signer_name, signer_role::text, meaning::text, reason,
signed_at, record_type, record_id, action, record_digest"""

INSERT_SIGNATURE = f"""
INSERT INTO signatures (signer, signer_name, signer_role, meaning, reason, signed_at,
                        record_type, record_id, action, record_digest)
VALUES (%(signer)s, %(name)s, %(role)s, %(meaning)s, %(reason)s, %(at)s, %(type)s, %(id)s,
        %(action)s, %(digest)s)
RETURNING {_SIGNATURE_COLUMNS}
"""  # noqa: S608 - a constant column list

SIGNATURES_OF = f"""
SELECT {_SIGNATURE_COLUMNS} FROM signatures
WHERE record_type = %(type)s AND record_id = ANY(%(ids)s) ORDER BY record_id, signed_at, id
"""  # noqa: S608 - a constant column list

_HOLD_COLUMNS = """h.id, h.lot_id, l.gtin, l.lot_number, h.reason, h.excursion_id, h.placed_by,
h.placed_at, h.state::text, h.disposed_at"""

INSERT_HOLD = """
INSERT INTO holds (lot_id, reason, excursion_id, placed_by, placed_at)
VALUES (%(lot)s, %(reason)s, %(excursion)s, %(by)s, %(at)s)
ON CONFLICT (lot_id, excursion_id) WHERE excursion_id IS NOT NULL DO NOTHING
RETURNING id
"""

HOLD_FOR_EXCURSION = "SELECT id FROM holds WHERE lot_id = %(lot)s AND excursion_id = %(excursion)s"

HOLD = f"""
SELECT {_HOLD_COLUMNS} FROM holds h JOIN lots l ON l.id = h.lot_id WHERE h.id = %(id)s
"""  # noqa: S608 - a constant column list

HOLD_LOCK = "SELECT state::text FROM holds WHERE id = %(id)s FOR UPDATE"

HOLDS = f"""
SELECT {_HOLD_COLUMNS} FROM holds h JOIN lots l ON l.id = h.lot_id
WHERE (%(state)s::text IS NULL OR h.state::text = %(state)s)
  AND (%(lot)s::bigint IS NULL OR h.lot_id = %(lot)s)
  AND h.id > %(after)s
ORDER BY h.id
LIMIT %(limit)s
"""  # noqa: S608 - a constant column list

RELEASE_SIGNATURES_NEEDED = """
SELECT p.release_signatures FROM holds h
JOIN lots l ON l.id = h.lot_id JOIN products pr ON pr.gtin = l.gtin
JOIN temperature_profiles p ON p.id = pr.profile_id
WHERE h.id = %(id)s
"""

DISPOSE_HOLD = """
UPDATE holds SET state = %(state)s, disposed_at = %(at)s WHERE id = %(id)s AND state = 'open'
"""

# ------------------------------------------------------------------ CAPA

INSERT_CAPA = """
INSERT INTO capas (title, description, owner, due_date, opened_by, opened_at)
VALUES (%(title)s, %(description)s, %(owner)s, %(due)s, %(by)s, %(at)s)
RETURNING id
"""

INSERT_TRANSITION = """
INSERT INTO capa_transitions (capa_id, from_state, to_state, at, by_user, comment)
VALUES (%(capa)s, %(from)s, %(to)s, %(at)s, %(by)s, %(comment)s)
"""

INSERT_CAPA_LINK = """
INSERT INTO capa_links (capa_id, kind, ref) VALUES (%(capa)s, %(kind)s, %(ref)s)
ON CONFLICT DO NOTHING
"""

_ACTION_COLUMNS = "id, description, owner, due_date, done_at, done_by, outcome"

INSERT_CAPA_ACTION = f"""
INSERT INTO capa_actions (capa_id, description, owner, due_date)
VALUES (%(capa)s, %(description)s, %(owner)s, %(due)s)
RETURNING {_ACTION_COLUMNS}
"""  # noqa: S608 - a constant column list

COMPLETE_CAPA_ACTION = f"""
UPDATE capa_actions SET done_at = %(at)s, done_by = %(by)s, outcome = %(outcome)s
WHERE capa_id = %(capa)s AND id = %(id)s AND done_at IS NULL
RETURNING {_ACTION_COLUMNS}
"""  # noqa: S608 - a constant column list

_EVIDENCE_COLUMNS = "id, filename, media_type, sha256, octet_length(content), added_by, added_at"

INSERT_EVIDENCE = f"""
INSERT INTO capa_evidence (capa_id, filename, media_type, sha256, content, added_by, added_at)
VALUES (%(capa)s, %(filename)s, %(media_type)s, %(sha256)s, %(content)s, %(by)s, %(at)s)
RETURNING {_EVIDENCE_COLUMNS}
"""  # noqa: S608 - a constant column list

EVIDENCE_CONTENT = f"""
SELECT {_EVIDENCE_COLUMNS}, content FROM capa_evidence WHERE capa_id = %(capa)s AND id = %(id)s
"""  # noqa: S608 - a constant column list

CAPA_EVIDENCE = f"""
SELECT {_EVIDENCE_COLUMNS} FROM capa_evidence WHERE capa_id = %(capa)s ORDER BY id
"""  # noqa: S608 - a constant column list

CAPA = """
SELECT id, title, description, state::text, owner, due_date, opened_by, opened_at, root_cause,
       effectiveness, closed_at
FROM capas WHERE id = %(id)s
"""

CAPA_LOCK = "SELECT state::text FROM capas WHERE id = %(id)s FOR UPDATE"

CAPA_ACTIONS = f"""
SELECT {_ACTION_COLUMNS} FROM capa_actions WHERE capa_id = %(capa)s ORDER BY id
"""  # noqa: S608 - a constant column list

CAPA_LINKS = "SELECT kind, ref FROM capa_links WHERE capa_id = %(capa)s ORDER BY kind, ref"

CAPA_TRANSITIONS = """
SELECT from_state::text, to_state::text, at, by_user, comment FROM capa_transitions
WHERE capa_id = %(capa)s ORDER BY at, id
"""

ADVANCE_CAPA = """
UPDATE capas SET state = %(to)s, root_cause = coalesce(%(root_cause)s, root_cause),
    effectiveness = coalesce(%(effectiveness)s, effectiveness), closed_at = %(closed_at)s
WHERE id = %(id)s
"""

CAPA_IDS = """
SELECT id FROM capas
WHERE (%(state)s::text IS NULL OR state::text = %(state)s) AND id > %(after)s
ORDER BY id LIMIT %(limit)s
"""

CAPA_OVERDUE = """
SELECT id, title, owner, 'capa', due_date, %(today)s::date - due_date
FROM capas WHERE state <> 'closed' AND due_date < %(today)s::date
UNION ALL
SELECT c.id, c.title, a.owner, 'action ' || a.id || ': ' || a.description, a.due_date,
       %(today)s::date - a.due_date
FROM capa_actions a JOIN capas c ON c.id = a.capa_id
WHERE c.state <> 'closed' AND a.done_at IS NULL AND a.due_date < %(today)s::date
ORDER BY 6 DESC, 1
"""

# ------------------------------------------------------------------ KPIs

VEHICLE_LOCATIONS = """
SELECT id FROM locations WHERE id = %(vehicle)s OR parent_id = %(vehicle)s ORDER BY id
"""

# Each sensor's placement clipped to the period, cut into GSP intervals from its start; an
# interval counts as recorded if it holds at least one valid ('ok') reading.
KPI_COMPLETENESS = """
WITH placed AS (
    SELECT a.location_id, a.sensor_id,
           greatest(lower(a.valid), %(start)s) AS t0,
           least(coalesce(upper(a.valid), 'infinity'), %(end)s) AS t1,
           CASE WHEN l.kind IN ('vehicle', 'compartment') THEN %(transport_s)s
                ELSE %(storage_s)s END AS step
    FROM sensor_assignments a JOIN locations l ON l.id = a.location_id
    JOIN sensors s ON s.id = a.sensor_id AND s.kind = 'probe'
    WHERE a.valid && tstzrange(%(start)s, %(end)s, '[)')
      AND (%(locs)s::text[] IS NULL OR a.location_id = ANY(%(locs)s))
)
SELECT p.location_id, count(DISTINCT p.sensor_id)::int,
       sum(ceil(extract(epoch FROM p.t1 - p.t0) / p.step))::bigint,
       sum((SELECT count(DISTINCT floor(extract(epoch FROM r.ts - p.t0) / p.step))
            FROM readings r
            WHERE r.sensor_id = p.sensor_id AND r.ts >= p.t0 AND r.ts < p.t1
              AND r.status = 'ok'))::bigint
FROM placed p
GROUP BY p.location_id
ORDER BY p.location_id
"""

KPI_EXCURSION_RESPONSE = """
WITH e AS (
    -- Acknowledged when a person acknowledged its alarm (or one of its probes' excursions).
    SELECT le.id, le.detected_at,
           coalesce((SELECT min(a.acknowledged_at) FROM alarms a
                     WHERE a.location_excursion_id = le.id),
                    (SELECT min(x.acknowledged_at) FROM excursions x
                     WHERE x.location_excursion_id = le.id)) AS acknowledged_at
    FROM location_excursions le
    WHERE le.detected_at >= %(start)s AND le.detected_at < %(end)s AND le.state <> 'withdrawn'
), ack AS (
    SELECT extract(epoch FROM acknowledged_at - detected_at)::float8 AS s
    FROM e WHERE acknowledged_at IS NOT NULL
), disp AS (
    SELECT extract(epoch FROM max(h.disposed_at) - e.detected_at)::float8 AS s
    FROM e JOIN holds h ON h.excursion_id = e.id
    GROUP BY e.id, e.detected_at
    HAVING bool_and(h.state <> 'open')
)
SELECT (SELECT count(*) FROM e)::int,
       (SELECT count(*) FROM e WHERE acknowledged_at IS NULL)::int,
       (SELECT count(*) FROM ack)::int,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM ack),
       (SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FROM ack),
       (SELECT max(s) FROM ack),
       (SELECT count(*) FROM disp)::int,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM disp),
       (SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FROM disp),
       (SELECT max(s) FROM disp),
       (SELECT count(*) FROM holds h JOIN e ON e.id = h.excursion_id WHERE h.state = 'open')::int
"""

KPI_CAPA_CYCLE = """
WITH done AS (
    SELECT extract(epoch FROM closed_at - opened_at)::float8 AS s FROM capas
    WHERE closed_at >= %(start)s AND closed_at < %(end)s
)
SELECT (SELECT count(*) FROM done)::int,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM done),
       (SELECT percentile_cont(0.9) WITHIN GROUP (ORDER BY s) FROM done),
       (SELECT max(s) FROM done),
       (SELECT count(*) FROM capas WHERE state <> 'closed' AND opened_at < %(end)s)::int,
       (SELECT count(*) FROM capas
        WHERE state <> 'closed' AND due_date < (%(end)s::timestamptz)::date)::int
"""

KPI_TRACEABILITY = """
WITH first_move AS (
    SELECT DISTINCT ON (lot_id) lot_id, kind FROM movements ORDER BY lot_id, at, id
)
SELECT (SELECT count(*) FROM lots)::int,
       (SELECT count(*) FROM first_move WHERE kind = 'receiving')::int,
       (SELECT count(*) FROM lots l WHERE NOT EXISTS
            (SELECT FROM movements m WHERE m.lot_id = l.id))::int
"""

FIND_MOVEMENTS = f"""
SELECT {_MOVEMENT_COLUMNS} FROM movements
WHERE (%(lot)s::bigint IS NULL OR lot_id = %(lot)s)
  AND (%(shipment)s::text IS NULL OR shipment_id = %(shipment)s)
  AND (%(location)s::text IS NULL OR from_location = %(location)s OR to_location = %(location)s)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""  # noqa: S608 - a constant column list

# A shipment is in the period when its journey [departed, arrived) overlaps it; one not yet
# departed, when it was created in it.
FIND_SHIPMENTS = """
SELECT id, vehicle_id, origin_site, destination, route, state::text, departed_at, arrived_at
FROM shipments
WHERE (%(state)s::text IS NULL OR state::text = %(state)s)
  AND (%(vehicle)s::text IS NULL OR vehicle_id = %(vehicle)s)
  AND (%(since)s::timestamptz IS NULL
       OR coalesce(arrived_at, 'infinity') >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR coalesce(departed_at, created_at) < %(until)s)
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s
"""

# The location excursions that touched a lot and are still open.
OPEN_EXCURSIONS_OF_LOT = """
SELECT le.id, le.location_id, le.started_at, le.max_c
FROM excursion_impacts i JOIN location_excursions le ON le.id = i.location_excursion_id
WHERE i.lot_id = %(lot)s AND le.state = 'open'
ORDER BY le.id
"""
