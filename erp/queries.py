"""Named, parameterised SQL of the ERP core."""

# ------------------------------------------------------------------ audit

AUDIT_RECORD = """
INSERT INTO audit_log (actor, action, record_type, record_id, new_value)
VALUES (%(actor)s, %(action)s, %(type)s, %(id)s, %(details)s)
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

AUDIT_CHAIN = """
SELECT id, at, actor, action, record_type, record_id, old_value::text, new_value::text,
       prev_hash, hash
FROM audit_log ORDER BY id
"""

AUDIT_HEAD = "SELECT last_id, hash FROM audit_head"

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

LOCATION_KIND = "SELECT kind::text FROM locations WHERE id = %(id)s"

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

# Each lot a shipment carried: loaded, delivered, and what is still aboard its vehicle.
SHIPMENT_LOTS = """
SELECT m.lot_id, l.gtin, l.lot_number,
       sum(m.quantity) FILTER (WHERE m.kind = 'loading'),
       coalesce(sum(m.quantity) FILTER (WHERE m.kind = 'delivery'), 0),
       coalesce((SELECT sum(st.quantity) FROM lot_stays st
                 JOIN locations v ON v.id = st.location_id
                 WHERE st.lot_id = m.lot_id AND upper_inf(st.during)
                   AND (v.id = sh.vehicle_id OR v.parent_id = sh.vehicle_id)), 0)
FROM movements m JOIN lots l ON l.id = m.lot_id JOIN shipments sh ON sh.id = m.shipment_id
WHERE m.shipment_id = %(id)s
GROUP BY m.lot_id, l.gtin, l.lot_number, sh.vehicle_id
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

# The oldest undelivered event of the destination: deliveries go out in order.
NEXT_DELIVERY = """
SELECT d.next_attempt_at, d.attempts, e.occurred_at,
       e.id, e.event_id, e.kind, e.subject, e.payload, e.occurred_at
FROM outbox_deliveries d JOIN outbox_events e ON e.id = d.event_id
WHERE d.destination = %(dest)s AND d.delivered_at IS NULL AND d.dead_at IS NULL
ORDER BY d.event_id
LIMIT 1
"""

DELIVERED = """
UPDATE outbox_deliveries SET delivered_at = %(now)s, attempts = attempts + 1, last_error = NULL
WHERE destination = %(dest)s AND event_id = %(event)s
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
WHERE record_type = %(type)s AND record_id = %(id)s ORDER BY signed_at, id
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
