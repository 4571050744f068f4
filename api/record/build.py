"""The continuous temperature record of a shipment, or of a location over a period.

One builder reads everything once; the JSON, CSV, PDF and EPCIS forms only lay it out, so
the four can't disagree. A *channel* is one sensor in one place over the part of the period
it was placed there. Definitions, used by every form and stated in each:

- A value *stands for* the time until the sensor's next valid value, never more than the
  GSP recording interval of the place (5 min in transport, 30 min in storage): a gap is not
  filled by the value before it. The last value stands for the typical step, likewise capped.
  Mean kinetic temperature and time out of range weigh values by that time.
- A *gap* is a stretch longer than the interval without a valid value: between two valid
  values, or from the channel's start to its first, or from its last to the channel's end.
  It is listed with the readings the logger sent in it (unavailable) and the sequence
  numbers that never arrived.
- *Completeness* is that of the KPI report: of the interval-long slots from the channel's
  start, the share holding at least one valid value.
- The *range* of each value is the one the rules engine judged it by: the place's own,
  narrowed by the profiles of the products stored there at that moment.
- *Calibration status* of a value: ``valid`` when a passed certificate covers its (UTC)
  date, ``overdue`` when the sensor has calibration on file that doesn't, ``none`` when it
  has none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

import numpy as np

from coldtrail.api.record.forms import csv_chunks
from coldtrail.erp import anchors, kpi, masterdata, movements, signatures
from coldtrail.erp import queries as erp_q
from coldtrail.erp.tx import Conn
from coldtrail.errors import NotFound, RuleViolation
from coldtrail.rules.fetch import (
    PG_EPOCH_S,
    in_order,
    load_places,
    place_history,
    range_history,
)
from coldtrail.rules.mkt import weighted_mkt, weights
from coldtrail.rules.queries import PRODUCT_RANGES
from coldtrail.rules.ranges import Columns, spans_by_location, with_ranges

MAX_PERIOD = timedelta(days=400)
_PG_EPOCH_US = int(PG_EPOCH_S) * 1_000_000
STATUS_NAMES = ("ok", "unavailable", "not_available")
CALIBRATION_NAMES = ("valid", "overdue", "none")

_CHANNELS = """
SELECT a.sensor_id, s.model, s.serial, s.calibration_due, a.location_id, l.name, l.kind::text,
       a.position, greatest(lower(a.valid), %(start)s),
       least(coalesce(upper(a.valid), 'infinity'), %(end)s)
FROM sensor_assignments a
JOIN sensors s ON s.id = a.sensor_id
JOIN locations l ON l.id = a.location_id
WHERE a.location_id = ANY(%(locations)s) AND a.valid && tstzrange(%(start)s, %(end)s, '[)')
  AND s.kind = 'probe'
ORDER BY a.location_id, a.sensor_id, lower(a.valid)
"""

# Packed as fixed-width big-endian bytes that numpy reads in place (see rules.fetch). The
# index hands each sensor's rows over in time order as a rule, so only what isn't is sorted
# here: sorting in the server costs a third of the query. STATUS_NAMES follows the CASE.
_ROW = np.dtype(
    [("g", ">i4"), ("ts", ">i8"), ("rx", ">i8"), ("seq", ">i8"), ("st", ">i2"),
     ("temp", ">f8"), ("rh", ">f8")]
)  # fmt: skip
_READINGS = """
SELECT string_agg(int4send(w.g::int4) || timestamptz_send(r.ts)
                  || timestamptz_send(r.received_at) || int8send(r.seq)
                  || int2send(CASE r.status WHEN 'ok' THEN 0 WHEN 'unavailable' THEN 1
                              ELSE 2 END::int2)
                  || float8send(coalesce(r.temperature_c, 'NaN'))
                  || float8send(coalesce(r.humidity_pct, 'NaN')), ''::bytea)
