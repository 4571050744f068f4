"""The live view's document, built by the database and served again while it is young.

Building it for 10 000 sensors costs the database about a third of a second of one core
(bench.live). Ten dashboards polling every five seconds would keep one of a small server's
two cores busy with nothing else. A document younger than ``max_age_s`` is served as it was
built; its ``generated_at`` says when, and what changed since comes on the push stream.

When the kept document is older, it is still served, and the next is built in the
background (one build at a time, over every site filter), so a request polling along never
waits for a build. A document older than ``STALE_SERVED`` times the maximum age (nobody
asked for a while) is not served: that request waits for the next build, as the very first
does. Requests arriving during such a build wait for it instead of starting their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg

from coldtrail.clock import Clock

log = logging.getLogger(__name__)
Build = Callable[[datetime], bytes]
STALE_SERVED = 10


@dataclass(frozen=True)
class _Built:
    at: datetime
    body: bytes


class LiveSnapshots:
    def __init__(
        self,
        clock: Clock,
        max_age_s: float,
        rebuild: Callable[[str | None, datetime], bytes] | None = None,
    ) -> None:
        """``rebuild(site, now)`` builds a document on a connection of its own, for the
        background; without it a request that finds its document old builds the next."""
        self._clock = clock
        self._max_age_s = max_age_s
        self._rebuild = rebuild
        self._built: dict[str | None, _Built] = {}
        self._locks: dict[str | None, threading.Lock] = {}
        self._guard = threading.Lock()
        self._background = threading.Lock()  # one background build at a time
        self._thread: threading.Thread | None = None

    def get(self, site: str | None, build: Build) -> tuple[bytes, datetime]:
        """The document for ``site`` (None: all sites) and when it was built; ``build(now)``
        makes one in this call when there is none to serve."""
        with self._guard:
            lock = self._locks.setdefault(site, threading.Lock())
            kept = self._built.get(site)
        if kept is not None and self._younger(kept, self._max_age_s):
            return kept.body, kept.at
        if kept is not None and self._younger(kept, self._max_age_s * STALE_SERVED):
            return self._refresh(site, lock, build) or (kept.body, kept.at)
        with lock:
            with self._guard:
                kept = self._built.get(site)
            if kept is not None and self._younger(kept, self._max_age_s):  # built meanwhile
                return kept.body, kept.at
            return self._store(site, build)

    def close(self) -> None:
        """Wait for a background build still running (before its connections close)."""
        if self._thread is not None:
            self._thread.join()

    def _younger(self, kept: _Built, seconds: float) -> bool:
        # A document from the future (a clock set back) is old.
        return 0 <= (self._clock.now() - kept.at).total_seconds() < seconds

    def _store(self, site: str | None, build: Build) -> tuple[bytes, datetime]:
        now = self._clock.now()
        body = build(now)
        if self._max_age_s > 0:
            with self._guard:
                self._built[site] = _Built(now, body)
        return body, now

    def _refresh(
        self, site: str | None, lock: threading.Lock, build: Build
    ) -> tuple[bytes, datetime] | None:
        """Start the next build; the new document if it was built in this call."""
        if self._rebuild is None:
            if not lock.acquire(blocking=False):
                return None  # another request is building it
            try:
                return self._store(site, build)
            finally:
                lock.release()
        if not self._background.acquire(blocking=False):
            return None  # a build is running; the next request after it asks again
        rebuild = self._rebuild

        def run() -> None:
            try:
                with lock:
                    self._store(site, lambda now: rebuild(site, now))
            except psycopg.Error:
                log.exception("live view: the background build failed; the kept one stays")
            finally:
                self._background.release()

        self._thread = threading.Thread(target=run, name="live-build", daemon=True)
        self._thread.start()
        return None
