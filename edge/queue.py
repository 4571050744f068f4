"""The edge's outbound queue: every reading waits here until the broker has acknowledged it.

:class:`ReadingQueue` is the interface; :class:`MemoryQueue` keeps readings in memory (tests,
the demo). The durable SQLite queue implements the same interface and passes the same suite.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from coldtrail.messages import Reading

Key = tuple[str, int]  # (sensor, seq)
ALARM_AT = 0.9  # share of the disk budget at which the edge alarms


@dataclass(frozen=True)
class QueueUsage:
    readings: int
    oldest_ts: datetime | None
    bytes_used: int | None = None
    """On disk; None for a queue that keeps nothing on disk."""
    budget_bytes: int | None = None

    @property
    def alarm(self) -> bool:
        """Close to the disk budget: someone must act (bring the broker back, add space)."""
        return (
            self.bytes_used is not None
            and self.budget_bytes is not None
            and self.bytes_used >= ALARM_AT * self.budget_bytes
        )


class ReadingQueue(Protocol):
    def put(self, reading: Reading) -> None:
        """Add a reading; a second put of the same (sensor, seq) is ignored."""
        ...

    def take(self, limit: int) -> list[Reading]:
        """Oldest readings not already taken, at most ``limit``; they stay queued, in flight."""
        ...

    def ack(self, keys: Iterable[Key]) -> None:
        """The broker has them: remove them for good."""
        ...

    def release(self, keys: Iterable[Key]) -> None:
        """They were not delivered: make them available to ``take`` again, in their old place."""
        ...

    def __len__(self) -> int: ...

    def oldest_ts(self) -> datetime | None: ...

    def usage(self) -> QueueUsage: ...


class MemoryQueue:
    def __init__(self) -> None:
        self._items: OrderedDict[Key, Reading] = OrderedDict()
        self._inflight: set[Key] = set()

    def put(self, reading: Reading) -> None:
        self._items.setdefault((reading.sensor, reading.seq), reading)

    def take(self, limit: int) -> list[Reading]:
        out: list[Reading] = []
        for key, reading in self._items.items():
            if len(out) >= limit:
                break
            if key not in self._inflight:
                self._inflight.add(key)
                out.append(reading)
        return out

    def ack(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self._items.pop(key, None)
            self._inflight.discard(key)

    def release(self, keys: Iterable[Key]) -> None:
        self._inflight.difference_update(keys)

    def __len__(self) -> int:
        return len(self._items)

    def oldest_ts(self) -> datetime | None:
        return min((r.ts for r in self._items.values()), default=None)

    def usage(self) -> QueueUsage:
        return QueueUsage(len(self), self.oldest_ts())
