"""Is the gateway's clock to be trusted? Every reading's time is evidence, so the edge says.

``unsynced``: the kernel reports its clock not synchronised (no NTP, or it lost sync).
``implausible``: the clock reads a time this software could not be running at (a gateway
that booted without a real-time clock often starts in 1970 or 2000).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from datetime import UTC, datetime

from coldtrail.messages import ClockState

EARLIEST = datetime(2025, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def kernel_clock_synced() -> bool | None:
    """What the kernel says (Linux adjtimex with no change asked); None where it can't say."""
    if not sys.platform.startswith("linux"):
        return None
    buf = ctypes.create_string_buffer(512)  # larger than struct timex; modes = 0: read only
    rc = _libc().adjtimex(buf)
    if rc < 0:
        return None
    return bool(rc != _TIME_ERROR)


def clock_state(now: datetime, synced: bool | None) -> ClockState:
    if not EARLIEST <= now < LATEST:
        return ClockState.IMPLAUSIBLE
    if synced is False:
        return ClockState.UNSYNCED
    return ClockState.OK


def system_clock_check(now: datetime) -> ClockState:
    return clock_state(now, kernel_clock_synced())
