"""One suite for every edge queue implementation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from coldtrail.edge.queue import MemoryQueue, ReadingQueue
from coldtrail.edge.sqlite_queue import SqliteQueue
from coldtrail.messages import Reading
from tests.conftest import T0

IMPLEMENTATIONS: dict[str, Callable[[Path], ReadingQueue]] = {
    "memory": lambda _: MemoryQueue(),
    "sqlite": lambda tmp: SqliteQueue(tmp / "queue.sqlite3"),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadingQueue]:
    q = IMPLEMENTATIONS[request.param](tmp_path)
    yield q
    if isinstance(q, SqliteQueue):
        q.close()


def _r(seq: int, sensor: str = "S1") -> Reading:
    return Reading(sensor=sensor, seq=seq, ts=T0 + timedelta(minutes=seq), temperature_c=5.0)


def test_take_gives_oldest_first_and_not_twice(queue: ReadingQueue) -> None:
    for s in (1, 2, 3):
        queue.put(_r(s))
    assert [r.seq for r in queue.take(2)] == [1, 2]
    assert [r.seq for r in queue.take(5)] == [3]
    assert queue.take(5) == []
    assert len(queue) == 3


def test_only_ack_removes(queue: ReadingQueue) -> None:
    queue.put(_r(1))
    queue.put(_r(2))
    taken = queue.take(10)
    queue.ack([(taken[0].sensor, taken[0].seq)])
    assert len(queue) == 1
    assert queue.oldest_ts() == _r(2).ts


def test_release_puts_readings_back_in_their_place(queue: ReadingQueue) -> None:
    for s in (1, 2, 3):
        queue.put(_r(s))
    queue.take(2)
    queue.release([("S1", 1), ("S1", 2)])
    assert [r.seq for r in queue.take(10)] == [1, 2, 3]


def test_same_reading_twice_is_queued_once(queue: ReadingQueue) -> None:
    queue.put(_r(1))
    queue.put(_r(1))
    assert len(queue) == 1


def test_release_of_a_later_reading_keeps_earlier_ones_in_flight(queue: ReadingQueue) -> None:
    for s in (1, 2, 3):
        queue.put(_r(s))
    queue.take(3)
    queue.release([("S1", 3)])
    assert [r.seq for r in queue.take(10)] == [3]


def test_readings_round_trip_unchanged(queue: ReadingQueue) -> None:
    r = Reading(sensor="S:9", seq=2**40, ts=T0, temperature_c=-18.25, humidity_pct=0.0)
    queue.put(r)
    assert queue.take(1) == [r]


def test_sqlite_queue_offers_unacknowledged_readings_again_after_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.sqlite3"
    q = SqliteQueue(path)
    for s in (1, 2, 3):
        q.put(_r(s))
    q.take(3)
    q.ack([("S1", 1)])
    q.close()  # the process ends with 2 and 3 in flight, never acknowledged

    again = SqliteQueue(path)
    assert len(again) == 2
    assert [r.seq for r in again.take(10)] == [2, 3]
    assert again.oldest_ts() == _r(2).ts
    again.close()


_WRITER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from coldtrail.edge.sqlite_queue import SqliteQueue
from coldtrail.messages import Reading
q = SqliteQueue(Path(sys.argv[1]))
t0 = datetime(2026, 11, 22, tzinfo=UTC)
seq = 0
while True:
    seq += 1
    q.put(Reading(sensor="S1", seq=seq, ts=t0 + timedelta(seconds=seq), temperature_c=5.0))
    print(seq, flush=True)  # only after put() returned: this one must survive
"""


def test_sqlite_queue_keeps_every_put_through_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        confirmed = 0
        for line in writer.stdout:
            confirmed = int(line)
            if confirmed >= 200:
                break
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(10)

    q = SqliteQueue(path)
    seqs = [r.seq for r in q.take(1_000_000)]
    q.close()
    assert seqs[:confirmed] == list(range(1, confirmed + 1))  # nothing confirmed is lost
    assert seqs == list(range(1, len(seqs) + 1))  # and nothing half-written
