"""The one retry helper: exponential backoff with full jitter and an overall deadline."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial_s: float = 0.2
    maximum_s: float = 10.0
    multiplier: float = 2.0
    deadline_s: float | None = 60.0
    """Give up once this much time has passed since the first attempt (None: never)."""

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1-based): full jitter under the cap."""
        cap = min(self.maximum_s, self.initial_s * self.multiplier ** (attempt - 1))
        return (rng or _rng).uniform(0.0, cap)


_rng = random.Random()  # noqa: S311 - jitter, not cryptography


def retry_call(
    fn: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    should_stop: Callable[[], bool] = lambda: False,
    what: str = "operation",
) -> T:
    """Call ``fn`` until it succeeds; re-raise the last error past the deadline or on stop."""
    start = monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except retry_on as exc:
            elapsed = monotonic() - start
            delay = backoff.delay(attempt)
            out_of_time = backoff.deadline_s is not None and elapsed + delay > backoff.deadline_s
            if out_of_time or should_stop():
                raise
            if attempt == 1:
                log.warning("%s failed, retrying: %s", what, exc)
            sleep(delay)
