"""The rules worker: claims committed ingest batches and judges their readings.

Ingest writes one ``ingest_batches`` row per commit and sends NOTIFY; this worker LISTENs,
and also looks on a timer so a lost notification costs seconds, not a reading.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from coldtrail.clock import Clock, SystemClock
from coldtrail.erp import conformance, outbox
from coldtrail.errors import RecordError, StoreError
from coldtrail.retry import Backoff, retry_call
from coldtrail.rules import alarms, impact
from coldtrail.rules import queries as q
from coldtrail.rules.conditions import Condition, Limits, find_conditions, resume_from
from coldtrail.rules.fetch import fetch, load_places, place_history, range_history
from coldtrail.rules.impact import CapaPolicy
from coldtrail.rules.judge import Run, at, bound, find_runs, same
from coldtrail.rules.locations import LATE_AFTER, Outcome, regroup
from coldtrail.rules.notifiers import Notifier
from coldtrail.rules.ranges import Readings, spans_by_location, with_ranges

log = logging.getLogger(__name__)

CHANNEL = "coldtrail_readings"


FIELDS = (
    "location_id", "started_at", "start_seq", "ended_at", "end_seq", "last_seen_at",
    "limit_min_c", "limit_max_c", "min_c", "max_c", "duration_s", "degree_minutes", "mkt_c",
    "readings", "state",
)  # fmt: skip
# Late readings are judged from this much before the earliest of them (and the reading before
# it) beyond the longest alarm delay or unavailable span: a margin for what began just before.
LOOKBACK_S = 60.0


@dataclass
class RulesStats:
    batches: int = 0
    readings: int = 0
    opened: int = 0
    closed: int = 0
    revised: int = 0
    withdrawn: int = 0
    alarms: int = 0
    alarms_withdrawn: int = 0
    """Gap alarms withdrawn because late readings filled the gap."""
    notices: int = 0


class RulesEngine:
    def __init__(
        self,
        database_url: str,
        *,
        claim_limit: int = 50,
        clock: Clock | None = None,
        limits: Limits | None = None,
        capa: CapaPolicy | None = None,
        notifiers: dict[str, Notifier] | None = None,
        timers_every_s: float = 30.0,
        late_after: timedelta = LATE_AFTER,
        conformance_every_s: float = 0.0,
        profiles_dir: Path | None = None,
    ) -> None:
        self._url = database_url
        self._claim_limit = claim_limit
        self._clock = clock or SystemClock()
        self._limits = limits or Limits()
        self._capa = capa or CapaPolicy()
        self.desk = alarms.AlarmDesk(notifiers or {}, self._clock)
        self._timers_every_s = timers_every_s
        self._late_after = late_after
        self._timers_due: datetime | None = None
        # Each site checked against its compliance profile this often and kept (0: never).
        self._conformance_every_s = conformance_every_s
        self._conformance_due: datetime | None = None
        self._profiles_dir = profiles_dir
        self._watching_since = self._clock.now()
        self.stats = RulesStats()

    def tick(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        """One pass of the worker: judge what ingest committed, check the timers when due,
        call the contacts of alarms now due."""
        self.process_pending(conn)
        now = self._clock.now()
        if self._timers_due is None or now >= self._timers_due:
            with conn.transaction():
                self.stats.alarms += alarms.check_timers(
                    conn, now, self._limits, watching_since=self._watching_since
                )
            self._timers_due = now + timedelta(seconds=self._timers_every_s)
        self.stats.notices += self.desk.tick(conn)
        if self._conformance_every_s and (
            self._conformance_due is None or now >= self._conformance_due
        ):
            self._conformance_due = now + timedelta(seconds=self._conformance_every_s)
            try:
                conformance.record(conn, now, self._profiles_dir)
            except RecordError as exc:  # a site naming a profile not installed, say
                log.warning("conformance not checked: %s", exc)

    def process_pending(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int:
        """Judge every batch committed so far; returns how many batches it took."""
        total = 0
        while True:
            with conn.transaction():
                batches = [
                    r[0] for r in conn.execute(q.CLAIM_BATCHES, {"limit": self._claim_limit})
                ]
                if not batches:
                    return total
                span = conn.execute(q.BATCH_SPAN, {"batches": batches}).fetchone()
                assert span is not None  # noqa: S101 - an aggregate returns a row
                bounded = span[0] is not None and span[1] is not None
                firsts = conn.execute(
                    q.BATCH_SENSORS_IN_SPAN if bounded else q.BATCH_SENSORS,
                    {"batches": batches, "first": span[0], "last": span[1]},
                ).fetchall()
                judged = self.judge_sensors(conn, dict(firsts), upto_batch=max(batches))
                conn.execute(q.ROLLUP, {"batches": batches})
                conn.execute(q.FINISH_BATCHES, {"batches": batches})
            total += len(batches)
            self.stats.batches += len(batches)
            self.stats.readings += judged

    def judge_sensors(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        firsts: dict[str, datetime],
        *,
        upto_batch: int | None = None,
    ) -> int:
        """Judge each sensor again from where its readings must be judged again (see
        ``WINDOW_STARTS``) and bring its recorded excursions in line; returns how many readings
        were looked at. ``upto_batch``: leave out readings of later ingest batches, committed
        since the claim: their turn comes when they are claimed, and judged now they would look
        late then."""
        if not firsts:
            return 0
        sensors = sorted(firsts)
        conn.execute(q.LOCK_SENSORS, {"sensors": sensors})
        row = conn.execute(q.MAX_ALARM_DELAY_S).fetchone()
        longest = max(float(row[0] if row else 0), self._limits.unavailable_after_s)
        lookback = longest + LOOKBACK_S
        starts = dict(
            conn.execute(
                q.WINDOW_STARTS,
                {
                    "sensors": sensors,
                    "firsts": [firsts[s] for s in sensors],
                    "lookback_s": lookback,
                },
            ).fetchall()
        )
        stored: dict[str, list[tuple[Any, ...]]] = {}
        for sensor, *rest in conn.execute(q.STORED_EXCURSIONS, {"sensors": sensors}):
            if rest[4] is None or rest[4] >= starts[sensor] or rest[2] >= starts[sensor]:
                stored.setdefault(sensor, []).append(tuple(rest))
        places = load_places(conn, profiles_dir=self._profiles_dir)
        cols = fetch(
            conn, sensors, [starts[s] for s in sensors], None, places, upto_batch=upto_batch
        )
        present = np.unique(cols.loc[cols.loc > 0]).tolist()
        spans = spans_by_location(
            conn.execute(
                q.PRODUCT_RANGES,
                {
                    "locations": [places.ids[c] for c in present],
                    "since": min(starts.values()),
                    "until": None,
                },
            ),
            **range_history(conn),
        )
        data = with_ranges(cols, spans, place_history(conn))
        runs: dict[str, list[Run]] = {}
        for run in find_runs(data.temperature, confirmed_only=True):
            runs.setdefault(sensors[run.group], []).append(run)
        now = self._clock.now()
        touched: dict[str, datetime] = {}
        for sensor in sorted(runs.keys() | stored.keys()):
            self._reconcile(
                conn, sensor, runs.get(sensor, []), stored.get(sensor, []), now, touched
            )
        for place, since in sorted(touched.items()):
            for outcome in regroup(conn, place, since, now):
                self._follow(conn, outcome, now)
        found = find_conditions(data, self._limits)
        for condition in found:
            self.stats.alarms += alarms.upsert(conn, condition, now) is not None
        groups, newest, resume = resume_from(data, found)
        # Each sensor's span judged again, first reading to newest: its gaps are known anew.
        oldest = data.epoch_s[np.flatnonzero(data.bounds[0])].tolist()
        judged_spans = {
            data.sensors[g]: (at(f), at(n))
            for g, f, n in zip(groups.tolist(), oldest, newest.tolist(), strict=True)
        }
        self.stats.alarms_withdrawn += alarms.withdraw_filled_gaps(conn, found, judged_spans, now)
        if groups.size:
            self._save_cursors(conn, data, groups, newest, resume)
        return cols.size

    def _save_cursors(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        data: Readings,
        groups: np.ndarray,
        newest: np.ndarray,
        resume: np.ndarray,
    ) -> None:
        """Where each sensor's judging stands (``resume_from``), for the next batch's window."""
        conn.execute(
            q.SAVE_CURSORS,
            {
                "sensors": [data.sensors[g] for g in groups.tolist()],
                "until": [at(t) for t in newest.tolist()],
                "resume": [at(t) for t in resume.tolist()],
            },
        )

    def _follow(
        self, conn: psycopg.Connection[tuple[Any, ...]], outcome: Outcome, now: datetime
    ) -> None:
        """What a location excursion's change sets off: its event, its alarm, its impact."""
        s = outcome.summary
        data = {
            "location_excursion": outcome.id, "state": s.state, "late": outcome.late,
            "sensors": s.sensors, "started_at": s.started_at.isoformat(),
            "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            "last_seen_at": s.last_seen_at.isoformat(), "limit_min_c": s.limit_min_c,
            "limit_max_c": s.limit_max_c, "min_c": s.min_c, "max_c": s.max_c,
            "duration_s": s.duration_s, "degree_minutes": s.degree_minutes, "mkt_c": s.mkt_c,
        }  # fmt: skip
        changes = [outcome.change]
        if outcome.change == "opened" and s.ended_at is not None:
            changes.append("closed")  # found whole: it began and ended before anyone saw it
        payload = {"excursion": outcome.id, "location": outcome.location_id, **data}
        for change in changes:
            if change == "extended":
                continue
            at = {"opened": s.started_at, "closed": s.ended_at}.get(change) or now
            outbox.emit(conn, f"excursion.{change}", f"location/{outcome.location_id}", payload, at)
        if outcome.change == "withdrawn":
            for (alarm_id,) in conn.execute(
                "SELECT id FROM alarms WHERE location_excursion_id = %s", (outcome.id,)
            ).fetchall():
                alarms.end(conn, alarm_id, now, now)
            log.warning("location excursion %d withdrawn: later readings show none", outcome.id)
            return
        limits = f"{bound(s.limit_min_c)}..{bound(s.limit_max_c)} °C"
        alarms.upsert(
            conn,
            Condition(
                "excursion", "", outcome.location_id, s.started_at, s.ended_at,
                f"{outcome.location_id} out of range: {s.min_c:.1f}..{s.max_c:.1f} °C "
                f"(allowed {limits}) since {s.started_at.isoformat()}"
                + (" (found late)" if outcome.late else ""),
                data,
                identity=f"excursion:{outcome.id}",  # the same alarm however it is revised
            ),
            now,
            location_excursion=outcome.id,
        )  # fmt: skip
        impact.apply(conn, outcome.id, now, self._capa, revised=outcome.change == "revised")

    def _reconcile(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        sensor: str,
        runs: list[Run],
        stored: list[tuple[Any, ...]],
        now: datetime,
        touched: dict[str, datetime],
    ) -> None:
        """Make the recorded excursions of the window what the readings now say: revise the
        one a run overlaps, withdraw one no run supports any more, record a new run."""
        unmatched = list(stored)
        pairs: list[tuple[Run, tuple[Any, ...] | None]] = []
        for run in runs:
            match = next((s for s in unmatched if _overlaps(run, s)), None)
            if match is not None:
                unmatched.remove(match)
            pairs.append((run, match))
        for gone in unmatched:
            conn.execute(q.WITHDRAW_EXCURSION, {"id": gone[0], "now": now})
            self.stats.withdrawn += 1
            _touch(touched, gone[1], gone[2])
            log.warning("excursion %d withdrawn: later readings of %s show none", gone[0], sensor)
        for run, old in sorted(pairs, key=lambda p: p[0].ended_at is None):
            values = _values(run)
            if old is None:
                late = now - (run.started_at + timedelta(seconds=run.delay_s)) > self._late_after
                new_id = conn.execute(
                    q.INSERT_EXCURSION, {**values, "sensor": sensor, "late": late, "now": now}
                ).fetchone()[0]  # type: ignore[index]
                self.stats.opened += 1
                log.warning(
                    "excursion %d%s: sensor %s at %s from %s, %.2f..%.2f °C (range %s..%s)",
                    new_id, " (late)" if late else "", sensor, run.location_id,
                    run.started_at.isoformat(), run.min_c, run.max_c, run.limit_min_c,
                    run.limit_max_c,
                )  # fmt: skip
                _touch(touched, run.location_id, run.started_at)
                if run.ended_at is not None:
                    self.stats.closed += 1
                continue
            before = dict(zip(("id", *FIELDS), old, strict=True))
            if all(same(before[f], values[f]) for f in FIELDS):
                continue
            revised = before["state"] == "closed" or before["started_at"] != run.started_at
            conn.execute(
                q.UPDATE_EXCURSION, {**values, "id": old[0], "revised": revised, "now": now}
            )
            _touch(touched, before["location_id"], min(before["started_at"], run.started_at))
            _touch(touched, run.location_id, run.started_at)
            if revised:
                self.stats.revised += 1
            elif run.ended_at is not None:
                self.stats.closed += 1
                log.info("excursion %d closed: %s back in range at %s", old[0], sensor,
                         run.ended_at.isoformat())  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        """Process batches as ingest commits them until ``stop`` is set; reconnects by itself."""
        retry_call(
            lambda: self._session(stop),
            retry_on=(StoreError,),
            what="rules",
            backoff=Backoff(initial_s=0.5, maximum_s=10.0, deadline_s=None),
            should_stop=stop.is_set,
        )

    def _session(self, stop: threading.Event) -> None:
        try:
            with (
                psycopg.connect(
                    self._url, autocommit=True, application_name="coldtrail-rules"
                ) as listener,
                psycopg.connect(self._url, application_name="coldtrail-rules") as conn,
            ):
                listener.execute(f"LISTEN {CHANNEL}")
                while not stop.is_set():
                    self.tick(conn)
                    # A notification only wakes us; the claim query finds what is pending.
                    # The short timeout bounds both a lost notification and a stop request.
                    for _ in listener.notifies(timeout=0.5, stop_after=1):
                        pass
        except psycopg.OperationalError as exc:
            raise StoreError(f"rules lost the database: {exc}") from exc


def _overlaps(run: Run, stored: tuple[Any, ...]) -> bool:
    started, start_seq, ended = stored[2], stored[3], stored[4]
    if start_seq == run.start_seq and started == run.started_at:
        return True
    run_end = run.ended_at or run.last_seen_at
    return bool(started <= run_end and (ended is None or run.started_at <= ended))


def _values(run: Run) -> dict[str, Any]:
    values = {k: v for k, v in asdict(run).items() if k in FIELDS}
    values["state"] = "open" if run.ended_at is None else "closed"
    return values


def _touch(touched: dict[str, datetime], place: str, since: datetime) -> None:
    touched[place] = min(since, touched.get(place, since))
