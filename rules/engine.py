"""The rules worker: claims committed ingest batches and judges their readings.

Ingest writes one ``ingest_batches`` row per commit and sends NOTIFY; this worker LISTENs,
and also looks on a timer so a lost notification costs seconds, not a reading.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

import numpy as np
import psycopg

from coldtrail.clock import Clock, SystemClock
from coldtrail.erp import outbox
from coldtrail.errors import StoreError
from coldtrail.retry import Backoff, retry_call
from coldtrail.rules import queries as q
from coldtrail.rules.impact import hold_affected_lots
from coldtrail.rules.judge import Run, Window, find_runs

log = logging.getLogger(__name__)

CHANNEL = "coldtrail_readings"


FIELDS = (
    "location_id", "started_at", "start_seq", "ended_at", "end_seq", "last_seen_at",
    "limit_min_c", "limit_max_c", "min_c", "max_c", "duration_s", "degree_minutes", "mkt_c",
    "readings", "state",
)  # fmt: skip
# An excursion confirmed this long before the rules saw it is marked late (an edge backlog).
LATE_AFTER = timedelta(minutes=5)
# How far before a sensor's earliest new reading judging starts, beyond the longest alarm
# delay: enough to take up a run out of range that began just before it.
LOOKBACK_S = 900.0


@dataclass
class RulesStats:
    batches: int = 0
    readings: int = 0
    opened: int = 0
    closed: int = 0
    revised: int = 0
    withdrawn: int = 0


class RulesEngine:
    def __init__(
        self, database_url: str, *, claim_limit: int = 50, clock: Clock | None = None
    ) -> None:
        self._url = database_url
        self._claim_limit = claim_limit
        self._clock = clock or SystemClock()
        self.stats = RulesStats()

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
                firsts = conn.execute(q.BATCH_SENSORS, {"batches": batches}).fetchall()
                judged = self.judge_sensors(conn, {s: ts for s, ts in firsts})
                conn.execute(q.ROLLUP, {"batches": batches})
                conn.execute(q.FINISH_BATCHES, {"batches": batches})
            total += len(batches)
            self.stats.batches += len(batches)
            self.stats.readings += judged

    def judge_sensors(
        self, conn: psycopg.Connection[tuple[Any, ...]], firsts: dict[str, datetime]
    ) -> int:
        """Judge each sensor again from a little before its earliest new reading, and bring
        its recorded excursions in line; returns how many readings were looked at."""
        if not firsts:
            return 0
        sensors = sorted(firsts)
        conn.execute(q.LOCK_SENSORS, {"sensors": sensors})
        row = conn.execute(q.MAX_ALARM_DELAY_S).fetchone()
        lookback = float(row[0] if row else 0) + LOOKBACK_S
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
        rows = conn.execute(
            q.WINDOW_READINGS, {"sensors": sensors, "froms": [starts[s] for s in sensors]}
        ).fetchall()
        now = self._clock.now()
        for sensor, readings in groupby(rows, key=lambda r: r[0]):
            window = _window(list(readings))
            runs = find_runs(window, confirmed_only=True)
            self._reconcile(conn, sensor, runs, stored.pop(sensor, []), now)
        for sensor, left in stored.items():  # recorded, but no reading left in the window
            self._reconcile(conn, sensor, [], left, now)
        return len(rows)

    def _reconcile(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        sensor: str,
        runs: list[Run],
        stored: list[tuple[Any, ...]],
        now: datetime,
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
            reason = {"reason": "later readings show no excursion here"}
            self._event(conn, "withdrawn", sensor, gone[0], gone[1], reason, now)
            log.warning("excursion %d withdrawn: later readings of %s show none", gone[0], sensor)
        for run, old in sorted(pairs, key=lambda p: p[0].ended_at is None):
            values = _values(run)
            if old is None:
                late = now - (run.started_at + timedelta(seconds=run.delay_s)) > LATE_AFTER
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
                self._event(conn, "opened", sensor, new_id, run.location_id,
                            {**_public(values), "late": late}, run.started_at)  # fmt: skip
                hold_affected_lots(conn, new_id, now)
                if run.ended_at is not None:
                    self.stats.closed += 1
                    self._event(conn, "closed", sensor, new_id, run.location_id,
                                _public(values), run.ended_at)  # fmt: skip
                continue
            before = dict(zip(("id", *FIELDS), old, strict=True))
            if all(_same(before[f], values[f]) for f in FIELDS):
                continue
            revised = before["state"] == "closed" or before["started_at"] != run.started_at
            conn.execute(
                q.UPDATE_EXCURSION, {**values, "id": old[0], "revised": revised, "now": now}
            )
            hold_affected_lots(conn, old[0], now)  # it may have lasted longer, touched more
            if revised:
                self.stats.revised += 1
                self._event(conn, "revised", sensor, old[0], run.location_id,
                            _public(values), now)  # fmt: skip
            elif run.ended_at is not None:
                self.stats.closed += 1
                log.info("excursion %d closed: %s back in range at %s", old[0], sensor,
                         run.ended_at.isoformat())  # fmt: skip
                self._event(conn, "closed", sensor, old[0], run.location_id, _public(values),
                            run.ended_at)  # fmt: skip

    @staticmethod
    def _event(
        conn: psycopg.Connection[tuple[Any, ...]],
        what: str,
        sensor: str,
        excursion: int,
        location: str,
        data: dict[str, Any],
        at: datetime,
    ) -> None:
        payload = {"excursion": excursion, "sensor": sensor, "location": location, **data}
        outbox.emit(conn, f"excursion.{what}", f"location/{location}", payload, at)

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
                    self.process_pending(conn)
                    # A notification only wakes us; the claim query finds what is pending.
                    # The short timeout bounds both a lost notification and a stop request.
                    for _ in listener.notifies(timeout=0.5, stop_after=1):
                        pass
        except psycopg.OperationalError as exc:
            raise StoreError(f"rules lost the database: {exc}") from exc


def _window(rows: list[tuple[Any, ...]]) -> Window:
    _, epoch, seq, ok, temp, loc, lo, hi, delay = zip(*rows, strict=True)
    return Window(
        epoch_s=np.array(epoch, dtype=float),
        seq=np.array(seq, dtype=np.int64),
        ok=np.array(ok, dtype=bool),
        temp=np.array([np.nan if t is None else t for t in temp], dtype=float),
        lo=np.array([np.nan if v is None else v for v in lo], dtype=float),
        hi=np.array([np.nan if v is None else v for v in hi], dtype=float),
        location=list(loc),
        delay_s=np.array(delay, dtype=float),
    )


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


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)
