"""The database side of ingest: which readings may be stored, and the batch transaction.

Each message is judged as it arrives (:meth:`Store.check`, on paho's thread): each reading may
be stored, is kept aside (a trust rule refuses it) or is dead-lettered (measured in the
future). One transaction per batch then writes it:

1. the trust rules (:mod:`coldtrail.ingest.trust`) are reloaded if the master data moved, and
   the messages judged under older rules judged again;
2. the readings are COPYed straight into ``readings``; the statement that then keeps each
   sensor's latest value also adds the batch's sequence numbers to the sensor's, and names
   the sensors with a number stored already or given twice in the batch (``UPDATE_LATEST``);
3. usually there is none. If there is (a resend, a second worker), the writes are undone, those
   sensors locked and their readings looked at one by one: an identical copy is skipped, a
   disagreeing one kept aside as a ``conflicting resend`` (the first stays the record); then
   the rest is written again and checked again;
4. the batch row is kept, the rules engine told, and the batch linked into the readings' hash
   chain (:mod:`coldtrail.readingchain`), last, so the chain's head is locked only to COMMIT.

The same code releases kept-aside readings (:meth:`Store.release`), so a released reading
meets every rule a new one meets.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.multirange import Multirange

from coldtrail import readingchain
from coldtrail.errors import StoreError
from coldtrail.ingest import queries as q
from coldtrail.ingest.copytext import copy_lines
from coldtrail.ingest.trust import VERSION, Refusal, Rule, Trust, placed
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


@dataclass
class Envelope:
    """One message's readings as the store takes them. ``lines`` holds each reading as a
    COPY line and ``checked`` the rules' verdict on them, both made on paho's thread as the
    message arrives (while the database works on the batch before); ``origins``, when
    releasing, the kept-aside row of each reading."""

    topic: str
    site: str
    gateway: str
    readings: list[ReadingDoc]
    lines: list[str]
    dead: list[DeadLetter] = field(default_factory=list)
    origins: list[int] | None = None
    checked: Checked | None = None


@dataclass
class Checked:
    """An envelope judged by the trust rules of ``version``. At commit the worker only
    confirms the version; a change of master data in between has it judged again."""

    version: int
    ok: list[int] | None
    """The readings that may be stored, by index; None for all of them (the usual case)."""
    kept: list[tuple[int, Refusal]]
    dead: list[DeadLetter]
    """Readings measured in the future."""
    data: bytes
    """The COPY lines of the readings that may be stored, joined."""
    first: datetime | None = None
    last: datetime | None = None
    """The earliest and latest time of measurement among the readings (a bound of those
    stored: looking the batch up by it reads only the chunks it touched)."""


@dataclass
class Outcome:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0
    kept_aside: Counter[Rule] = field(default_factory=Counter)
    suspects: int = 0
    """Readings whose (sensor, seq) was stored already, or came twice in the batch, and had
    to be looked at one by one."""
    batch_id: int | None = None
    settled: list[int] = field(default_factory=list)
    """Release: the kept-aside rows now stored (or found stored already)."""


@dataclass
class _Plan:
    envelopes: Sequence[Envelope]
    kept: list[tuple[Envelope, int, Refusal]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    duplicates: list[tuple[Envelope, int]] = field(default_factory=list)
    drop: dict[int, set[int]] = field(default_factory=dict)
    """id(envelope) -> readings not to store after all (duplicates, conflicts)."""

    def to_store(self) -> Iterable[tuple[Envelope, int]]:
        for env in self.envelopes:
            assert env.checked is not None  # noqa: S101 - judged before planning
            dropped = self.drop.get(id(env), ())
            ok = env.checked.ok if env.checked.ok is not None else range(len(env.readings))
            yield from ((env, i) for i in ok if i not in dropped)

    def data(self) -> bytes:
        parts = []
        for env in self.envelopes:
            assert env.checked is not None  # noqa: S101 - judged before planning
            dropped = self.drop.get(id(env))
            if not dropped:
                parts.append(env.checked.data)
                continue
            ok = env.checked.ok if env.checked.ok is not None else range(len(env.readings))
            parts.append("".join(env.lines[i] for i in ok if i not in dropped).encode())
        return b"".join(parts)

    def span(self) -> tuple[datetime | None, datetime | None]:
        """The first and last time of measurement of the readings offered (a bound of those
        stored); None, None for none."""
        spans = [
            (c.first, c.last)
            for c in (e.checked for e in self.envelopes)
            if c is not None and c.data and c.first is not None and c.last is not None
        ]
        if not spans:
            return None, None
        return min(f for f, _ in spans), max(last for _, last in spans)

    def count(self) -> int:
        n = 0
        for env in self.envelopes:
            assert env.checked is not None  # noqa: S101 - judged before planning
            ok = env.checked.ok
            n += (len(env.readings) if ok is None else len(ok)) - len(self.drop.get(id(env), ()))
        return n


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


@dataclass
class _Care:
    """What an earlier attempt at a batch found: sensors to lock and look at first (a number
    stored already, or given ``twice`` in the batch), or ``everything`` (a key collision)."""

    sensors: set[str] = field(default_factory=set)
    twice: set[str] = field(default_factory=set)
    everything: bool = False


class _Again(Exception):
    def __init__(self, care: _Care) -> None:
        super().__init__("the batch is written again, carefully")
        self.care = care


_ATTEMPTS = 5
"""Careful rewrites of one batch before giving up: each learns the numbers others stored in
the meantime, so two suffice unless new sensors' first readings race."""


