"""The rules worker: claims committed ingest batches and judges their readings.

Ingest writes one ``ingest_batches`` row per commit and sends NOTIFY; this worker LISTENs,
and also looks on a timer so a lost notification costs seconds, not a reading.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import psycopg

from coldtrail.erp import outbox
from coldtrail.errors import StoreError
from coldtrail.retry import Backoff, retry_call
from coldtrail.rules import queries as q

log = logging.getLogger(__name__)

CHANNEL = "coldtrail_readings"


@dataclass
class OpenExcursion:
    id: int
    min_c: float
    max_c: float
    ended_at: datetime | None = None
    end_seq: int | None = None
    dirty: bool = False


@dataclass
class RulesStats:
    batches: int = 0
    readings: int = 0
    opened: int = 0
    closed: int = 0


class RulesEngine:
    def __init__(self, database_url: str, *, claim_limit: int = 50) -> None:
        self._url = database_url
        self._claim_limit = claim_limit
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
                rows = conn.execute(q.BATCH_READINGS, {"batches": batches}).fetchall()
                for sensor, readings in groupby(rows, key=lambda r: r[0]):
                    self._judge(conn, sensor, list(readings))
                conn.execute(q.ROLLUP, {"batches": batches})
                conn.execute(q.FINISH_BATCHES, {"batches": batches})
            total += len(batches)
            self.stats.batches += len(batches)
            self.stats.readings += len(rows)

    def _judge(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        sensor: str,
        readings: list[tuple[Any, ...]],
    ) -> None:
        conn.execute(q.LOCK_SENSOR, {"sensor": sensor})
        row = conn.execute(q.OPEN_EXCURSION, {"sensor": sensor}).fetchone()
        current = OpenExcursion(row[0], row[1], row[2]) if row else None
        for _, seq, ts, status, temp, location, lo, hi in readings:
            if status != "ok" or temp is None or location is None or (lo is None and hi is None):
                continue  # no value, or no range to judge it by: never counts as in range
            outside = (lo is not None and temp < lo) or (hi is not None and temp > hi)
            if outside and current is None:
                new_id = conn.execute(
                    q.INSERT_EXCURSION,
                    {
                        "sensor": sensor,
                        "location": location,
                        "ts": ts,
                        "seq": seq,
                        "lo": lo,
                        "hi": hi,
                        "t": temp,
                    },
                ).fetchone()[0]  # type: ignore[index]
                current = OpenExcursion(new_id, temp, temp)
                self.stats.opened += 1
                outbox.emit(
                    conn,
                    "excursion.opened",
                    f"location/{location}",
                    {"excursion": new_id, "sensor": sensor, "location": location,
                     "started_at": ts.isoformat(), "start_seq": seq, "temperature_c": temp,
                     "limit_min_c": lo, "limit_max_c": hi},
                    ts,
                )  # fmt: skip
                log.warning(
                    "excursion %d opened: sensor %s at %s read %.2f °C (range %s..%s)",
                    new_id,
                    sensor,
                    location,
                    temp,
                    lo,
                    hi,
                )
            elif outside and current is not None:
                current.min_c = min(current.min_c, temp)
                current.max_c = max(current.max_c, temp)
                current.dirty = True
            elif current is not None:
                current.ended_at, current.end_seq, current.dirty = ts, seq, True
                self._save(conn, current)
                self.stats.closed += 1
                outbox.emit(
                    conn,
                    "excursion.closed",
                    f"location/{location}",
                    {"excursion": current.id, "sensor": sensor, "location": location,
                     "ended_at": ts.isoformat(), "end_seq": seq, "min_c": current.min_c,
                     "max_c": current.max_c},
                    ts,
                )  # fmt: skip
                log.info(
                    "excursion %d closed: sensor %s back in range at %s",
                    current.id,
                    sensor,
                    ts.isoformat(),
                )
                current = None
        if current is not None and current.dirty:
            self._save(conn, current)

    @staticmethod
    def _save(conn: psycopg.Connection[tuple[Any, ...]], e: OpenExcursion) -> None:
        conn.execute(
            q.UPDATE_EXCURSION,
            {
                "id": e.id,
                "min_c": e.min_c,
                "max_c": e.max_c,
                "ended_at": e.ended_at,
                "end_seq": e.end_seq,
            },
        )

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
