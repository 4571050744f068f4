"""The ingest worker.

paho's network thread hands each message to this worker's thread through a queue; the worker
collects a batch, writes it in one transaction, and only after COMMIT acknowledges its messages
to the broker, in arrival order. A batch closes when no further message is waiting, when it
holds ``batch_max_readings``, or ``flush_s`` after its first message under a steady stream.
A crash before the commit leaves the messages unacknowledged, so the broker redelivers them
(persistent session), and the (sensor, seq) key makes a second delivery a no-op.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import start_http_server

from coldtrail import mqtt
from coldtrail.errors import PayloadError, StoreError
from coldtrail.ingest import queries as q
from coldtrail.ingest.copytext import copy_lines
from coldtrail.ingest.metrics import IngestMetrics
from coldtrail.messages import ReadingDoc, parse_telemetry_docs, telemetry_filter
from coldtrail.retry import Backoff, retry_call

log = logging.getLogger(__name__)


PARTITION_CHECK_S = 6 * 3600.0
"""How often a worker makes sure the months ahead have their partitions (they are made three
months ahead, so any one worker doing it now and then is plenty)."""
DeadLetter = tuple[str, bytes, str]  # topic, payload, reason


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float = 0.0
    """time.monotonic() at arrival."""


@dataclass(frozen=True)
class Parsed:
    message: Inbound
    gateway: str
    readings: list[ReadingDoc]
    dead: list[DeadLetter]
    lines: list[str] = field(default_factory=list)
    """Each reading as a COPY line, made on paho's thread while the database works."""


@dataclass
class Batch:
    items: list[Parsed] = field(default_factory=list)
    readings: int = 0
    first_at: float = 0.0

    def add(self, item: Parsed) -> None:
        self.items.append(item)
        self.readings += len(item.readings)


@dataclass
class IngestStats:
    messages: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    quarantined: int = 0
    batches: int = 0
    slow_batches: int = 0
    """Batches that held an already stored reading and went through the merge path."""
    commit_s: float = 0.0
    """Time spent writing and committing batches, retries included."""