FROM unnest(%(sensors)s::text[], %(froms)s::timestamptz[], %(tos)s::timestamptz[])
     WITH ORDINALITY AS w(sensor_id, t0, t1, g)
JOIN readings r ON r.sensor_id = w.sensor_id AND r.ts >= w.t0 AND r.ts < w.t1
"""

_CERTIFICATES = """
SELECT sensor_id, certificate_no, issuer, calibrated_on, valid_until, passed, max_error_c
FROM calibration_certificates WHERE sensor_id = ANY(%(sensors)s)
ORDER BY sensor_id, calibrated_on, id
"""

_SHIPMENT_SPAN = """
SELECT min(at) FILTER (WHERE kind = 'loading'), max(at) FILTER (WHERE kind = 'delivery')
FROM movements WHERE shipment_id = %(id)s
"""

# Where in the vehicle the shipment's lots were during it: the record is of what they went
# through, not of a compartment carrying other goods at another temperature.
_SHIPMENT_PLACES = """
SELECT DISTINCT s.location_id FROM lot_stays s JOIN locations l ON l.id = s.location_id
WHERE s.lot_id = ANY(%(lots)s) AND (l.id = %(vehicle)s OR l.parent_id = %(vehicle)s)
  AND s.during && tstzrange(%(start)s, %(end)s, '[)')
ORDER BY 1
"""

_EXCURSIONS = """
SELECT le.id, le.location_id, le.started_at, le.ended_at, le.state::text, le.late, le.sensors,
       le.limit_min_c, le.limit_max_c, le.min_c, le.max_c, le.duration_s, le.degree_minutes,
       le.mkt_c, c.id, c.state::text, le.detected_at
FROM location_excursions le
-- The CAPA the rules opened, or else the first one QA linked to it later.
LEFT JOIN capas c ON c.id = coalesce(
    le.capa_id,
    (SELECT min(k.capa_id) FROM capa_links k WHERE k.kind = 'excursion' AND k.ref = le.id::text))
WHERE le.location_id = ANY(%(locations)s) AND le.started_at < %(end)s
  AND coalesce(le.ended_at, 'infinity') > %(start)s
ORDER BY le.started_at, le.id
"""

_DISPOSITIONS = """
SELECT h.id, h.excursion_id, h.lot_id, l.gtin, l.lot_number, h.state::text, h.placed_at,
       h.disposed_at, h.reason
FROM holds h JOIN lots l ON l.id = h.lot_id
WHERE h.excursion_id = ANY(%(excursions)s)
  AND (%(lots)s::bigint[] IS NULL OR h.lot_id = ANY(%(lots)s))
