"""The live view's document, built by the database and served again while it is young.

Building it from nothing for 10 000 sensors costs the database about a third of a second of
one core (bench.live); :class:`LiveBuilder` keeps each sensor's part from one build to the
next and asks only for the sensors that changed. Even so, ten dashboards polling every second
would have it built ten times a second. A document younger than ``max_age_s`` is served as it
was built; its ``generated_at`` says when, and what changed since comes on the push stream.

When the kept document is older, it is still served, and the next is built in the
background (one build at a time, over every site filter), so a request polling along never
waits for a build. A document older than ``STALE_SERVED`` times the maximum age (nobody
asked for a while) is not served: that request waits for the next build, as the very first
does. Requests arriving during such a build wait for it instead of starting their own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from coldtrail.api import models
from coldtrail.api import queries as q
from coldtrail.clock import Clock

log = logging.getLogger(__name__)
Build = Callable[[datetime], bytes]
STALE_SERVED = 10
Conn = psycopg.Connection[Any]


def live_params(
    now: datetime, stale_after_s: float = 300.0, site: str | None = None
) -> dict[str, Any]:
    """The parameters of :data:`coldtrail.api.queries.LIVE_FRAME` and ``LIVE_SENSORS``."""
    return {
        "now": now,
        "stale_s": stale_after_s,
        "colours": Jsonb(models.STATE_COLOURS),
        "ranked": list(models.STATE_RANK),
        "site": site,
    }


class LiveBuilder:
    """Builds the live document, keeping each sensor's JSON by its key from one build to the
    next: a build asks the database for the JSON of the sensors whose key changed only (a new
    reading, a move, a new state, an edit; see :mod:`coldtrail.api.queries`).

    Safe for builds on several threads at once; each build reads one snapshot of the database.
    """

    def __init__(self, stale_after_s: float = 300.0) -> None:
        self.stale_after_s = stale_after_s
        self._parts: dict[str, tuple[str, bytes]] = {}  # sensor -> (key, its JSON)
        self._lock = threading.Lock()
        self.asked = 0
        """How many sensors' JSON the last build asked the database for."""

    def build(self, conn: Conn, site: str | None, now: datetime) -> bytes:
        params = live_params(now, self.stale_after_s, site)
        with conn.transaction():
            # One snapshot for both queries: the keys, the parts asked for and the places
            # agree with each other, whatever commits between the two.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = conn.execute(q.LIVE_FRAME, params).fetchone()
            if row is None:  # an aggregate always gives its one row
                raise RuntimeError("the live frame query gave no row")
            keyed, places, vehicles = row
            parts: list[bytes | None] = []
            wanted: dict[str, int] = {}  # sensor -> its place in parts
            with self._lock:
                kept = self._parts
                for sensor, key in keyed:
                    part = kept.get(sensor)
                    if part is not None and part[0] == key:
                        parts.append(part[1])
                    else:
                        wanted[sensor] = len(parts)
                        parts.append(None)
            fresh: dict[str, tuple[str, bytes]] = {}
            if len(wanted) * 2 > len(parts):  # most of them (the first build): all
                rows = conn.execute(q.LIVE_SITE_SENSORS, params).fetchall()
            elif wanted:
                rows = conn.execute(q.LIVE_SENSORS, {**params, "ids": list(wanted)}).fetchall()
            else:
                rows = []
            for sensor, key, doc in rows:
                at = wanted.get(sensor)
                if at is not None:
                    fresh[sensor] = (key, doc.encode())
                    parts[at] = fresh[sensor][1]
        if len(fresh) != len(wanted):  # one snapshot: it can't, short of a bug
            raise RuntimeError(f"live view: {len(wanted) - len(fresh)} sensors' JSON missing")
        with self._lock:
            self._parts.update(fresh)
            if site is None:  # every sensor was in this build: forget those that are gone
                for gone in self._parts.keys() - {sensor for sensor, _ in keyed}:
                    del self._parts[gone]
        self.asked = len(wanted)
        head = json.dumps({"generated_at": now.isoformat()})[:-1]
        return b"".join(
            (
                f'{head}, "sensors": ['.encode(),
                b", ".join(p for p in parts if p is not None),
                f'], "locations": {places}, "vehicles": {vehicles}}}'.encode(),
            )
        )


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