def _to_store_seqs(plan: _Plan, sensors: set[str]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for env, i in plan.to_store():
        r = env.readings[i]
        if r["sensor"] in sensors:
            out.setdefault(r["sensor"], set()).add(r["seq"])
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

    # -------------------------------------------------------------------------- judging
    def check(self, env: Envelope) -> Checked:
        """Judge an envelope's readings by the rules held now; any thread may call it."""
        trust = self.trust  # one snapshot: the worker may swap in a newer one meanwhile
        readings = env.readings
        refusal = trust.gateway_refusal(env.gateway, env.site)
        if refusal is not None:
            kept = [(i, refusal) for i in range(len(readings))]
            return Checked(trust.version, [], kept, [], b"")
        zone = readings[0]["ts"].tzinfo if readings else None
        horizon = datetime.now(UTC) + self._max_future
        if zone is not None:
            horizon = horizon.astimezone(zone)
        here = trust.sensors_at(env.site, zone)
        bad: set[int] = set()
        kept = []
        dead: list[DeadLetter] = []
        for i, r in enumerate(readings):
            ts = r["ts"]
            spans = here.get(r["sensor"])
            if ts <= horizon and spans is not None and placed(spans, ts, ts) and not bc(ts):
                continue
            if ts > horizon:
                reason = f"measured in the future: {ts.isoformat()} is after {horizon}"
                dead.append((env.topic, _reading_json(r), reason))
            elif bc(ts):
                # Year 1 with an offset east of UTC is a time before the year 1 in UTC: the
                # database would keep it (as BC) but no client could read it back.
                reason = f"measured before the year 1: {ts.isoformat()} is in 1 BC in UTC"
                dead.append((env.topic, _reading_json(r), reason))
            else:
                kept.append((i, trust.sensor_refusal(r["sensor"], ts, env.site)))
            bad.add(i)
        # The batch's span is that of what it stores: a reading kept aside or dead-lettered
        # (a time far out, say) does not widen it.
        stamps = [r["ts"] for i, r in enumerate(readings) if i not in bad]
        first, last = (min(stamps), max(stamps)) if stamps else (None, None)
        if not bad:
            data = "".join(env.lines).encode()
            return Checked(trust.version, None, [], [], data, first, last)
        ok = [i for i in range(len(readings)) if i not in bad]
        data = "".join(env.lines[i] for i in ok).encode()
        return Checked(trust.version, ok, kept, dead, data, first, last)

    # ------------------------------------------------------------------------- planning
    def _plan(self, envelopes: Sequence[Envelope]) -> _Plan:
        plan = _Plan(envelopes)
        version = self.trust.version
        for env in envelopes:
            plan.dead.extend(env.dead)
            if env.checked is None or env.checked.version != version:
                env.checked = self.check(env)
            checked = env.checked
            plan.dead.extend(checked.dead)
            plan.kept.extend((env, i, refusal) for i, refusal in checked.kept)
        return plan

    def _settle(
        self,
        conn: Conn,
        plan: _Plan,
        suspects: dict[str, set[int]],
        twice: set[str],
        out: Outcome,
        *,
        recorded: bool = False,
    ) -> None:
        """Look one by one at the readings whose (sensor, seq) may be stored already
        (``suspects``) or comes twice in the batch (sensors in ``twice``): the first copy in the
        batch is compared with the record, later ones with the first; an identical copy is a
        duplicate (skipped), another a conflicting resend (kept aside). With ``recorded``, the
        suspects' numbers are known to be stored: one whose reading is not in the record
        (removed by someone who could bypass its triggers) is kept aside too, never stored
        again in its place."""
        looked: dict[tuple[str, int], list[tuple[Envelope, int]]] = {}
        for env, i in plan.to_store():
            r = env.readings[i]
            sensor = r["sensor"]
            if sensor in twice or r["seq"] in suspects.get(sensor, ()):
                looked.setdefault((sensor, r["seq"]), []).append((env, i))
        out.suspects += sum(len(v) for v in looked.values())
        asked = [key for key in looked if key[1] in suspects.get(key[0], ())]
        stored: dict[tuple[str, int], tuple[datetime, tuple[object, ...]]] = {}
        if asked:
            params = {"sensors": [k[0] for k in asked], "seqs": [k[1] for k in asked]}
            for row in conn.execute(q.STORED, params):
                stored[(row[0], row[1])] = (row[2], tuple(row[3:]))
        for key, copies in looked.items():
            found = stored.get(key)
            if found is None and recorded and key[1] in suspects.get(key[0], ()):
                for env, i in copies:
                    plan.drop.setdefault(id(env), set()).add(i)
                    missing = "recorded as stored, but its reading is not in the record"
                    plan.kept.append((env, i, _conflict(env.readings[i], missing)))
                continue
            if found is None:
                # Not in the record: the first copy is stored, the rest compared with it.
                env, i = copies[0]
                first = env.readings[i]
                found = (first["ts"], _values(first))
                copies = copies[1:]
            for env, i in copies:
                r = env.readings[i]
                plan.drop.setdefault(id(env), set()).add(i)
                why = _differs(r, *found)
                if why is None:
                    plan.duplicates.append((env, i))
                else:
                    plan.kept.append((env, i, _conflict(r, why)))

    # --------------------------------------------------------------------------- writing
    def write(
        self, conn: Conn, envelopes: Sequence[Envelope], *, releasing: bool = False
    ) -> Outcome:
        """Decide and write one batch in one transaction (the caller's connection).

        Optimistic: the readings are written, and the latest-value statement then says
        whether a number was stored already or comes twice. If one was (a resend, a second
        worker), or a reading collides on the key, the transaction is undone and done again
        carefully: those sensors locked first, their readings looked at one by one, the rest
        written, and the statement's check repeated under the locks it then holds."""
        care = _Care()
        for _ in range(_ATTEMPTS):
            out = Outcome()
            try:
                with conn.transaction():
                    self.refresh(conn)
                    plan = self._plan(envelopes)
                    if plan.count():
                        self._store(conn, plan, out, care)
                    if releasing:
                        self._mark_released(conn, plan, out)
                    elif plan.kept:
                        with conn.cursor().copy(q.COPY_KEPT_ASIDE) as copy:
                            for env, i, refusal in plan.kept:
                                copy.write_row(_kept_row(env, env.readings[i], refusal))
                    if plan.dead:
                        dead = [_clean_dead(d) for d in plan.dead]
                        conn.cursor().executemany(q.DEAD_LETTER, dead)
            except _Again as again:
                care.sensors |= again.care.sensors
                care.twice |= again.care.twice
                care.everything |= again.care.everything
                continue
            out.duplicates += len(plan.duplicates)
            out.dead = len(plan.dead)
            out.kept_aside.update(refusal.rule for _, _, refusal in plan.kept)
            return out
        raise StoreError(f"sequence numbers kept changing under {_ATTEMPTS} attempts")

    def _store(self, conn: Conn, plan: _Plan, out: Outcome, care: _Care) -> None:
        row = conn.execute(q.NEW_BATCH).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns a row
        batch_id = out.batch_id = int(row[0])
        if care.sensors or care.everything:
            self._carefully(conn, plan, out, care)
        data = plan.data()
        if data:
            try:
                with conn.cursor().copy(q.COPY_READINGS) as copy:
                    copy.write(data)
            except psycopg.errors.UniqueViolation:
                # A reading stored without its number recorded (written by other means than
                # ingest): every reading is looked at, the next time.
                raise _Again(_Care(everything=True)) from None
        span = plan.span()
        flagged = conn.execute(
            q.UPDATE_LATEST, {"batch_id": batch_id, "first": span[0], "last": span[1]}
        ).fetchall()
        if flagged:
            again = _Care({str(f[0]) for f in flagged}, {str(f[0]) for f in flagged if f[2]})
            raise _Again(again)
        out.stored = plan.count()
        finish = {"n": out.stored, "batch_id": batch_id, "first": span[0], "last": span[1]}
        if not out.stored:
            conn.execute(q.FINISH_BATCH, finish)
        else:
            lines = sorted(data.split(b"\n")[:-1])
            if len(lines) != out.stored:
                raise StoreError(f"{len(lines)} lines written for {out.stored} readings")
            # Last in the transaction: the chain's head stays locked from here to COMMIT.
            body, fps = readingchain.body(batch_id, lines), readingchain.fingerprints(lines)
            conn.execute(q.FINISH_NOTIFY_LINK, {**finish, "body": body, "fps": fps})
        if any(env.origins is not None for env in plan.envelopes):
            out.settled.extend(env.origins[i] for env, i in plan.to_store() if env.origins)

    def _carefully(self, conn: Conn, plan: _Plan, out: Outcome, care: _Care) -> None:
        """Lock the sensors an earlier attempt found a problem with and settle their readings
        before anything is written."""
        if care.everything:
            every = {r["sensor"] for env, i in plan.to_store() for r in (env.readings[i],)}
            self._settle(conn, plan, _to_store_seqs(plan, every), set(), out)
        if not care.sensors:
            return
        locked: dict[str, Multirange[int]] = dict(
            conn.execute(q.LOCK_SEQS, {"sensors": sorted(care.sensors)}).fetchall()
        )
        suspects = {
            sensor: {s for s in seqs if any(s in rng for rng in locked.get(sensor, ()))}
            for sensor, seqs in _to_store_seqs(plan, care.sensors).items()
        }
        suspects = {k: v for k, v in suspects.items() if v}
        self._settle(conn, plan, suspects, care.twice, out, recorded=True)

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
    now_us = time.time_ns() // 1000  # released now: their time of arrival in the record
    for env in by_source.values():
        env.lines = copy_lines(env.readings, env.gateway, now_us)
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


def bc(ts: datetime) -> bool:
    """Whether ``ts`` falls before 0001-01-01T00:00Z (year 1 with an offset east of UTC)."""
    offset = ts.utcoffset()
    return (
        ts.year == 1 and offset is not None and ts.replace(tzinfo=None) - datetime(1, 1, 1) < offset  # noqa: DTZ001 - naive on purpose
    )


def _reading_json(r: ReadingDoc) -> bytes:
    import json

    return json.dumps(r, default=str).encode()
