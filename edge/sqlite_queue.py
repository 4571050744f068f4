"""The durable edge queue: SQLite in WAL mode.

Every ``put`` is its own committed transaction, with ``synchronous=FULL`` by default: once
``put`` returns, the reading survives a kill -9 and a power cut (FULL makes SQLite fsync the
WAL at each commit). ``NORMAL`` keeps it across a process crash but may lose the last
commits on power loss; it is faster on slow flash. What is in flight lives only in memory,
so after a restart every reading not acknowledged is sent again (ingest drops repeats).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Literal

from coldtrail.edge.queue import Key, QueueUsage
from coldtrail.messages import Reading

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    sensor  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    ts      TEXT NOT NULL,
    reading TEXT NOT NULL,
    UNIQUE (sensor, seq)
)
"""


class SqliteQueue:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        budget_bytes: int | None = None,
    ) -> None:
        self._path = path
        self._budget = budget_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        self._db.execute(_SCHEMA)
        self._inflight: dict[Key, int] = {}
        self._cursor = 0  # highest id handed out by take() since the last release
        row = self._db.execute("SELECT count(*) FROM queue").fetchone()
        self._len = int(row[0])

    @property
    def connection(self) -> sqlite3.Connection:
        """For the sequence store, so a number and its reading commit together."""
        return self._db

    def put(self, reading: Reading) -> None:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO queue (sensor, seq, ts, reading) VALUES (?, ?, ?, ?)",
            (reading.sensor, reading.seq, reading.ts.isoformat(), reading.model_dump_json()),
        )
        self._len += cur.rowcount

    def take(self, limit: int) -> list[Reading]:
        out: list[Reading] = []
        while len(out) < limit:
            rows = self._db.execute(
                "SELECT id, sensor, seq, reading FROM queue WHERE id > ? ORDER BY id LIMIT ?",
                (self._cursor, limit - len(out)),
            ).fetchall()
            if not rows:
                break
            for row_id, sensor, seq, raw in rows:
                self._cursor = row_id
                if (sensor, seq) not in self._inflight:
                    self._inflight[(sensor, seq)] = row_id
                    out.append(Reading.model_validate_json(raw))
        return out

    def ack(self, keys: Iterable[Key]) -> None:
        ids = [(i,) for k in keys if (i := self._inflight.pop(k, None)) is not None]
        if not ids:
            return
        with self._db:  # one transaction for the whole batch
            self._db.execute("BEGIN")
            cur = self._db.executemany("DELETE FROM queue WHERE id = ?", ids)
        self._len -= cur.rowcount

    def release(self, keys: Iterable[Key]) -> None:
        released = [i for k in keys if (i := self._inflight.pop(k, None)) is not None]
        if released:
            self._cursor = min(self._cursor, min(released) - 1)

    def __len__(self) -> int:
        return self._len

    def oldest_ts(self) -> datetime | None:
        """Measurement time of the reading queued first (readings queue in time order)."""
        row = self._db.execute("SELECT ts FROM queue ORDER BY id LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def usage(self) -> QueueUsage:
        """Readings never leave for lack of space: past the budget the queue alarms, and goes
        on writing while the disk lets it."""
        wal = self._path.with_name(self._path.name + "-wal")
        used = self._path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return QueueUsage(len(self), self.oldest_ts(), used, self._budget)

    def close(self) -> None:
        self._db.close()
