"""Replay ("what if"): judge a past period again under changed settings, touching nothing.

QA validates a profile or rule change before it goes live: which excursions and alarms
would have been raised, which recorded ones would not, and which lots each would have
touched. It runs in a read-only transaction, so it can't change a live record.

Readings come out of the database as binary COPY read straight into numpy (a month of a
thousand sensors is tens of millions of rows); each sensor's place at each moment comes from
its assignments by binary search rather than a join per row.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from coldtrail.erp.movements import lots_in_location
from coldtrail.errors import RuleViolation
from coldtrail.rules import queries as q
from coldtrail.rules.conditions import Limits, find_conditions
from coldtrail.rules.judge import Run, find_runs
from coldtrail.rules.ranges import Columns, RangePatch, build_columns, spans_by_location

Conn = psycopg.Connection[tuple[Any, ...]]

# Binary COPY: every field NOT NULL, so each row has the same size and numpy reads them in
# place. Field count (int16), then per field its length (int32) and its big-endian value.
_ROW = np.dtype(
    [("n", ">i2"),
     ("l0", ">i4"), ("epoch", ">f8"), ("l1", ">i4"), ("seq", ">i8"), ("l2", ">i4"), ("ok", "?"),
     ("l3", ">i4"), ("temp", ">f8"), ("l4", ">i4"), ("status_ok", "?"), ("l5", ">i4"),
     ("rh", ">f8"), ("l6", ">i4"), ("battery", ">f8")]
)  # fmt: skip
_HEADER = 19  # signature (11), flags (4), header extension length (4)

_COPY_READINGS = """
COPY (SELECT extract(epoch FROM ts)::float8, seq,
             status = 'ok' AND temperature_c IS NOT NULL,
             coalesce(temperature_c, 'NaN'::float8), status = 'ok',
             coalesce(humidity_pct, 'NaN'::float8), coalesce(battery_pct, 'NaN'::float8)
      FROM readings WHERE sensor_id = %(sensor)s AND ts >= %(start)s AND ts < %(end)s
      ORDER BY ts, seq) TO STDOUT (FORMAT BINARY)
"""

_SENSORS = """
SELECT DISTINCT a.sensor_id FROM sensor_assignments a
WHERE a.valid && tstzrange(%(start)s, %(end)s)
  AND (%(sensors)s::text[] IS NULL OR a.sensor_id = ANY(%(sensors)s))
ORDER BY 1
"""

_ASSIGNMENTS = """
SELECT a.sensor_id, a.location_id, extract(epoch FROM lower(a.valid))::float8,
       coalesce(extract(epoch FROM upper(a.valid))::float8, 'Infinity'::float8)
FROM sensor_assignments a
WHERE a.sensor_id = ANY(%(sensors)s) AND a.valid && tstzrange(%(start)s, %(end)s)
ORDER BY 1, 3
"""

_LOCATIONS = """
SELECT id, temp_min_c, temp_max_c, alarm_delay_s, kind::text, rh_min_pct, rh_max_pct
FROM locations
"""

_RECORDED = """
SELECT id, location_id, started_at, coalesce(ended_at, last_seen_at) FROM location_excursions
WHERE state <> 'withdrawn' AND started_at < %(end)s
  AND coalesce(ended_at, last_seen_at) >= %(start)s
