"""Replay ("what if"): judge a past period again under changed settings, touching nothing.

QA validates a profile or rule change before it goes live: which excursions and alarms
would have been raised, which recorded ones would not, and which lots each would have
touched. It runs in a read-only transaction, so it can't change a live record.

Readings come out of the database packed into numpy arrays (``fetch``), a chunk of sensors
at a time; with helper connections, the next chunks are fetched while one is judged, all in
one exported snapshot.
"""

from __future__ import annotations

import queue
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import psycopg
from psycopg import sql

from coldtrail.erp.movements import lots_in_location
from coldtrail.errors import RuleViolation
from coldtrail.rules import queries as q
from coldtrail.rules.conditions import Limits, find_conditions
from coldtrail.rules.fetch import fetch, load_places, place_history, range_history
from coldtrail.rules.judge import Run, find_runs
from coldtrail.rules.ranges import Columns, Places, RangePatch, spans_by_location, with_ranges

Conn = psycopg.Connection[tuple[Any, ...]]

# Sensors fetched and judged together: about a million rows at a month of 1-minute readings.
CHUNK = 25

_SENSORS = """
SELECT DISTINCT a.sensor_id FROM sensor_assignments a
JOIN sensors s ON s.id = a.sensor_id AND s.kind = 'probe'
WHERE a.valid && tstzrange(%(start)s, %(end)s)
  AND (%(sensors)s::text[] IS NULL OR a.sensor_id = ANY(%(sensors)s))
ORDER BY 1
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
    helpers: Sequence[Conn] = (),
) -> Report:
    """What the rules would raise over [start, end) with the settings patched. ``helpers``:
    idle connections to the same database that fetch readings while this one's are judged;
    they read the same snapshot."""
    if end <= start:
        raise RuleViolation("a replay needs a period: its end after its start")
    began = time.perf_counter()
    limits = limits or Limits()
    with conn.transaction(), ExitStack() as stack:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        if helpers:
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
            for helper in helpers:
                stack.enter_context(helper.transaction())
                helper.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                helper.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        places = load_places(conn, locations or {})
        if profiles:
            known = {str(r[0]) for r in conn.execute("SELECT id FROM temperature_profiles")}
            unknown = sorted(set(profiles) - known)
            if unknown:
                raise RuleViolation(
                    f"no profile {', '.join(unknown)}; known: {', '.join(sorted(known))}"
                )
        chosen = [
            r[0] for r in conn.execute(_SENSORS, {"start": start, "end": end, "sensors": sensors})
        ]
        spans = spans_by_location(
            conn.execute(
                q.PRODUCT_RANGES,
                {"locations": [p for p in places.ids if p], "since": start, "until": end},
            ),
            profiles,
            **range_history(conn),
        )
        # A place's range as it was when measured, but a place the replay patches holds the
        # patched values over the whole period: that is the question asked.
        history = [c for c in place_history(conn) if c.subject not in (locations or {})]
        runs: list[tuple[str, Run]] = []
        counted: Counter[str] = Counter()
        readings = 0
        chunks = [chosen[i : i + CHUNK] for i in range(0, len(chosen), CHUNK)]
        for cols in _fetched(conn, list(helpers), chunks, start, end, places):
            readings += cols.size
            data = with_ranges(cols, spans, history)
            found_runs = find_runs(data.temperature, confirmed_only=True, with_mkt=False)
            runs += [(cols.sensors[r.group], r) for r in found_runs]
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


def _fetched(
    conn: Conn,
    helpers: list[Conn],
    chunks: list[list[str]],
    start: datetime,
    end: datetime,
    places: Places,
) -> Iterator[Columns]:
    """The chunks' readings in order; with helpers, fetched ahead while the caller judges."""
    if not helpers:
        for chunk in chunks:
            yield fetch(conn, chunk, [start] * len(chunk), end, places)
        return
    idle: queue.SimpleQueue[Conn] = queue.SimpleQueue()
    for helper in helpers:
        idle.put(helper)

    def job(chunk: list[str]) -> Columns:
        helper = idle.get()
        try:
            return fetch(helper, chunk, [start] * len(chunk), end, places)
        finally:
            idle.put(helper)

    with ThreadPoolExecutor(len(helpers), thread_name_prefix="replay-fetch") as pool:
        waiting = iter(chunks)
        # One chunk more than there are helpers is asked for ahead, so no helper waits.
        pending = deque(pool.submit(job, c) for c in islice(waiting, len(helpers) + 1))
        while pending:
            cols = pending.popleft().result()
            nxt = next(waiting, None)
            if nxt is not None:
                pending.append(pool.submit(job, nxt))
            yield cols


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