class IngestWorker:
    def __init__(
        self,
        *,
        database_url: str,
        options: mqtt.MqttOptions,
        topic_root: str,
        client_id: str,
        share_group: str = "ingest",
        batch_max_readings: int = 5000,
        flush_s: float = 0.2,
        max_future_s: float = 300.0,
        metrics_bind: tuple[str, int] | None = None,
    ) -> None:
        self._url = database_url
        self._options = options
        self._client_id = client_id
        self._filter = telemetry_filter(topic_root)
        self._subscription = f"$share/{share_group}/{self._filter}" if share_group else self._filter
        self._batch_max = batch_max_readings
        self._flush_s = flush_s
        self._max_future = timedelta(seconds=max_future_s)
        # Messages are parsed on paho's thread as they arrive, so validation overlaps the
        # database's work on the previous batch.
        self._inbox: queue.Queue[Parsed] = queue.Queue()
        self._subscribed = threading.Event()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._known: set[str] = set()
        self._partitions_due = 0.0
        self.stats = IngestStats()
        self.metrics = IngestMetrics()
        self._metrics_bind = metrics_bind
        self.metrics.inbox.set_function(self._inbox.qsize)

    @property
    def subscribed(self) -> threading.Event:
        """Set once the broker has granted the subscription."""
        return self._subscribed

    # paho thread
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused ingest %s: %s", self._client_id, rc)
            return
        client.subscribe(self._subscription, qos=1)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("broker refused subscription %s: %s", self._subscription, rcs)
        else:
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        inbound = Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos, time.monotonic())
        self._inbox.put(self.parse(inbound))

    # worker thread
    def run(self, stop: threading.Event) -> None:
        client = mqtt.make_client(self._options, self._client_id, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        metrics_server = None
        if self._metrics_bind is not None:
            host, port = self._metrics_bind
            metrics_server, _ = start_http_server(port, host, registry=self.metrics.registry)
            log.info("ingest metrics on http://%s:%d/metrics", host, metrics_server.server_port)
        try:
            mqtt.connect(client, self._options, persistent=True, background=True)
            client.loop_start()
            log.info("ingest %s subscribing to %s", self._client_id, self._subscription)
            batch = Batch()
            while not stop.is_set():
                try:
                    # Idle: wait for work. Batch open: take only what is already here. Waiting
                    # for more would stall: the broker sends no more than its in-flight window
                    # until this batch is acknowledged.
                    msg = (
                        self._inbox.get(timeout=0.5)
                        if not batch.items
                        else self._inbox.get_nowait()
                    )
                except queue.Empty:
                    msg = None
                if msg is not None:
                    if not batch.items:
                        batch.first_at = time.monotonic()
                    self.stats.messages += 1
                    self.metrics.messages.inc()
                    batch.add(msg)
                due = batch.items and (
                    msg is None
                    or batch.readings >= self._batch_max
                    or time.monotonic() >= batch.first_at + self._flush_s
                )
                if due:
                    began = time.perf_counter()
                    try:
                        self._commit_with_retry(batch.items, stop)
                    except StoreError:
                        if not stop.is_set():
                            raise
                        log.warning(
                            "stopping with %d messages not committed: not acknowledged,"
                            " the broker redelivers them",
                            len(batch.items),
                        )
                        break
                    took = time.perf_counter() - began
                    self.stats.commit_s += took
                    self.metrics.commit_seconds.observe(took)
                    self.metrics.batch_readings.observe(batch.readings)
                    now = time.monotonic()
                    for item in batch.items:
                        client.ack(item.message.mid, item.message.qos)
                        self.metrics.lag_seconds.observe(now - item.message.received)
                    batch = Batch()
            # Whatever is received but not committed stays unacknowledged: redelivered later.
        finally:
            client.disconnect()
            client.loop_stop()
            self.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    @staticmethod
    def parse(msg: Inbound) -> Parsed:
        """Readings to store and dead letters to keep; never raises on bad input."""
        try:
            gateway, readings, bad = parse_telemetry_docs(msg.payload)
        except PayloadError as exc:
            return Parsed(msg, "", [], [(msg.topic, msg.payload, exc.reason)])
        levels = msg.topic.split("/")
        if len(levels) >= 5 and levels[3] != gateway:
            reason = f"gateway {gateway!r} does not match topic {levels[3]!r}"
            return Parsed(msg, "", [], [(msg.topic, msg.payload, reason)])
        dead = [(msg.topic, raw.encode(), reason) for raw, reason in bad]
        return Parsed(msg, gateway, readings, dead, copy_lines(readings, gateway))

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._partitions_due = 0.0
            self._conn = psycopg.connect(
                self._url, application_name=f"coldtrail-ingest/{self._client_id}"[:63]
            )
            self._conn.execute(q.CREATE_STAGE)
            self._conn.commit()
            self._known = set()
        if time.monotonic() >= self._partitions_due:
            created = self._conn.execute(q.ENSURE_PARTITIONS).fetchone()
            self._conn.commit()
            self._partitions_due = time.monotonic() + PARTITION_CHECK_S
            if created and created[0]:
                log.info("created %d monthly partitions of readings", created[0])
        return self._conn

    def _commit_with_retry(self, items: list[Parsed], stop: threading.Event) -> None:
        """Commit, retrying while the database is away; the broker keeps the messages."""

        def attempt() -> None:
            try:
                self._commit(items)
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                raise StoreError(str(exc)) from exc

        retry_call(
            attempt,
            retry_on=(StoreError,),
            what="ingest commit",
            backoff=Backoff(initial_s=0.1, maximum_s=5.0, deadline_s=None),
            should_stop=stop.is_set,
        )

    def _commit(self, items: list[Parsed]) -> None:
        conn = self._connection()
        sorted_ = self._sort(conn, items)
        try:
            self._write(conn, sorted_)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            conn.rollback()
            if len(items) > 1:
                log.warning("batch refused (%s); writing its messages one by one", exc)
                for item in items:
                    self._commit([item])
            else:
                # A message the database refuses on its own: keep it, with the reason.
                m = items[0].message
                reason = f"database refused: {exc}"
                self._write(conn, Sorted(dead=[(m.topic, m.payload, reason)]))

    def _sort(self, conn: psycopg.Connection[tuple[Any, ...]], items: list[Parsed]) -> Sorted:
        """Which readings to store, which to quarantine (sensor not registered: kept whole,
        for release once it is) and which to dead-letter (measured in the future)."""
        if any(r["sensor"] not in self._known for item in items for r in item.readings):
            self._known = {r[0] for r in conn.execute(q.KNOWN_SENSORS)}
            conn.commit()
        horizon = datetime.now(UTC) + self._max_future
        out = Sorted()
        for item in items:
            out.dead.extend(item.dead)
            for r, line in zip(item.readings, item.lines, strict=True):
                if r["ts"] > horizon:
                    reason = f"measured in the future: {r['ts'].isoformat()} is after {horizon}"
                    out.dead.append((item.message.topic, _reading_json(r), reason))
                elif r["sensor"] in self._known:
                    out.lines.append(line)
                else:
                    out.quarantine.append((item.message.topic, item.gateway, r))
        return out

    def _write(self, conn: psycopg.Connection[tuple[Any, ...]], batch: Sorted) -> None:
        stored = offered = 0
        slow = False
        with conn.transaction():
            if batch.lines:
                row = conn.execute(q.NEW_BATCH).fetchone()
                assert row is not None  # noqa: S101 - INSERT ... RETURNING returns a row
                batch_id = row[0]
                data = "".join(batch.lines).encode()
                offered = len(batch.lines)
                try:
                    # The usual case: nothing in the batch is stored yet, and COPY straight
                    # into readings is as fast as the database takes rows.
                    with conn.transaction(), conn.cursor().copy(q.COPY_READINGS) as copy:
                        copy.write(data)
                    stored = offered
                except psycopg.errors.UniqueViolation:
                    # A redelivery or a second worker got there first: the savepoint is
                    # rolled back; the merge skips what is already stored.
                    slow = True
                    with conn.cursor().copy(q.COPY_STAGE) as copy:
                        copy.write(data)
                    merged = conn.execute(q.MERGE_STAGE, {"batch_id": batch_id}).fetchone()
                    stored = merged[0] if merged else 0
                conn.execute(q.UPDATE_LATEST, {"batch_id": batch_id})
                conn.execute(q.FINISH_BATCH, {"n": stored, "batch_id": batch_id})
                if stored:
                    conn.execute(q.NOTIFY_RULES, {"batch_id": batch_id})
            if batch.quarantine:
                conn.cursor().executemany(
                    q.QUARANTINE,
                    [
                        (topic, gateway, r["sensor"], r["seq"], r["ts"], r.get("status", "ok"),
                         r.get("clock", "ok"), r.get("temperature_c"), r.get("humidity_pct"),
                         r.get("battery_pct"), r.get("latitude"), r.get("longitude"),
                         r.get("speed_kmh"), r.get("door_open"),
                         f"unknown sensor {r['sensor']!r}")
                        for topic, gateway, r in batch.quarantine
                    ],
                )  # fmt: skip
            if batch.dead:
                conn.cursor().executemany(q.DEAD_LETTER, batch.dead)
        self.stats.batches += 1
        self.stats.slow_batches += slow
        self.stats.readings_stored += stored
        self.stats.duplicates += offered - stored
        self.stats.dead_letters += len(batch.dead)
        self.stats.quarantined += len(batch.quarantine)
        self.metrics.stored.inc(stored)
        self.metrics.duplicates.inc(offered - stored)
        self.metrics.dead_letters.inc(len(batch.dead))
        self.metrics.quarantined.inc(len(batch.quarantine))
        if batch.dead:
            log.warning("%d dead letters, first: %s", len(batch.dead), batch.dead[0][2])
        if batch.quarantine:
            log.warning(
                "%d readings quarantined, first: unknown sensor %r",
                len(batch.quarantine),
                batch.quarantine[0][2]["sensor"],
            )


@dataclass
class Sorted:
    lines: list[str] = field(default_factory=list)
    """COPY lines of the readings to store."""
    quarantine: list[tuple[str, str, ReadingDoc]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


def _reading_json(r: ReadingDoc) -> bytes:
    return json.dumps(r, default=str).encode()


def release_quarantine(database_url: str) -> tuple[int, int]:
    """Move the quarantined readings of sensors registered since into readings, as one ingest
    batch the rules engine picks up. Returns (released, newly stored): a reading that was
    meanwhile stored by another path counts as released but not stored again."""
    with psycopg.connect(database_url, application_name="coldtrail-ingest") as conn:
        row = conn.execute(q.NEW_BATCH).fetchone()
        assert row is not None  # noqa: S101 - INSERT ... RETURNING returns a row
        batch_id = row[0]
        counts = conn.execute(q.RELEASE_QUARANTINE, {"batch_id": batch_id}).fetchone()
        assert counts is not None  # noqa: S101 - an aggregate returns a row
        released, stored = int(counts[0]), int(counts[1])
        if released == 0:
            conn.rollback()  # no empty batch left behind
            return 0, 0
        conn.execute(q.UPDATE_LATEST, {"batch_id": batch_id})
        conn.execute(q.FINISH_BATCH, {"n": stored, "batch_id": batch_id})
        if stored:
            conn.execute(q.NOTIFY_RULES, {"batch_id": batch_id})
        conn.commit()
    log.info("released %d quarantined readings (%d stored)", released, stored)
    return released, stored