ORDER BY started_at
"""


@dataclass(frozen=True)
class WouldBe:
    """An excursion of a place as the replay finds it."""

    location_id: str
    started_at: datetime
    ended_at: datetime | None
    sensors: tuple[str, ...]
    min_c: float
    max_c: float
    limit_min_c: float | None
    limit_max_c: float | None
    duration_s: float
    recorded_id: int | None  # the live location excursion it matches, if any
    lots: tuple[int, ...] = ()


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    sensors: int
    readings: int
    excursions: list[WouldBe]
    not_raised: list[int]  # live location excursions the replay does not find
    conditions: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def new(self) -> list[WouldBe]:
        return [e for e in self.excursions if e.recorded_id is None]


@dataclass(frozen=True)
class _Place:
    lo: float
    hi: float
    delay_s: float
    kind: str
    rh_lo: float
    rh_hi: float


def replay(
    conn: Conn,
    start: datetime,
    end: datetime,
    *,
    profiles: dict[str, RangePatch] | None = None,
    locations: dict[str, RangePatch] | None = None,
    limits: Limits | None = None,
    sensors: list[str] | None = None,
    with_lots: bool = True,
) -> Report:
    if end <= start:
        raise RuleViolation("a replay needs a period: its end after its start")
    began = time.perf_counter()
    limits = limits or Limits()
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        places = _places(conn, locations or {})
        chosen = [
            r[0] for r in conn.execute(_SENSORS, {"start": start, "end": end, "sensors": sensors})
        ]
        assignments: dict[str, list[tuple[str, float, float]]] = {}
        for sensor, loc, a, b in conn.execute(
            _ASSIGNMENTS, {"sensors": chosen, "start": start, "end": end}
        ):
            assignments.setdefault(sensor, []).append((loc, a, b))
        spans = spans_by_location(
            conn.execute(
                q.PRODUCT_RANGES, {"locations": list(places), "since": start, "until": end}
            ),
            profiles,
        )
        runs: list[tuple[str, Run]] = []
        counted: Counter[str] = Counter()
        readings = 0
        for sensor in chosen:
            cols = _columns(conn, sensor, start, end, assignments.get(sensor, []), places)
            if cols is None:
                continue
            readings += cols.epoch_s.size
            data = build_columns(sensor, cols, spans)
            runs += [(sensor, r) for r in find_runs(data.temperature, confirmed_only=True)]
            counted.update(c.kind for c in find_conditions(data, limits))
        recorded = conn.execute(_RECORDED, {"start": start, "end": end}).fetchall()
        found = _merge(runs, recorded)
        if with_lots:
            found = [_with_lots(conn, e) for e in found]
    matched = {e.recorded_id for e in found}
    return Report(
        start=start,
        end=end,
        sensors=len(chosen),
        readings=readings,
        excursions=found,
        not_raised=[r[0] for r in recorded if r[0] not in matched],
        conditions=dict(sorted(counted.items())),
        elapsed_s=time.perf_counter() - began,
    )


def _places(conn: Conn, patches: dict[str, RangePatch]) -> dict[str, _Place]:
    places = {}
    for loc, lo, hi, delay, kind, rh_lo, rh_hi in conn.execute(_LOCATIONS):
        patch = patches.get(loc)
        if patch is not None:
            lo = lo if patch.temp_min_c is None else patch.temp_min_c
            hi = hi if patch.temp_max_c is None else patch.temp_max_c
            delay = delay if patch.alarm_delay_s is None else patch.alarm_delay_s
        places[loc] = _Place(_f(lo), _f(hi), float(delay), kind, _f(rh_lo), _f(rh_hi))
    unknown = set(patches) - set(places)
    if unknown:
        raise RuleViolation(f"no location {', '.join(sorted(unknown))}")
    return places


def _columns(
    conn: Conn,
    sensor: str,
    start: datetime,
    end: datetime,
    assigned: list[tuple[str, float, float]],
    places: dict[str, _Place],
) -> Columns | None:
    with (
        conn.cursor() as cur,
        cur.copy(_COPY_READINGS, {"sensor": sensor, "start": start, "end": end}) as copy,
    ):
        raw = b"".join(bytes(chunk) for chunk in copy)
    count = (len(raw) - _HEADER - 2) // _ROW.itemsize
    if count <= 0:
        return None
    rows = np.frombuffer(raw, dtype=_ROW, count=count, offset=_HEADER)
    epoch = rows["epoch"].astype(float)
    # Where the sensor was at each reading: the assignment that began last before it.
    names = [a[0] for a in assigned]
    lowers = np.array([a[1] for a in assigned], dtype=float)
    uppers = np.array([a[2] for a in assigned], dtype=float)
    at = np.searchsorted(lowers, epoch, side="right") - 1
    inside = (at >= 0) & (epoch < uppers[np.clip(at, 0, None)]) if names else np.zeros(count, bool)
    nowhere = _Place(np.nan, np.nan, 0.0, "", np.nan, np.nan)
    table = [places[n] for n in names] + [nowhere]
    code = np.where(inside, at, len(names))
    attr = {k: np.array([getattr(p, k) for p in table], dtype=float)[code]
            for k in ("lo", "hi", "delay_s", "rh_lo", "rh_hi")}  # fmt: skip
    label: list[str | None] = [*names, None]
    location = [label[i] for i in code.tolist()]
    kinds: list[str | None] = [table[i].kind or None for i in code.tolist()]
    return Columns(
        epoch_s=epoch,
        seq=rows["seq"].astype(np.int64),
        ok=rows["ok"].astype(bool),
        temp=rows["temp"].astype(float),
        location=location,
        lo=attr["lo"],
        hi=attr["hi"],
        delay_s=np.nan_to_num(attr["delay_s"]),
        status_ok=rows["status_ok"].astype(bool),
        humidity=rows["rh"].astype(float),
        battery=rows["battery"].astype(float),
        kinds=kinds,
        rh_lo=attr["rh_lo"],
        rh_hi=attr["rh_hi"],
    )


def _merge(runs: list[tuple[str, Run]], recorded: list[tuple[Any, ...]]) -> list[WouldBe]:
    """One excursion per place and overlapping span, as the live rules would record it."""
    by_place: dict[str, list[tuple[str, Run]]] = {}
    for sensor, run in runs:
        by_place.setdefault(run.location_id, []).append((sensor, run))
    found: list[WouldBe] = []
    for place, items in sorted(by_place.items()):
        items.sort(key=lambda x: x[1].started_at)
        group: list[tuple[str, Run]] = []
        reach: datetime | None = None
        for sensor, run in items:
            if group and (reach is None or run.started_at <= reach):
                group.append((sensor, run))
                reach = None if reach is None or run.ended_at is None else max(reach, run.ended_at)
                continue
            if group:
                found.append(_would_be(place, group, recorded))
            group, reach = [(sensor, run)], run.ended_at
        if group:
            found.append(_would_be(place, group, recorded))
    return sorted(found, key=lambda e: (e.started_at, e.location_id))


def _would_be(place: str, group: list[tuple[str, Run]], recorded: list[tuple[Any, ...]]) -> WouldBe:
    started = min(r.started_at for _, r in group)
    still_open = any(r.ended_at is None for _, r in group)
    ended = None if still_open else max(r.ended_at for _, r in group if r.ended_at)
    last = max(r.last_seen_at for _, r in group)
    first = min(group, key=lambda x: x[1].started_at)[1]
    until = ended or last
    match = next(
        (r[0] for r in recorded if r[1] == place and r[2] <= until and r[3] >= started), None
    )
    return WouldBe(
        location_id=place,
        started_at=started,
        ended_at=ended,
        sensors=tuple(sorted({s for s, _ in group})),
        min_c=min(r.min_c for _, r in group),
        max_c=max(r.max_c for _, r in group),
        limit_min_c=first.limit_min_c,
        limit_max_c=first.limit_max_c,
        duration_s=(until - started).total_seconds(),
        recorded_id=match,
    )


def _with_lots(conn: Conn, e: WouldBe) -> WouldBe:
    until = max(e.ended_at or e.started_at, e.started_at)
    if until <= e.started_at:
        until = datetime.fromtimestamp(e.started_at.timestamp() + 1, UTC)
    stays = lots_in_location(conn, e.location_id, e.started_at, until, with_children=False)
    return WouldBe(**{**e.__dict__, "lots": tuple(sorted({s.lot_id for s in stays}))})


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)
