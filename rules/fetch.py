"""Reading sensors' windows out of the database into numpy, for the worker and for replay.

The server packs each reading into fixed-width big-endian bytes and the readings of all the
sensors asked for into one ``bytea``, which numpy reads in place: a month of a fleet is tens
of millions of rows, and handing them over one by one (even as binary COPY, one message per
row) costs more in Python than the database spends finding them. Each reading's place comes
from the sensor's assignments by binary search rather than a join per row.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from coldtrail import compliance
from coldtrail.rules import queries as q
from coldtrail.rules.ranges import Columns, Places, RangeChange, RangePatch, RecordIntervals

Conn = psycopg.Connection[tuple[Any, ...]]

# A timestamptz is sent as microseconds since 2000-01-01 UTC.
_ROW = np.dtype(
    [("g", ">i4"), ("ts", ">i8"), ("seq", ">i8"), ("status_ok", "?"), ("temp", ">f8"),
     ("rh", ">f8"), ("battery", ">f8")]
)  # fmt: skip
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_S = PG_EPOCH.timestamp()
_FAR = 2**62  # an unbounded end of an assignment, in microseconds

_PACKED_READINGS = """
SELECT string_agg(int4send(w.g::int4) || timestamptz_send(r.ts) || int8send(r.seq)
                  || boolsend(r.status = 'ok') || float8send(coalesce(r.temperature_c, 'NaN'))
                  || float8send(coalesce(r.humidity_pct, 'NaN'))
                  || float8send(coalesce(r.battery_pct, 'NaN')), ''::bytea)
FROM unnest(%(sensors)s::text[], %(froms)s::timestamptz[])
     WITH ORDINALITY AS w(sensor_id, since, g)
JOIN readings r ON r.sensor_id = w.sensor_id AND r.ts >= w.since
               AND r.ts < coalesce(%(until)s::timestamptz, 'infinity')
               AND (%(upto_batch)s::bigint IS NULL OR r.batch_id <= %(upto_batch)s)
"""

_ASSIGNMENTS = """
SELECT w.g::int4, a.location_id, lower(a.valid), upper(a.valid)
FROM unnest(%(sensors)s::text[], %(froms)s::timestamptz[])
     WITH ORDINALITY AS w(sensor_id, since, g)
JOIN sensor_assignments a ON a.sensor_id = w.sensor_id
 AND a.valid && tstzrange(w.since, %(until)s::timestamptz)
ORDER BY 1, 3
"""

_PLACES = """
SELECT l.id, l.temp_min_c, l.temp_max_c, l.alarm_delay_s, l.kind::text, l.rh_min_pct,
       l.rh_max_pct, coalesce(s.compliance_profile, %(default)s)
FROM locations l JOIN sites s ON s.id = l.site_id ORDER BY l.id
"""


def load_places(
    conn: Conn, patches: dict[str, RangePatch] | None = None, profiles_dir: Path | None = None
) -> Places:
    """Every place's settings, with the record intervals of its site's compliance profile."""
    rows = conn.execute(_PLACES, {"default": compliance.DEFAULT})
    return Places.from_rows(rows, patches, record_intervals(profiles_dir))


_RANGE_HISTORY = """
SELECT subject_id, extract(epoch FROM changed_at)::float8, before
FROM changes WHERE subject = %(subject)s ORDER BY changed_at, id
"""


def place_history(conn: Conn) -> list[RangeChange]:
    """Every signed change of a place's range or delay: what it was before, and when."""
    return _history(conn, "location")


def profile_history(conn: Conn) -> list[RangeChange]:
    """Every signed change of a storage profile's limits: what they were before, and when."""
    return _history(conn, "temperature_profile")


def range_history(conn: Conn) -> dict[str, Any]:
    """What ``spans_by_location`` needs to give each product's range as it was in force: the
    profiles' changes, the products' moves and every profile's values (keyword arguments)."""
    return {
        "history": profile_history(conn),
        "moves": product_moves(conn),
        "profiles": profile_values(conn),
    }


def product_moves(conn: Conn) -> list[RangeChange]:
    """Every signed move of a product to another storage profile: the profile before, when."""
    return _history(conn, "product")


def profile_values(conn: Conn) -> dict[str, tuple[Any, ...]]:
    """Every storage profile's limits now, by id (lo, hi, delay, rh lo, rh hi)."""
    return {str(r[0]): tuple(r[1:]) for r in conn.execute(q.PROFILE_VALUES)}


def _history(conn: Conn, subject: str) -> list[RangeChange]:
    rows = conn.execute(_RANGE_HISTORY, {"subject": subject})
    return [RangeChange(r[0], r[1], r[2]) for r in rows]


