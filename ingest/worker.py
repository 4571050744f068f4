"""The ingest worker.

paho's network thread hands each message to this worker's thread through a queue; the worker
collects a batch, writes it in one transaction, and only after COMMIT acknowledges its messages
to the broker, in arrival order. A batch closes when no further message is waiting, when it
holds ``batch_max_readings``, or ``flush_s`` after its first message under a steady stream.
A crash before the commit leaves the messages unacknowledged, so the broker redelivers them
(persistent session), and the (sensor, seq) key makes a second delivery a no-op.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
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
from coldtrail.ingest.store import Envelope, Outcome, Store
from coldtrail.ingest.trust import Rule
from coldtrail.messages import MAX_PAYLOAD_BYTES, parse_telemetry_docs, telemetry_filter
from coldtrail.retry import Backoff, retry_call

log = logging.getLogger(__name__)


PARTITION_CHECK_S = 6 * 3600.0
"""How often a worker makes sure the months ahead have their partitions (they are made three
months ahead, so any one worker doing it now and then is plenty)."""
KEPT_PAYLOAD_BYTES = 64 * 1024
"""How much of a payload over the size limit its dead letter keeps."""


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received: float = 0.0
    """time.monotonic() at arrival."""
    received_us: int = field(default_factory=lambda: time.time_ns() // 1000)
    """The wall-clock time of arrival, in microseconds since 1970 (``readings.received_at``)."""


@dataclass(frozen=True)
class Parsed:
    message: Inbound
    envelope: Envelope

    @property
    def readings(self) -> int:
        return len(self.envelope.readings)


@dataclass
class Batch:
    items: list[Parsed] = field(default_factory=list)
    readings: int = 0
    first_at: float = 0.0

    def add(self, item: Parsed) -> None:
        self.items.append(item)
        self.readings += item.readings


@dataclass
class IngestStats:
    messages: int = 0
    readings_stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    quarantined: int = 0
    """Readings kept aside, whatever the rule (``kept_aside`` has them by rule)."""
    kept_aside: Counter[Rule] = field(default_factory=Counter)
    batches: int = 0
    suspects: int = 0
    """Readings whose (sensor, seq) was stored already, looked up to tell a duplicate from a
    conflicting resend."""
    callback_errors: int = 0
    """Exceptions caught on paho's thread (each message's became a dead letter)."""
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
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        metrics_bind: tuple[str, int] | None = None,
    ) -> None:
        self._url = database_url
        self._options = options
        self._client_id = client_id
        self._filter = telemetry_filter(topic_root)
        self._subscription = f"$share/{share_group}/{self._filter}" if share_group else self._filter
        self._batch_max = batch_max_readings
        self._flush_s = flush_s
        self._max_payload = max_payload_bytes
        self._store = Store(max_future_s=max_future_s)
        # Messages are parsed on paho's thread as they arrive, so validation overlaps the
        # database's work on the previous batch.
        self._inbox: queue.SimpleQueue[Parsed] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        self._unreachable = False
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._partitions_due = 0.0
        self.stats = IngestStats()
        self.metrics = IngestMetrics()
        self._metrics_bind = metrics_bind
        self.metrics.inbox.set_function(self._inbox.qsize)

    @property
    def subscribed(self) -> threading.Event:
        """Set once the broker has granted the subscription."""
        return self._subscribed

    # paho thread: nothing raised here may reach paho, whose network thread it would end.
    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        try:
            if rc.is_failure:
                log.error("broker refused ingest %s: %s", self._client_id, rc)
                return
            if self._unreachable:
                self._unreachable = False
                log.info("ingest %s reached the broker", self._client_id)
            client.subscribe(self._subscription, qos=1)
        except Exception:
            self.stats.callback_errors += 1
            log.exception("ingest %s could not subscribe after connecting", self._client_id)

    def _on_connect_fail(self, _c: paho.Client, _u: Any) -> None:
        # paho keeps trying on its own: said once, and again when it connects.
        if not self._unreachable:
            self._unreachable = True
            ep = self._options.endpoint
            log.warning(
                "ingest %s cannot reach the broker at %s:%d; trying again",
                self._client_id,
                ep.host,
                ep.port,
            )

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("broker refused subscription %s: %s", self._subscription, rcs)
        else:
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # the broker checks topics; this is the last guard
            topic = bytes(msg._topic).decode("utf-8", "backslashreplace")
        inbound = Inbound(topic, bytes(msg.payload), msg.mid, msg.qos, time.monotonic())
        try:
            parsed = self.parse(inbound, self._max_payload)
            # Judged now, while the database works on the batch before; the worker confirms
            # the rules' version at commit.
            parsed.envelope.checked = self._store.check(parsed.envelope)
        except Exception as exc:
            self.stats.callback_errors += 1
            log.exception("ingest could not read a message on %s", topic)
            reason = f"ingest could not read it: {type(exc).__name__}: {exc}"
            parsed = Parsed(inbound, _dead_envelope(inbound, reason))
        # Always handed on, even as a dead letter: a message never acknowledged would hold
        # a place in the broker's in-flight window for good.
        self._inbox.put(parsed)

    # worker thread
    def run(self, stop: threading.Event) -> None:
        client = mqtt.make_client(self._options, self._client_id, persistent=True, manual_ack=True)
        # The callbacks guard themselves; this keeps paho's thread alive should one not.
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
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
                    self.metrics.messages.inc(len(batch.items))
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
    def parse(msg: Inbound, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Parsed:
        """Readings to store and dead letters to keep; never raises on bad input."""
        if len(msg.payload) > max_payload_bytes:
            reason = (
                f"payload of {len(msg.payload)} bytes: the limit is {max_payload_bytes}"
                f" (its first {KEPT_PAYLOAD_BYTES} bytes kept here)"
            )
            return Parsed(msg, _dead_envelope(msg, reason, msg.payload[:KEPT_PAYLOAD_BYTES]))
        try:
            gateway, readings, bad = parse_telemetry_docs(msg.payload)
        except PayloadError as exc:
            return Parsed(msg, _dead_envelope(msg, exc.reason))
        levels = msg.topic.split("/")
        # The subscription's filter makes it {root}/v1/{site}/{gateway}/telemetry.
        if len(levels) != 5:
            return Parsed(msg, _dead_envelope(msg, f"not a telemetry topic: {msg.topic!r}"))
        if levels[3] != gateway:
            reason = f"gateway {gateway!r} does not match topic {levels[3]!r}"
            return Parsed(msg, _dead_envelope(msg, reason))
        dead = [(msg.topic, raw.encode(), reason) for raw, reason in bad]
        return Parsed(
            msg,
            Envelope(
                msg.topic,
                levels[2],
                gateway,
                readings,
                copy_lines(readings, gateway, msg.received_us),
                dead,
            ),
        )

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._partitions_due = 0.0
            self._conn = psycopg.connect(
                self._url, application_name=f"coldtrail-ingest/{self._client_id}"[:63]
            )
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
        try:
            self._count(self._store.write(conn, [item.envelope for item in items]))
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            conn.rollback()
            if len(items) > 1:
                log.warning("batch refused (%s); writing its messages one by one", exc)
                for item in items:
                    self._commit([item])
                return
            # A message that can't be written on its own: keep it, with the reason.
            m = items[0].message
            reason = f"could not be stored: {type(exc).__name__}: {exc}"
            log.exception("message on %s %s", m.topic, reason)
            self._count(self._store.write(conn, [_dead_envelope(m, reason)]))

    def _count(self, out: Outcome) -> None:
        self.stats.batches += 1
        self.stats.readings_stored += out.stored
        self.stats.duplicates += out.duplicates
        self.stats.dead_letters += out.dead
        self.stats.suspects += out.suspects
        kept = sum(out.kept_aside.values())
        self.stats.quarantined += kept
        self.stats.kept_aside.update(out.kept_aside)
        self.metrics.stored.inc(out.stored)
        self.metrics.duplicates.inc(out.duplicates)
        self.metrics.dead_letters.inc(out.dead)
        for rule, n in out.kept_aside.items():
            self.metrics.kept_aside.labels(rule).inc(n)
        if out.dead:
            log.warning("%d dead letters", out.dead)
        if kept:
            log.warning(
                "%d readings kept aside: %s",
                kept,
                ", ".join(f"{n} {rule}" for rule, n in sorted(out.kept_aside.items())),
            )


def _dead_envelope(msg: Inbound, reason: str, payload: bytes | None = None) -> Envelope:
    dead = [(msg.topic, msg.payload if payload is None else payload, reason)]
    return Envelope(msg.topic, "", "", [], [], dead)


def release_quarantine(database_url: str) -> tuple[int, int]:
    """Store the kept-aside readings that pass the rules now (a sensor registered or placed
    since), as ingest batches the rules engine picks up. Returns (released, newly stored): a
    reading that was meanwhile stored by another path counts as released but not stored
    again. Conflicting resends are never released."""
    with psycopg.connect(database_url, application_name="coldtrail-ingest") as conn:
        released, stored = Store().release(conn)
    log.info("released %d kept-aside readings (%d stored)", released, stored)
    return released, stored