ORDER BY h.excursion_id, h.id
"""

_LOTS_IN_PLACES = """
SELECT DISTINCT ON (l.id) l.id, l.gtin, l.lot_number, p.name, l.status::text
FROM lot_stays s JOIN lots l ON l.id = s.lot_id JOIN products p ON p.gtin = l.gtin
WHERE s.location_id = ANY(%(locations)s) AND s.during && tstzrange(%(start)s, %(end)s, '[)')
ORDER BY l.id
"""
_LOTS_OF_SHIPMENT = """
SELECT l.id, l.gtin, l.lot_number, p.name, l.status::text
FROM lots l JOIN products p ON p.gtin = l.gtin
WHERE l.id = ANY(%(ids)s) ORDER BY l.id
"""


@dataclass(frozen=True)
class LotRef:
    lot_id: int
    gtin: str
    lot_number: str
    product: str
    status: str
    quantity: Decimal | None = None
    """For a shipment: how much was loaded."""


@dataclass(frozen=True)
class Certificate:
    certificate_no: str
    issuer: str
    calibrated_on: date
    valid_until: date
    passed: bool
    max_error_c: float | None


@dataclass(frozen=True)
class Stats:
    readings: int
    valid: int
    min_c: float | None
    max_c: float | None
    mean_c: float | None
    """Arithmetic mean of the valid values."""
    mkt_c: float | None
    covered_s: float
    """The time the valid values stand for."""
    out_of_range_s: float
    intervals_expected: int
    intervals_recorded: int

    @property
    def completeness(self) -> float | None:
        if self.intervals_expected == 0:
            return None
        return self.intervals_recorded / self.intervals_expected


@dataclass(frozen=True)
class Gap:
    sensor_id: str
    location_id: str
    start: datetime
    end: datetime
    readings_unavailable: int
    """Readings the logger sent in the gap without a valid value."""
    missing_seq: int | None
    """Sequence numbers between the bounding readings that never arrived (None at an edge)."""

    @property
    def duration_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True)
class Channel:
    sensor_id: str
    model: str
    serial: str
    location_id: str
    location_name: str
    location_kind: str
    position: str
    start: datetime
    end: datetime
    interval_s: int
    calibration_due: date | None
    certificates: tuple[Certificate, ...]
    # One entry per reading, ascending by time of measurement.
    ts_us: np.ndarray  # microseconds since 1970, exact
    received_us: np.ndarray
    seq: np.ndarray
    status: np.ndarray  # index into STATUS_NAMES
    temp: np.ndarray  # nan: no value
    humidity: np.ndarray
    lo: np.ndarray  # nan: no lower limit
    hi: np.ndarray
    delay_s: np.ndarray  # the alarm delay the rules judged each reading by
    calibration: np.ndarray  # index into CALIBRATION_NAMES
    stands_s: np.ndarray  # time each valid value stands for; 0 for the others
    stats: Stats
    gaps: tuple[Gap, ...]

    @property
    def epoch_s(self) -> np.ndarray:
        return np.asarray(self.ts_us / 1e6, dtype=float)

    @cached_property
    def valid(self) -> np.ndarray:
        return _valid(self.status, self.temp)

    @cached_property
    def out_of_range(self) -> np.ndarray:
        return _outside(self.valid, self.temp, self.lo, self.hi)

    @cached_property
    def limits(self) -> tuple[Limit, ...]:
        """The range and alarm delay in force, one entry for each stretch they held, from
        the channel's start to its end (a change takes effect at the reading it first
        applied to)."""
        if self.ts_us.size == 0:
            return ()
        keys = np.stack([self.lo, self.hi, self.delay_s])
        # NaN == NaN is False: compare the NaN masks and the numbers apart.
        nan = np.isnan(keys)
        same = (np.diff(nan.astype(np.int8), axis=1) == 0).all(axis=0) & (
            (np.diff(np.nan_to_num(keys), axis=1) == 0) | nan[:, 1:]
        ).all(axis=0)
        starts = np.concatenate(([0], np.flatnonzero(~same) + 1)).tolist()
        ends = [*starts[1:], self.ts_us.size]
        out = []
        for s, e in zip(starts, ends, strict=True):
            begin = self.start if s == 0 else _at(int(self.ts_us[s]))
            end = self.end if e == self.ts_us.size else _at(int(self.ts_us[e]))
            lo, hi, delay = (float(v) for v in keys[:, s])
            out.append(Limit(begin, end, None if lo != lo else lo, None if hi != hi else hi,
                             delay))  # fmt: skip
        return tuple(out)


@dataclass(frozen=True)
class Limit:
    """A channel's range and alarm delay over a stretch of the record."""

    start: datetime
    end: datetime
    temp_min_c: float | None
    temp_max_c: float | None
    alarm_delay_s: float


