"""The database side of ingest: which readings may be stored, and the batch transaction.

One transaction per batch decides and writes everything about it:

1. the trust rules (:mod:`coldtrail.ingest.trust`) are reloaded if the master data moved;
2. each reading is stored, kept aside (a rule refuses it), or dead-lettered (measured in the
   future); a second copy of a (sensor, seq) within the batch is a duplicate if identical and
   a conflicting resend if not;
3. the batch's sequence numbers are claimed (``CLAIM_SEQS``), which names the few readings that
   may repeat a stored one; only those are looked up, and an identical one is skipped, a
   disagreeing one kept aside as a ``conflicting resend``: the first stays the record;
4. the rest is COPYed straight into ``readings``, the latest values and the batch row kept,
   and the rules engine told.

The same code releases kept-aside readings (:meth:`Store.release`), so a released reading
meets every rule a new one meets.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.multirange import Multirange

from coldtrail.ingest import queries as q
from coldtrail.ingest.copytext import copy_lines
from coldtrail.ingest.trust import PLACEMENTS, VERSION, Refusal, Rule, Trust, placed
from coldtrail.messages import ReadingDoc

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]
DeadLetter = tuple[str, bytes, str]  # topic, payload, reason
_VALUE_KEYS = (
    "temperature_c",
    "humidity_pct",
    "battery_pct",
    "latitude",
    "longitude",
    "speed_kmh",
    "door_open",
)
_ = PLACEMENTS  # re-exported for the trust tests


@dataclass
class Envelope:
    """One message's readings as the store takes them. ``lines`` holds each reading as a
    COPY line (made on paho's thread while the database works); ``origins``, when releasing,
    the kept-aside row of each reading."""

    topic: str
    site: str
    gateway: str
    readings: list[ReadingDoc]
    lines: list[str]
    dead: list[DeadLetter] = field(default_factory=list)
    origins: list[int] | None = None


@dataclass
class Outcome:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    kept_aside: Counter[Rule] = field(default_factory=Counter)
    suspects: int = 0
    """Readings whose (sensor, seq) was stored already and had to be looked up."""
    batch_id: int | None = None
    settled: list[int] = field(default_factory=list)
    """Release: the kept-aside rows now stored (or found stored already)."""


@dataclass
class _Plan:
    store: list[tuple[Envelope, int]] = field(default_factory=list)
    kept: list[tuple[Envelope, int, Refusal]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: list[tuple[Envelope, int]] = field(default_factory=list)
    seqs: dict[str, dict[int, int]] = field(default_factory=dict)
    """sensor -> seq -> index in ``store``."""


def _values(r: ReadingDoc) -> tuple[object, ...]:
    return (r.get("status", "ok"), r.get("clock", "ok"), *(r.get(k) for k in _VALUE_KEYS))


def _differs(r: ReadingDoc, ts: datetime, values: tuple[object, ...]) -> str | None:
    """Why a reading disagrees with the stored one of its (sensor, seq), or None if it
    repeats it."""
    if r["ts"] != ts:
        return f"stored as measured at {ts.isoformat()}, this one says {r['ts'].isoformat()}"
    mine = _values(r)
    if mine == values:
        return None
    names = ("status", "clock", *_VALUE_KEYS)
    changed = [
        f"{n} {old!r}, this one {new!r}"
        for n, old, new in zip(names, values, mine, strict=True)
        if old != new
    ]
    return "stored with " + "; ".join(changed)


def _conflict(r: ReadingDoc, why: str) -> Refusal:
    return Refusal(
        "conflicting_resend",
        f"conflicting resend: {r['sensor']!r} seq {r['seq']} is {why}; the first stays the record",
    )


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class Store:
    def __init__(self, *, max_future_s: float = 300.0) -> None:
        self._max_future = timedelta(seconds=max_future_s)
        self.trust = Trust()

    def refresh(self, conn: Conn) -> None:
        row = conn.execute(VERSION).fetchone()
        version = int(row[0]) if row else 0
        if version != self.trust.version:
            self.trust = Trust.load(conn, version)
            log.info(
                "ingest trust rules at version %d: %d sensors, %d gateways",
                version,
                len(self.trust.placements),
                len(self.trust.gateways),
            )

    # ------------------------------------------------------------------------- planning
    def _plan(self, envelopes: Sequence[Envelope]) -> _Plan:
        plan = _Plan()
        trust = self.trust
        horizon = datetime.now(UTC) + self._max_future
        store, seqs, kept = plan.store, plan.seqs, plan.kept
        for env in envelopes:
            plan.dead.extend(env.dead)
            refusal = trust.gateway_refusal(env.gateway, env.site)
            if refusal is not None:
                kept.extend((env, i, refusal) for i in range(len(env.readings)))
                continue
            here = trust.sensors_at(env.site)
            for i, r in enumerate(env.readings):
                ts = r["ts"]
                sensor = r["sensor"]
                if ts > horizon:
                    reason = f"measured in the future: {ts.isoformat()} is after {horizon}"
                    plan.dead.append((env.topic, _reading_json(r), reason))
                    continue
                spans = here.get(sensor)
                if spans is None or not placed(spans, ts):
                    kept.append((env, i, trust.sensor_refusal(sensor, ts, env.site)))
                    continue
                mine = seqs.get(sensor)
                if mine is None:
                    mine = seqs[sensor] = {}
                at = mine.get(r["seq"])
                if at is None:
                    mine[r["seq"]] = len(store)
                    store.append((env, i))
                    continue
                # The same (sensor, seq) twice in one batch.
                first_env, first_i = store[at]
                first = first_env.readings[first_i]
                why = _differs(r, first["ts"], _values(first))
                if why is None:
                    plan.duplicates.append((env, i))
                else:
                    kept.append((env, i, _conflict(r, why)))
        return plan

    def _settle(self, conn: Conn, plan: _Plan, suspects: list[int], out: Outcome) -> set[int]:
        """Look up the stored readings of the suspects (indexes into ``plan.store``); returns
        those not to store: duplicates (skipped) and conflicts (kept aside)."""
        out.suspects += len(suspects)
        keys = [plan.store[k][0].readings[plan.store[k][1]] for k in suspects]
        stored: dict[tuple[str, int], tuple[datetime, tuple[object, ...]]] = {}
        for row in conn.execute(
            q.STORED,
            {"sensors": [r["sensor"] for r in keys], "seqs": [r["seq"] for r in keys]},
        ):
            stored[(row[0], row[1])] = (row[2], tuple(row[3:]))
        drop: set[int] = set()
        for k, r in zip(suspects, keys, strict=True):
            found = stored.get((r["sensor"], r["seq"]))
            if found is None:
                continue  # recorded as claimed, but not in the record: this one is the first
            drop.add(k)
            env, i = plan.store[k]
            why = _differs(r, *found)
            if why is None:
                plan.duplicates.append((env, i))
            else:
                plan.kept.append((env, i, _conflict(r, why)))
        return drop

    # --------------------------------------------------------------------------- writing
    def write(
        self, conn: Conn, envelopes: Sequence[Envelope], *, releasing: bool = False
    ) -> Outcome:
        """Decide and write one batch in one transaction (the caller's connection)."""
        out = Outcome()
        with conn.transaction():
            self.refresh(conn)
            plan = self._plan(envelopes)
            if plan.store:
                self._store(conn, plan, out)
            if releasing:
                self._mark_released(conn, plan, out)
            elif plan.kept:
                with conn.cursor().copy(q.COPY_KEPT_ASIDE) as copy:
                    for env, i, refusal in plan.kept:
                        copy.write_row(_kept_row(env, env.readings[i], refusal))
            if plan.dead:
                conn.cursor().executemany(q.DEAD_LETTER, [_clean_dead(d) for d in plan.dead])
        out.duplicates += len(plan.duplicates)
        out.dead = len(plan.dead)
        out.kept_aside.update(refusal.rule for _, _, refusal in plan.kept)
        return out

    def _store(self, conn: Conn, plan: _Plan, out: Outcome) -> None:
        row = conn.execute(q.NEW_BATCH).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns a row
        batch_id = out.batch_id = int(row[0])
        sensors, lo, hi = [], [], []
        for sensor, mine in plan.seqs.items():
            for a, b in _runs(mine):
                sensors.append(sensor)
                lo.append(a)
                hi.append(b)
        overlaps: dict[str, Multirange[int]] = {
            sensor: overlap
            for sensor, overlap in conn.execute(
                q.CLAIM_SEQS, {"sensors": sensors, "lo": lo, "hi": hi}
            )
        }
        drop: set[int] = set()
        if overlaps:
            suspects = [
                plan.seqs[sensor][seq]
                for sensor, overlap in overlaps.items()
                for seq in plan.seqs[sensor]
                if any(seq in rng for rng in overlap)
            ]
            drop = self._settle(conn, plan, suspects, out)
        lines = [env.lines[i] for k, (env, i) in enumerate(plan.store) if k not in drop]
        if lines:
            data = "".join(lines).encode()
            try:
                with conn.transaction(), conn.cursor().copy(q.COPY_READINGS) as copy:
                    copy.write(data)
            except psycopg.errors.UniqueViolation:
                # A reading stored without its number claimed (written by other means than
                # ingest): look every one up, then store what is new.
                rest = [k for k in range(len(plan.store)) if k not in drop]
                drop |= self._settle(conn, plan, rest, out)
                lines = [env.lines[i] for k, (env, i) in enumerate(plan.store) if k not in drop]
                data = "".join(lines).encode()
                if lines:
                    with conn.cursor().copy(q.COPY_READINGS) as copy:
                        copy.write(data)
        out.stored = len(lines)
        if out.stored:
            conn.execute(q.UPDATE_LATEST, {"batch_id": batch_id})
        conn.execute(q.FINISH_BATCH, {"n": out.stored, "batch_id": batch_id})
        if out.stored:
            conn.execute(q.NOTIFY_RULES, {"batch_id": batch_id})
        if plan.store and any(env.origins is not None for env, _ in plan.store):
            out.settled.extend(
                env.origins[i]  # type: ignore[index]
                for k, (env, i) in enumerate(plan.store)
                if k not in drop
            )

    def _mark_released(self, conn: Conn, plan: _Plan, out: Outcome) -> None:
        out.settled.extend(env.origins[i] for env, i in plan.duplicates if env.origins)
        if out.settled:
            conn.execute(q.RELEASED, {"batch_id": out.batch_id, "ids": out.settled})
        still = [
            (refusal.rule, refusal.reason, env.origins[i])
            for env, i, refusal in plan.kept
            if env.origins is not None
        ]
        if still:
            conn.cursor().executemany(q.STILL_KEPT, still)

    # -------------------------------------------------------------------------- release
    def release(self, conn: Conn, *, chunk: int = 20_000) -> tuple[int, int]:
        """Store the kept-aside readings that pass the rules now, as ingest batches the rules
        engine judges like any late reading. Returns (released, newly stored): a reading found
        stored meanwhile counts as released but not stored again."""
        released = stored = 0
        after = 0
        while True:
            with conn.transaction():
                conn.execute(q.RELEASE_LOCK)
                rows = conn.execute(q.PENDING, {"after": after, "limit": chunk}).fetchall()
                if not rows:
                    break
                after = int(rows[-1][0])
                out = self.write(conn, _envelopes(rows), releasing=True)
            released += len(out.settled)
            stored += out.stored
        return released, stored


def _envelopes(rows: list[tuple[Any, ...]]) -> list[Envelope]:
    by_source: dict[tuple[str, str, str], Envelope] = {}
    for rid, topic, site, gateway, sensor, seq, ts, status, clock, *values in rows:
        env = by_source.get((topic, site, gateway))
        if env is None:
            env = by_source[(topic, site, gateway)] = Envelope(
                topic, site, gateway, [], [], origins=[]
            )
        doc: dict[str, Any] = {"sensor": sensor, "seq": seq, "ts": ts, "status": status}
        doc["clock"] = clock
        doc.update((k, v) for k, v in zip(_VALUE_KEYS, values, strict=True) if v is not None)
        env.readings.append(doc)  # type: ignore[arg-type]
        assert env.origins is not None  # noqa: S101 - made with a list above
        env.origins.append(int(rid))
    for env in by_source.values():
        env.lines = copy_lines(env.readings, env.gateway)
    return list(by_source.values())


def _kept_row(env: Envelope, r: ReadingDoc, refusal: Refusal) -> tuple[object, ...]:
    return (
        env.topic,
        env.site,
        env.gateway,
        r["sensor"],
        r["seq"],
        r["ts"],
        r.get("status", "ok"),
        r.get("clock", "ok"),
        *(r.get(k) for k in _VALUE_KEYS),
        refusal.rule,
        clean_text(refusal.reason),
    )


def clean_text(text: str) -> str:
    """Text the database takes: PostgreSQL's text holds no NUL and only valid UTF-8, and a
    reason may quote what a gateway sent."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _clean_dead(d: DeadLetter) -> DeadLetter:
    return (clean_text(d[0]), d[1], clean_text(d[2]))


def _reading_json(r: ReadingDoc) -> bytes:
    import json

    return json.dumps(r, default=str).encode()
