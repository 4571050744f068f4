"""Per-sensor sequence numbers that survive a restart.

``(sensor, seq)`` is a reading's identity all the way to the database, where a repeat is
stored once: a counter that restarted at 1 would make fresh readings look like old ones.
With the SQLite queue the counters live in the queue's own database, and the coordinator
takes a number and queues the reading in one transaction: a kill -9 between the two can't
leave a number used but no reading queued (a gap in the record).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SequenceStore:
    def __init__(
        self, path: Path | None = None, *, connection: sqlite3.Connection | None = None
    ) -> None:
        if connection is None:
            if path is None:
                raise ValueError("SequenceStore needs a path or a connection")
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL: a counter that went back after a power cut would lose readings to dedupe.
            connection.execute("PRAGMA synchronous=FULL")
            self._owned = True
        else:
            self._owned = False
        self._db = connection
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seq (sensor TEXT PRIMARY KEY, last INTEGER NOT NULL)"
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything done on this connection inside (the queue's put too) commits at once."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def next(self, sensor: str) -> int:
        row = self._db.execute(
            "INSERT INTO seq (sensor, last) VALUES (?, 1) "
            "ON CONFLICT (sensor) DO UPDATE SET last = last + 1 RETURNING last",
            (sensor,),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._owned:
            self._db.close()