@functools.cache
def record_intervals(profiles_dir: Path | None = None) -> dict[str, RecordIntervals]:
    """The profiles' longest times between records, by profile id (read once a process:
    a changed profile file takes effect at the worker's restart, as settings do)."""

    def seconds(profile: compliance.Profile, rule: str) -> float:
        found = profile.rule(rule)
        return found.value if found is not None else math.nan

    return {
        p.id: RecordIntervals(
            seconds(p, "record_interval_storage"),
            seconds(p, "record_interval_transport"),
            seconds(p, "record_interval_out_of_range"),
        )
        for p in compliance.profiles(profiles_dir).values()
    }


def fetch(
    conn: Conn,
    sensors: Sequence[str],
    froms: Sequence[datetime],
    until: datetime | None,
    places: Places,
    *,
    upto_batch: int | None = None,
) -> Columns:
    """Each sensor's readings from its ``froms`` time up to ``until`` (None: all), with the
    place the sensor was in at each reading; only those of ingest batches up to
    ``upto_batch``, if given."""
    params = {"sensors": list(sensors), "froms": list(froms), "until": until}
    row = conn.execute(
        _PACKED_READINGS, {**params, "upto_batch": upto_batch}, binary=True
    ).fetchone()
    raw = (row[0] if row else None) or b""
    rows = np.frombuffer(raw, dtype=_ROW)
    # The index hands each sensor's rows over in time order as a rule; asking the server to
    # sort would sort every row even then, so only what is out of order is sorted here.
    if not in_order(rows):
        rows = rows[np.lexsort((rows["seq"], rows["ts"], rows["g"]))]
    group = rows["g"].astype(np.int64) - 1
    ts = rows["ts"].astype(np.int64)
    assigned = conn.execute(_ASSIGNMENTS, params).fetchall()
    return Columns(
        sensors=list(sensors),
        group=group,
        epoch_s=ts / 1e6 + PG_EPOCH_S,
        seq=rows["seq"].astype(np.int64),
        status_ok=rows["status_ok"].astype(bool),
        temp=rows["temp"].astype(float),
        humidity=rows["rh"].astype(float),
        battery=rows["battery"].astype(float),
        loc=_place_codes(group, ts, assigned, places),
        places=places,
    )


def in_order(rows: np.ndarray) -> bool:
    if rows.size < 2:
        return True
    dg = np.diff(rows["g"].astype(np.int64))
    dt = np.diff(rows["ts"].astype(np.int64))
    ds = np.diff(rows["seq"].astype(np.int64))
    return bool(np.all((dg > 0) | ((dg == 0) & ((dt > 0) | ((dt == 0) & (ds >= 0))))))


def _us(at: datetime | None, default: int) -> int:
    return default if at is None else (at - PG_EPOCH) // timedelta(microseconds=1)


def _place_codes(
    group: np.ndarray, ts: np.ndarray, assigned: list[tuple[Any, ...]], places: Places
) -> np.ndarray:
    """The code of the place each reading's sensor was assigned to when it was taken."""
    codes = np.zeros(ts.size, dtype=np.int64)
    if ts.size == 0 or not assigned:
        return codes
    a_group = np.array([a[0] - 1 for a in assigned], dtype=np.int64)
    a_code = np.array([places.code.get(a[1], 0) for a in assigned], dtype=np.int64)
    lower = np.array([_us(a[2], -_FAR) for a in assigned], dtype=np.int64)
    upper = np.array([_us(a[3], _FAR) for a in assigned], dtype=np.int64)
    # One sorted key over (sensor, time), exact in integers: the assignment a reading falls
    # in is the last one of its sensor that began at or before it.
    base = int(ts.min())
    stride = int(ts.max()) - base + 2
    if (int(group.max()) + 1) * stride >= _FAR:
        for g in np.unique(group).tolist():  # windows too long for one key: one sensor at a time
            mine, theirs = group == g, a_group == g
            codes[mine] = _place_codes(
                np.zeros(int(mine.sum()), np.int64), ts[mine],
                [(1, *a[1:]) for a, t in zip(assigned, theirs.tolist(), strict=True) if t],
                places,
            )  # fmt: skip
        return codes
    key = group * stride + (ts - base)
    a_key = a_group * stride + np.clip(lower - base, -1, stride - 1)
    at = np.searchsorted(a_key, key, side="right") - 1
    j = np.clip(at, 0, None)
    inside = (at >= 0) & (a_group[j] == group) & (lower[j] <= ts) & (ts < upper[j])
    codes[inside] = a_code[j[inside]]
    return codes
