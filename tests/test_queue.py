"""One suite for every edge queue implementation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from coldtrail.edge.queue import MemoryQueue, ReadingQueue
from coldtrail.messages import Reading
from tests.conftest import T0

IMPLEMENTATIONS: dict[str, Callable[[], ReadingQueue]] = {"memory": MemoryQueue}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def queue(request: pytest.FixtureRequest) -> ReadingQueue:
    return IMPLEMENTATIONS[request.param]()


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
