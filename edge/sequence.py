"""Per-sensor sequence numbers that survive a restart.

``(sensor, seq)`` is a reading's identity all the way to the database, where a repeat is
stored once: a counter that restarted at 1 would make fresh readings look like old ones.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class SequenceStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a counter that went back after a power cut would lose readings to dedupe.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seq (sensor TEXT PRIMARY KEY, last INTEGER NOT NULL)"
        )

    def next(self, sensor: str) -> int:
        row = self._db.execute(
            "INSERT INTO seq (sensor, last) VALUES (?, 1) "
            "ON CONFLICT (sensor) DO UPDATE SET last = last + 1 RETURNING last",
            (sensor,),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
