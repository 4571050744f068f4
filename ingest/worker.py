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
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.reasoncodes import ReasonCode

from coldtrail import mqtt
from coldtrail.errors import PayloadError, StoreError
from coldtrail.ingest import queries as q
from coldtrail.messages import Reading, parse_telemetry, telemetry_filter
from coldtrail.retry import Backoff, retry_call

log = logging.getLogger(__name__)


Row = tuple[Any, ...]
DeadLetter = tuple[str, bytes, str]  # topic, payload, reason


@dataclass(frozen=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True)
class Parsed:
    message: Inbound
    gateway: str
    readings: list[Reading]
    dead: list[DeadLetter]


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
    batches: int = 0


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
    ) -> None:
        self._url = database_url
        self._options = options
        self._client_id = client_id
        self._filter = telemetry_filter(topic_root)
        self._subscription = f"$share/{share_group}/{self._filter}" if share_group else self._filter
        self._batch_max = batch_max_readings
        self._flush_s = flush_s
        self._inbox: queue.Queue[Inbound] = queue.Queue()
        self._subscribed = threading.Event()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._known: set[str] = set()
        self.stats = IngestStats()

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
        self._inbox.put(Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    # worker thread
    def run(self, stop: threading.Event) -> None:
        client = mqtt.make_client(self._options, self._client_id, persistent=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        mqtt.connect(client, self._options, persistent=True, background=True)
        client.loop_start()
        log.info("ingest %s subscribing to %s", self._client_id, self._subscription)
        try:
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
                    batch.add(self.parse(msg))
                due = batch.items and (
                    msg is None
                    or batch.readings >= self._batch_max
                    or time.monotonic() >= batch.first_at + self._flush_s
                )
                if due:
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
                    for item in batch.items:
                        client.ack(item.message.mid, item.message.qos)
                    batch = Batch()
            # Whatever is received but not committed stays unacknowledged: redelivered later.
        finally:
            client.disconnect()
            client.loop_stop()
            if self._conn is not None:
                self._conn.close()

    @staticmethod
    def parse(msg: Inbound) -> Parsed:
        """Readings to store and dead letters to keep; never raises on bad input."""
        try:
            envelope, readings, bad = parse_telemetry(msg.payload)
        except PayloadError as exc:
            return Parsed(msg, "", [], [(msg.topic, msg.payload, exc.reason)])
        levels = msg.topic.split("/")
        if len(levels) >= 5 and levels[3] != envelope.gateway:
            reason = f"gateway {envelope.gateway!r} does not match topic {levels[3]!r}"
            return Parsed(msg, "", [], [(msg.topic, msg.payload, reason)])
        dead = [(msg.topic, raw.encode(), reason) for raw, reason in bad]
        return Parsed(msg, envelope.gateway, readings, dead)

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._url, application_name="coldtrail-ingest")
            self._conn.execute(q.CREATE_STAGE)
            self._conn.commit()
            self._known = set()
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
        rows, dead = self._split_unknown(conn, items)
        try:
            self._write(conn, rows, dead)
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
                self._write(conn, [], [(m.topic, m.payload, f"database refused: {exc}")])

    def _split_unknown(
        self, conn: psycopg.Connection[tuple[Any, ...]], items: list[Parsed]
    ) -> tuple[list[Row], list[DeadLetter]]:
        """Rows to store, and every dead letter: readings of sensors that are not registered
        are kept there, not dropped."""
        if any(r.sensor not in self._known for item in items for r in item.readings):
            self._known = {r[0] for r in conn.execute(q.KNOWN_SENSORS)}
            conn.commit()
        rows: list[Row] = []
        dead: list[DeadLetter] = []
        for item in items:
            dead.extend(item.dead)
            for r in item.readings:
                if r.sensor in self._known:
                    rows.append(
                        (
                            r.sensor,
                            r.seq,
                            r.ts,
                            item.gateway,
                            r.status.value,
                            r.clock.value,
                            r.temperature_c,
                            r.humidity_pct,
                            r.battery_pct,
                        )
                    )
                else:
                    reason = f"unknown sensor {r.sensor!r}"
                    dead.append((item.message.topic, r.model_dump_json().encode(), reason))
        return rows, dead

    def _write(
        self, conn: psycopg.Connection[tuple[Any, ...]], rows: list[Row], dead: list[DeadLetter]
    ) -> None:
        with conn.transaction():
            stored = 0
            if rows:
                batch_id = conn.execute(q.NEW_BATCH).fetchone()[0]  # type: ignore[index]
                with conn.cursor().copy(q.COPY_STAGE) as copy:
                    for row in rows:
                        copy.write_row(row)
                stored = conn.execute(q.MERGE_STAGE, {"batch_id": batch_id}).fetchone()[0]  # type: ignore[index]
                conn.execute(q.FINISH_BATCH, {"n": stored, "batch_id": batch_id})
                if stored:
                    conn.execute(q.NOTIFY_RULES, {"batch_id": batch_id})
            if dead:
                conn.cursor().executemany(q.DEAD_LETTER, dead)
        self.stats.batches += 1
        self.stats.readings_stored += stored
        self.stats.duplicates += len(rows) - stored
        self.stats.dead_letters += len(dead)
        if dead:
            log.warning("%d dead letters, first: %s", len(dead), dead[0][2])