def _at(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def _valid(status: np.ndarray, temp: np.ndarray) -> np.ndarray:
    return np.asarray((status == 0) & ~np.isnan(temp), dtype=bool)


def _outside(valid: np.ndarray, temp: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Valid values outside their range; a missing limit (NaN) bounds nothing."""
    with np.errstate(invalid="ignore"):
        return np.asarray(valid & ((temp < lo) | (temp > hi)), dtype=bool)


@dataclass(frozen=True)
class SignatureRef:
    signer: str
    signer_name: str
    signer_role: str
    meaning: str
    reason: str
    action: str
    signed_at: datetime


@dataclass(frozen=True)
class Disposition:
    hold_id: int
    lot_id: int
    gtin: str
    lot_number: str
    state: str
    placed_at: datetime
    disposed_at: datetime | None
    reason: str
    signatures: tuple[SignatureRef, ...]


@dataclass(frozen=True)
class ExcursionEntry:
    id: int
    location_id: str
    started_at: datetime
    ended_at: datetime | None
    state: str
    late: bool
    sensors: tuple[str, ...]
    limit_min_c: float | None
    limit_max_c: float | None
    min_c: float
    max_c: float
    duration_s: float
    degree_minutes: float
    mkt_c: float | None
    capa_id: int | None
    capa_state: str | None
    detected_at: datetime
    dispositions: tuple[Disposition, ...]


@dataclass(frozen=True)
class Subject:
    kind: Literal["shipment", "location"]
    id: str
    name: str
    locations: tuple[str, ...]
    shipment: movements.Shipment | None = None
    timezone: str = "UTC"
    """The site's: the PDF writes its times there, with the offset."""


@dataclass(frozen=True)
class Record:
    subject: Subject
    start: datetime
    end: datetime
    generated_at: datetime
    lots: tuple[LotRef, ...]
    channels: tuple[Channel, ...]
    summary: Stats
    out_of_range_s: float
    """Time any probe was out of range (the union of the channels' spans)."""
    excursions: tuple[ExcursionEntry, ...]
    heads: anchors.Heads
    """The audit trail's and the readings' chain heads when it was built: every reading in
    it lies in a link up to ``heads.link``, so a copy of the record can be checked later
    against the chains and the anchors kept outside."""

    @cached_property
    def data_sha256(self) -> str:
        """SHA-256 of the CSV form's bytes (the reading rows), written once more in chunks
        rather than kept: every form carries it, the CSV form's header first."""
        digest = hashlib.sha256()
        for chunk in csv_chunks(self.channels):
            digest.update(chunk)
        return digest.hexdigest()

    @property
    def gaps(self) -> list[Gap]:
        return [g for c in self.channels for g in c.gaps]


def shipment_record(conn: Conn, shipment_id: str, now: datetime) -> Record:
    ship = movements.get_shipment(conn, shipment_id)
    loaded_at, delivered_at = conn.execute(_SHIPMENT_SPAN, {"id": shipment_id}).fetchone() or (
        None,
        None,
    )
    starts = [t for t in (loaded_at, ship.departed_at) if t is not None]
    if not starts:
        raise RuleViolation(
            f"shipment {shipment_id} has neither been loaded nor departed: no record yet"
        )
    start = min(starts)
    ends = [t for t in (ship.arrived_at, delivered_at) if t is not None]
    end = max(ends) if ship.state == "delivered" and ends else now
    if end <= start:
        raise RuleViolation(f"shipment {shipment_id}: nothing recorded yet (it starts {start})")
    aboard = movements.shipment_lots(conn, shipment_id)
    quantities = {s.lot_id: s.loaded for s in aboard}
    vehicle = [r[0] for r in conn.execute(erp_q.VEHICLE_LOCATIONS, {"vehicle": ship.vehicle_id})]
    held = [
        r[0]
        for r in conn.execute(
            _SHIPMENT_PLACES,
            {"lots": list(quantities), "vehicle": ship.vehicle_id, "start": start, "end": end},
        )
    ]
    # A lot loaded into the vehicle itself (no compartment named), or none known: all of it.
    places = held if held and ship.vehicle_id not in held else vehicle
    lots = [
        LotRef(r[0], r[1], r[2], r[3], r[4], quantity=quantities.get(r[0]))
        for r in conn.execute(_LOTS_OF_SHIPMENT, {"ids": list(quantities)})
    ]
    subject = Subject("shipment", ship.id, f"{ship.origin_site} → {ship.destination}",
                      tuple(places), ship, _timezone(conn, ship.vehicle_id))  # fmt: skip
    return _build(conn, subject, start, end, now, lots, list(quantities))


def location_record(
    conn: Conn, location_id: str, start: datetime, end: datetime, now: datetime
) -> Record:
    if end <= start:
        raise RuleViolation("a record needs a period: its end after its start")
    if end - start > MAX_PERIOD:
        raise RuleViolation(f"a record covers at most {MAX_PERIOD.days} days; split the period")
    place = masterdata.get_location(conn, location_id)
    if place is None:
        raise NotFound(f"no location {location_id}")
    # A place and its compartments: the query serves vehicles and rooms alike.
    places = [r[0] for r in conn.execute(erp_q.VEHICLE_LOCATIONS, {"vehicle": location_id})]
    lots = [
        LotRef(*r)
        for r in conn.execute(_LOTS_IN_PLACES, {"locations": places, "start": start, "end": end})
    ]
    subject = Subject("location", place.id, place.name, tuple(places), None,
                      _timezone(conn, place.id))  # fmt: skip
    # A period reaching into the future ends now: what has not happened yet is no gap (it
    # counted as one, and a record run mid-period showed 50 % complete).
    return _build(conn, subject, start, max(start, min(end, now)), now, lots, None)


_TIMEZONE = "SELECT s.timezone FROM locations l JOIN sites s ON s.id = l.site_id WHERE l.id = %s"


def _timezone(conn: Conn, location_id: str) -> str:
    row = conn.execute(_TIMEZONE, (location_id,)).fetchone()
    return "UTC" if row is None else str(row[0])


def _build(
    conn: Conn,
    subject: Subject,
    start: datetime,
    end: datetime,
    now: datetime,
    lots: list[LotRef],
    lot_filter: list[int] | None,
) -> Record:
    rows = conn.execute(
        _CHANNELS, {"locations": list(subject.locations), "start": start, "end": end}
    ).fetchall()
    sensors = [r[0] for r in rows]
    certs: dict[str, list[Certificate]] = {}
    for r in conn.execute(_CERTIFICATES, {"sensors": sensors}):
        certs.setdefault(r[0], []).append(Certificate(*r[1:]))
    packed = conn.execute(
        _READINGS,
        {"sensors": sensors, "froms": [r[8] for r in rows], "tos": [r[9] for r in rows]},
        binary=True,
    ).fetchone()
    data = np.frombuffer((packed[0] if packed else None) or b"", dtype=_ROW)
    if not in_order(data):
        data = data[np.lexsort((data["seq"], data["ts"], data["g"]))]
    group = data["g"].astype(np.int64) - 1
    places = load_places(conn)
    spans = spans_by_location(
        conn.execute(
            PRODUCT_RANGES, {"locations": list(subject.locations), "since": start, "until": end}
        ),
        **range_history(conn),
    )
    codes = np.array([places.code[r[4]] for r in rows], dtype=np.int64)
    epoch = data["ts"].astype(np.int64) / 1e6 + PG_EPOCH_S
    temp = data["temp"].astype(float)
    judged = with_ranges(
        Columns(
            sensors=sensors,
            group=group,
            epoch_s=epoch,
            seq=data["seq"].astype(np.int64),
            status_ok=data["st"] == 0,
            temp=temp,
            humidity=data["rh"].astype(float),
            battery=np.full(epoch.size, np.nan),
            loc=codes[group] if rows else np.zeros(0, dtype=np.int64),
            places=places,
        ),
        spans,
        place_history(conn),
    )
    bounds = np.searchsorted(group, np.arange(len(rows) + 1))
    channels = [
        _channel(
            r,
            certs.get(r[0], []),
            slice(int(bounds[i]), int(bounds[i + 1])),
            data,
            epoch,
            judged.temperature.lo,
            judged.temperature.hi,
            judged.temperature.delay_s,
        )
        for i, r in enumerate(rows)
    ]
    excursions = _excursions(conn, subject, start, end, lot_filter)
    # Read after the readings: each reading above is in a link no later than these heads.
    heads = anchors.heads(conn)
    return Record(
        subject=subject,
        start=start,
        end=end,
        generated_at=now,
        lots=tuple(lots),
        channels=tuple(channels),
        summary=_summary([c.stats for c in channels], channels),
        out_of_range_s=_union_s(channels),
        excursions=tuple(excursions),
        heads=heads,
    )


def _channel(
    row: tuple[Any, ...],
    certs: list[Certificate],
    part: slice,
    data: np.ndarray,
    epoch: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    delay: np.ndarray,
) -> Channel:
    sensor, model, serial, due, loc, loc_name, kind, position, t0, t1 = row
    interval = (
        kpi.TRANSPORT_INTERVAL_S if kind in ("vehicle", "compartment") else (kpi.STORAGE_INTERVAL_S)
    )
    d = data[part]
    t = epoch[part]
    status = d["st"].astype(np.int64)
    temp = d["temp"].astype(float)
    valid = _valid(status, temp)
    stands = np.zeros(t.size)
    if valid.any():
        stands[valid] = weights(t[valid], max_gap_s=float(interval))
        # Never past the channel's end: a record of a running shipment ends now.
        last = np.flatnonzero(valid)[-1]
        stands[last] = min(stands[last], max(t1.timestamp() - t[last], 0.0))
    a, b = t0.timestamp(), t1.timestamp()
    chan_lo, chan_hi = lo[part].copy(), hi[part].copy()
    out = _outside(valid, temp, chan_lo, chan_hi)
    values = temp[valid]
    stats = Stats(
        readings=int(t.size),
        valid=int(valid.sum()),
        min_c=float(values.min()) if values.size else None,
        max_c=float(values.max()) if values.size else None,
        mean_c=float(values.mean()) if values.size else None,
        mkt_c=weighted_mkt(values, stands[valid]) if values.size and stands.sum() > 0 else None,
        covered_s=float(stands.sum()),
        out_of_range_s=float(stands[out].sum()),
        intervals_expected=int(np.ceil((b - a) / interval)),
        intervals_recorded=int(np.unique(np.floor((t[valid] - a) / interval)).size),
    )
    return Channel(
        sensor_id=sensor,
        model=model,
        serial=serial,
        location_id=loc,
        location_name=loc_name,
        location_kind=kind,
        position=position,
        start=t0,
        end=t1,
        interval_s=interval,
        calibration_due=due,
        certificates=tuple(certs),
        ts_us=d["ts"].astype(np.int64) + _PG_EPOCH_US,
        received_us=d["rx"].astype(np.int64) + _PG_EPOCH_US,
        seq=d["seq"].astype(np.int64),
        status=status,
        temp=temp,
        humidity=d["rh"].astype(float),
        lo=chan_lo,
        hi=chan_hi,
        delay_s=delay[part].copy(),
        calibration=_calibration(t, certs, due),
        stands_s=stands,
        stats=stats,
        gaps=tuple(_gaps(sensor, loc, a, b, t, d["seq"].astype(np.int64), valid, interval)),
    )


def _calibration(t: np.ndarray, certs: list[Certificate], due: date | None) -> np.ndarray:
    """``valid`` only where a passed certificate covers the day: a due date on the sensor
    with no certificate on file is a claim, not evidence (``none``)."""
    del due  # the calibration_overdue alarm's business, not the record's evidence
    if not certs:
        return np.full(t.size, 2, dtype=np.int64)
    day = np.floor(t / 86400.0)
    covered = np.zeros(t.size, dtype=bool)
    for c in certs:
        if c.passed:
            covered |= (day >= _day(c.calibrated_on)) & (day <= _day(c.valid_until))
    return np.where(covered, 0, 1).astype(np.int64)


def _day(d: date) -> float:
    return float((d - date(1970, 1, 1)).days)


def _gaps(
    sensor: str,
    loc: str,
    a: float,
    b: float,
    t: np.ndarray,
    seq: np.ndarray,
    valid: np.ndarray,
    interval: int,
) -> list[Gap]:
    idx = np.flatnonzero(valid)
    edges = np.concatenate(([a], t[idx], [b]))
    found: list[Gap] = []
    for k in np.flatnonzero(np.diff(edges) > interval):
        lo_t, hi_t = float(edges[k]), float(edges[k + 1])
        inside = int(np.count_nonzero((t > lo_t) & (t < hi_t)))
        before = int(idx[k - 1]) if k >= 1 else None
        after = int(idx[k]) if k < idx.size else None
        missing = (
            int(seq[after] - seq[before] - 1) - inside
            if before is not None and after is not None
            else None
        )
        found.append(Gap(sensor, loc, utc(lo_t), utc(hi_t), inside, missing))
    return found


def _summary(stats: list[Stats], channels: list[Channel]) -> Stats:
    values = np.concatenate([c.temp[c.valid] for c in channels]) if channels else np.zeros(0)
    mkts = [s.mkt_c for s in stats if s.mkt_c is not None]
    return Stats(
        readings=sum(s.readings for s in stats),
        valid=sum(s.valid for s in stats),
        min_c=float(values.min()) if values.size else None,
        max_c=float(values.max()) if values.size else None,
        mean_c=float(values.mean()) if values.size else None,
        # The warmest probe's: averaging probes would hide the warm corner.
        mkt_c=max(mkts) if mkts else None,
        covered_s=sum(s.covered_s for s in stats),
        out_of_range_s=sum(s.out_of_range_s for s in stats),
        intervals_expected=sum(s.intervals_expected for s in stats),
        intervals_recorded=sum(s.intervals_recorded for s in stats),
    )


def _union_s(channels: list[Channel]) -> float:
    spans = sorted(
        (float(t), float(t + w))
        for c in channels
        for t, w in zip(c.epoch_s[c.out_of_range], c.stands_s[c.out_of_range], strict=True)
    )
    total, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_a is not None and cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


def _excursions(
    conn: Conn, subject: Subject, start: datetime, end: datetime, lots: list[int] | None
) -> list[ExcursionEntry]:
    rows = conn.execute(
        _EXCURSIONS, {"locations": list(subject.locations), "start": start, "end": end}
    ).fetchall()
    holds = conn.execute(
        _DISPOSITIONS, {"excursions": [r[0] for r in rows], "lots": lots}
    ).fetchall()
    signed = signatures.of_records(conn, "hold", [h[0] for h in holds])
    by_excursion: dict[int, list[Disposition]] = {}
    for h in holds:
        sigs = tuple(
            SignatureRef(s.signer, s.signer_name, s.signer_role, s.meaning, s.reason,
                         s.action, s.signed_at)
            for s in signed.get(h[0], [])
        )  # fmt: skip
        by_excursion.setdefault(h[1], []).append(
            Disposition(h[0], h[2], h[3], h[4], h[5], h[6], h[7], h[8], sigs)
        )
    return [
        ExcursionEntry(
            id=r[0], location_id=r[1], started_at=r[2], ended_at=r[3], state=r[4], late=r[5],
            sensors=tuple(r[6]), limit_min_c=r[7], limit_max_c=r[8], min_c=r[9], max_c=r[10],
            duration_s=r[11], degree_minutes=r[12], mkt_c=r[13], capa_id=r[14],
            capa_state=r[15], detected_at=r[16], dispositions=tuple(by_excursion.get(r[0], [])),
        )
        for r in rows
    ]  # fmt: skip


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)
