"""Events to other systems (an ERP, a ticketing tool, SMS gateways): written in the same
transaction as the change they report, then delivered at least once to each destination.

An event is a CloudEvents 1.0 document (JSON, structured mode); its ``id`` is the
idempotency key a receiver deduplicates by. Destinations are rows of ``outbox_destinations``
and name a sink registered in SINKS. Per destination, events go out in the order they were
written: a failing delivery holds back the later ones until it succeeds or is given up
(dead) after ``dead_after``, so a receiver never sees a release before its hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, get_args
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from psycopg.types.json import Jsonb

from coldtrail.clock import Clock, SystemClock
from coldtrail.erp import queries as q
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import (
    ColdTrailError,
    ConfigError,
    NotFound,
    RuleViolation,
    StoreError,
    TransportError,
)
from coldtrail.mqtt import MqttOptions, connect, make_client
from coldtrail.redact import redact_text, redact_url, split_password
from coldtrail.retry import Backoff, retry_call
from coldtrail.settings import TOPIC_ROOT_PATTERN, MqttEndpoint, MqttProtocol

log = logging.getLogger(__name__)
CHANNEL = "coldtrail_outbox"
SOURCE = "urn:coldtrail"
EVENT_TOPIC_ROOT = "coldtrail/v1/events"
"""Where events go by default; a destination URL with a path (``mqtt://host/fleet2``) puts them
under that topic root instead (``fleet2/v1/events``), as ``COLDTRAIL_MQTT_TOPIC_ROOT`` does for
telemetry."""
# 5 s, 10 s, 20 s ... up to an hour between tries, with jitter; dead_after ends it.
RETRY_BACKOFF = Backoff(initial_s=5.0, maximum_s=3600.0, deadline_s=None)


class DeliveryError(ColdTrailError):
    """A destination did not take an event; it will be tried again. ``delivered``: how many
    of the events handed over before it went through."""

    def __init__(self, message: str, *, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    url: str
    secret: str | None = None
    kinds: tuple[str, ...] | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Event:
    seq: int
    event_id: uuid.UUID
    kind: str
    subject: str
    payload: dict[str, Any]
    occurred_at: datetime

    def document(self) -> dict[str, Any]:
        """The CloudEvents 1.0 structured form, as sent."""
        return {
            "specversion": "1.0",
            "id": str(self.event_id),
            "source": SOURCE,
            "type": f"coldtrail.{self.kind}",
            "subject": self.subject,
            "time": self.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "sequence": self.seq,
            "data": self.payload,
        }

    def body(self) -> bytes:
        return json.dumps(self.document(), separators=(",", ":"), sort_keys=True).encode()


def emit(
    conn: Conn, kind: str, subject: str, payload: dict[str, Any], occurred_at: datetime
) -> uuid.UUID:
    """Write an event in the caller's transaction: it leaves only if that transaction commits."""
    row = conn.execute(
        q.EMIT_EVENT,
        {"kind": kind, "subject": subject, "payload": Jsonb(payload), "at": occurred_at},
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return uuid.UUID(str(row[0]))


class Sink(Protocol):
    """Delivers events to one destination in order: all of them, or DeliveryError saying
    how many of the first went through (those need not be sent again)."""

    def deliver(self, events: Sequence[Event]) -> None: ...

    def close(self) -> None: ...


SinkFactory = Callable[[Destination, Clock], Sink]


def sign_webhook(secret: str, timestamp: int, body: bytes) -> str:
    """The X-ColdTrail-Signature header: ``t=<unix time>,v1=<hex HMAC-SHA256 of "t." + body>``.

    The time inside the signed bytes lets a receiver refuse a replay of an old request."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_webhook(
    secret: str, header: str, body: bytes, now: datetime, tolerance_s: int = 300
) -> bool:
    """What a receiver does with the header: right key, right body, recent enough."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now.timestamp() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign_webhook(secret, timestamp, body), header)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """urllib follows a 301, 302 or 303 answer to a POST with a GET that carries no event, and
    its 2xx would pass for delivery. A redirect stays an answer for the admin: fix the URL."""

    def redirect_request(self, *_: Any) -> None:
        return None


class WebhookSink:
    """HTTP POST of the event; any 2xx is taken as delivered, a redirect is not followed."""

    def __init__(self, destination: Destination, clock: Clock, timeout_s: float = 10.0) -> None:
        if not destination.url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook {destination.name}: URL must be http(s): {destination.url}")
        self._dest = destination
        self._clock = clock
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._timeout_s = timeout_s

    def deliver(self, events: Sequence[Event]) -> None:
        for n, event in enumerate(events):
            try:
                self._post(event)
            except DeliveryError as exc:
                exc.delivered = n
                raise

    def _post(self, event: Event) -> None:
        body = event.body()
        headers = {
            "Content-Type": "application/cloudevents+json",
            "Idempotency-Key": str(event.event_id),
            "X-ColdTrail-Event": event.kind,
        }
        if self._dest.secret:
            stamp = int(self._clock.now().timestamp())
            headers["X-ColdTrail-Signature"] = sign_webhook(self._dest.secret, stamp, body)
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._dest.url, data=body, headers=headers, method="POST"
        )
        try:
            with self._opener.open(request, timeout=self._timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            # The receiver's body is not kept: it may echo what it was sent, or its own
            # secrets, into the log and the stored error.
            with exc:  # an HTTPError holds the response's socket open until closed
                exc.read(200)
            shown = redact_url(self._dest.url)
            if 300 <= exc.code < 400:
                where = redact_url(str(exc.headers.get("Location")))
                raise DeliveryError(
                    f"HTTP {exc.code} from {shown}: redirected to {where}, not followed"
                ) from exc
            raise DeliveryError(f"HTTP {exc.code} from {shown}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = redact_text(str(exc), self._dest.url)
            raise DeliveryError(f"{redact_url(self._dest.url)} unreachable: {reason}") from exc

    def close(self) -> None:
        return None


MQTT_PROTOCOLS: dict[str, MqttProtocol] = {p: p for p in get_args(MqttProtocol)}


def _published(info: paho.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged it; paho raises, rather than answering no, for a
    message it could not send (not connected)."""
    try:
        return info.is_published()
    except RuntimeError:
        return False


class MqttSink:
    """QoS 1 publish to ``coldtrail/v1/events/<kind, dots as slashes>``; delivered on PUBACK.

    MQTT 5 unless the URL says ``?protocol=3.1.1`` (a broker without MQTT 5). MQTT 5 is the
    default because its PUBACK carries a reason code: a broker that refuses the publish (its
    ACL) says so, and the event is not delivered; a 3.1.1 broker acknowledges and drops it.
    """

    def __init__(self, destination: Destination, clock: Clock, timeout_s: float = 10.0) -> None:
        parts = urlsplit(destination.url)
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"protocol"})
        if unknown:
            raise ConfigError(
                f"MQTT destination URL: unknown parameters {unknown}; known: protocol"
            )
        asked = query.get("protocol", ["5"])
        protocol = MQTT_PROTOCOLS.get(asked[-1]) if len(asked) == 1 else None
        if protocol is None:
            raise ConfigError(
                f"MQTT destination URL: protocol must be one of {sorted(MQTT_PROTOCOLS)}, "
                f"got {asked}"
            )
        endpoint = MqttEndpoint.parse(destination.url)
        if endpoint.password is None and destination.secret:
            # The broker password lives in the destination's secret, not in its URL (which is
            # audited and shown).
            endpoint = dataclasses.replace(endpoint, password=destination.secret)
        self._options = MqttOptions(endpoint, protocol=protocol)
        root = parts.path.strip("/")
        if root and not re.fullmatch(TOPIC_ROOT_PATTERN, root):
            raise ConfigError(f"MQTT destination topic root {root!r} is not a plain topic level")
        self._topics = f"{root}/v1/events" if root else EVENT_TOPIC_ROOT
        self._client = make_client(
            self._options,
            f"coldtrail-outbox-{destination.name}-{uuid.uuid4().hex[:8]}",
            persistent=False,
        )
        self._timeout_s = timeout_s
        self._started = False
        self._refused: dict[int, str] = {}  # message id -> the broker's reason
        self._client.on_publish = self._on_publish

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        # paho runs this before it marks the message published: read after the wait.
        if reason.is_failure:
            self._refused[mid] = str(reason)

    def deliver(self, events: Sequence[Event]) -> None:
        # All published at once and the PUBACKs awaited after: one round trip for a batch.
        sent: list[paho.MQTTMessageInfo] = []
        try:
            if not self._started:
                connect(self._client, self._options, persistent=False)
                self._client.loop_start()
                self._started = True
            for event in events:
                topic = f"{self._topics}/{event.kind.replace('.', '/')}"
                sent.append(self._client.publish(topic, event.body(), qos=1))
            deadline = time.monotonic() + self._timeout_s
            for n, info in enumerate(sent):
                info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
                if not _published(info):
                    raise DeliveryError(f"no PUBACK within {self._timeout_s} s", delivered=n)
                refused = self._refused.pop(info.mid, None)
                if refused is not None:
                    raise DeliveryError(f"the broker refused it: {refused}", delivered=n)
        except (TransportError, RuntimeError, ValueError, OSError) as exc:
            done = next(
                (n for n, i in enumerate(sent) if not _published(i) or i.mid in self._refused),
                len(sent),
            )
            raise DeliveryError(f"MQTT publish failed: {exc}", delivered=done) from exc
        finally:
            self._refused.clear()  # what is not delivered now is sent again, with new ids

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()


class FileSink:
    """Appends each event as one line of JSON to a file (``file:///abs/path.jsonl``), flushed
    to disk before it counts as delivered: for anchors kept on a WORM mount or a disk another
    organisation copies. The file must lie under ``COLDTRAIL_OUTBOX_FILE_DIR``, so whoever
    may add destinations can't have the outbox write anywhere else."""

    def __init__(self, destination: Destination, clock: Clock) -> None:
        from pathlib import Path

        from coldtrail.settings import Settings

        parts = urlsplit(destination.url)
        if parts.scheme != "file" or parts.netloc or not parts.path.startswith("/"):
            raise ConfigError(
                f"file destination {destination.name}: URL must be file:///absolute/path"
            )
        root = Settings().outbox_file_dir
        path = Path(parts.path).resolve()
        if root is None or not path.is_relative_to(root.resolve()):
            raise ConfigError(
                f"file destination {destination.name}: {path} is not under "
                f"COLDTRAIL_OUTBOX_FILE_DIR ({root or 'not set'})"
            )
        self._path = path
        self._clock = clock

    def deliver(self, events: Sequence[Event]) -> None:
        try:
            with self._path.open("ab") as f:
                for event in events:
                    f.write(event.body() + b"\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise DeliveryError(f"{self._path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        return None


SINKS: dict[str, SinkFactory] = {
    "webhook": WebhookSink,
    "mqtt": MqttSink,
    "file": FileSink,
}


def add_destination(conn: Conn, actor: str, dest: Destination) -> Destination:
    url, password = split_password(dest.url)
    if password is not None:
        # A password in the URL goes to the secret: the URL is audited and shown, the
        # secret is neither.
        if dest.secret and dest.secret != password:
            raise RuleViolation("give the password once: in the URL or as the secret, not both")
        dest = dataclasses.replace(dest, url=url, secret=password)
    factory = SINKS.get(dest.kind)
    if factory is None:
        raise RuleViolation(f"unknown destination kind {dest.kind!r}; known: {sorted(SINKS)}")
    try:
        factory(dest, SystemClock()).close()  # builds no connection: checks the URL
    except ConfigError as exc:
        raise RuleViolation(str(exc)) from exc
    with acting(conn, actor):
        conn.execute(
            q.UPSERT_DESTINATION,
            {
                "name": dest.name,
                "kind": dest.kind,
                "url": dest.url,
                "secret": dest.secret,
                "kinds": list(dest.kinds) if dest.kinds is not None else None,
                "enabled": dest.enabled,
            },
        )
    return dest


def list_destinations(conn: Conn) -> list[Destination]:
    return [
        Destination(name, kind, url, secret, tuple(kinds) if kinds is not None else None, on)
        for name, kind, url, secret, kinds, on in conn.execute(q.DESTINATIONS)
    ]


@dataclass(frozen=True)
class DeadDelivery:
    destination: str
    event_id: uuid.UUID
    kind: str
    attempts: int
    dead_at: datetime
    last_error: str | None


def dead_deliveries(conn: Conn, limit: int = 100) -> list[DeadDelivery]:
    return [DeadDelivery(*r) for r in conn.execute(q.DEAD_DELIVERIES, {"limit": limit})]


def retry_dead(
    conn: Conn, actor: str, destination: str, event_id: uuid.UUID, now: datetime
) -> None:
    """Put a dead delivery back in line, after its receiver was mended."""
    with acting(conn, actor):
        row = conn.execute(
            q.RETRY_DEAD, {"dest": destination, "event": event_id, "now": now}
        ).fetchone()
        if row is None:
            raise NotFound(f"no dead delivery of event {event_id} to {destination}")


@dataclass
class DispatchStats:
    delivered: int = 0
    failed: int = 0
    dead: int = 0


class OutboxDispatcher:
    """Delivers pending events; any number may run, each destination is served by one at a time."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Clock | None = None,
        sinks: dict[str, SinkFactory] | None = None,
        backoff: Backoff = RETRY_BACKOFF,
        dead_after: timedelta = timedelta(days=3),
        batch: int = 200,
        periodic: Sequence[Callable[[Conn, datetime], object]] = (),
    ) -> None:
        """``periodic``: work done before each round of deliveries, with the time (the
        anchors of the chains' heads, which go out through this outbox)."""
        self._periodic = periodic
        self._url = database_url
        self._batch = batch
        self._clock = clock or SystemClock()
        self._factories = sinks if sinks is not None else SINKS
        self._backoff = backoff
        self._dead_after = dead_after
        self._sinks: dict[str, tuple[Destination, Sink]] = {}
        self.stats = DispatchStats()

    def run_once(self, conn: Conn) -> int:
        """Deliver everything due now; returns how many deliveries succeeded."""
        delivered = 0
        for dest in list_destinations(conn):
            if dest.enabled:
                delivered += self._drain(conn, dest)
        return delivered

    def _drain(self, conn: Conn, dest: Destination) -> int:
        delivered = 0
        while True:
            with conn.transaction():
                if conn.execute(q.LOCK_DESTINATION, {"name": dest.name}).fetchone() is None:
                    return delivered  # another dispatcher serves it now
                now = self._clock.now()
                rows = conn.execute(
                    q.NEXT_DELIVERIES, {"dest": dest.name, "limit": self._batch}
                ).fetchall()
                # In order, up to the first one whose retry is not due yet.
                due = rows[: next((i for i, r in enumerate(rows) if r[0] > now), len(rows))]
                if not due:
                    return delivered
                events = [Event(*fields) for _, _, _, *fields in due]
                failure: str | None = None
                went = len(events)
                try:
                    self._sink(dest).deliver(events)
                except DeliveryError as exc:
                    failure, went = str(exc), min(exc.delivered, len(events))
                except ConfigError as exc:
                    failure, went = str(exc), 0
                if went:
                    conn.execute(
                        q.DELIVERED,
                        {"dest": dest.name, "events": [e.seq for e in events[:went]], "now": now},
                    )
                    delivered += went
                    self.stats.delivered += went
                if failure is None:
                    continue
                _, attempts, occurred_at, *_ = due[went]
                event = events[went]
                self._failed(conn, dest, event, attempts + 1, occurred_at, now, failure)
                if (
                    conn.execute(
                        q.DELIVERY_DEAD, {"dest": dest.name, "event": event.seq}
                    ).fetchone()
                    is None
                ):
                    return delivered
                # given up on: the next event may go

    def _failed(
        self,
        conn: Conn,
        dest: Destination,
        event: Event,
        attempts: int,
        occurred_at: datetime,
        now: datetime,
        error: str,
    ) -> None:
        self.stats.failed += 1
        dead = now - occurred_at >= self._dead_after
        if attempts == 1 or dead:
            log.warning(
                "event %s (%s) to %s failed%s: %s",
                event.event_id,
                event.kind,
                dest.name,
                ", given up" if dead else ", will retry",
                error,
            )
        if dead:
            self.stats.dead += 1
        conn.execute(
            q.DELIVERY_FAILED,
            {
                "dest": dest.name,
                "event": event.seq,
                "attempts": attempts,
                "next": now + timedelta(seconds=self._backoff.delay(attempts)),
                "dead": now if dead else None,
                "error": error[:2000],
            },
        )

    def _sink(self, dest: Destination) -> Sink:
        known = self._sinks.get(dest.name)
        if known is not None and known[0] == dest:
            return known[1]
        if known is not None:
            known[1].close()  # the destination was edited: build its sink again
        factory = self._factories.get(dest.kind)
        if factory is None:
            raise ConfigError(f"destination {dest.name}: no sink named {dest.kind!r}")
        sink = factory(dest, self._clock)
        self._sinks[dest.name] = (dest, sink)
        return sink

    def close(self) -> None:
        for _, sink in self._sinks.values():
            sink.close()
        self._sinks.clear()

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Deliver as events are written until ``stop`` is set; reconnects by itself."""
        try:
            retry_call(
                lambda: self._session(stop, poll_s),
                retry_on=(StoreError,),
                what="outbox",
                backoff=Backoff(initial_s=0.5, maximum_s=10.0, deadline_s=None),
                should_stop=stop.is_set,
            )
        finally:
            self.close()

    def _session(self, stop: threading.Event, poll_s: float) -> None:
        try:
            with (
                psycopg.connect(
                    self._url, autocommit=True, application_name="coldtrail-outbox"
                ) as listener,
                psycopg.connect(
                    self._url, autocommit=True, application_name="coldtrail-outbox"
                ) as conn,
            ):
                listener.execute(f"LISTEN {CHANNEL}")
                while not stop.is_set():
                    for work in self._periodic:
                        work(conn, self._clock.now())
                    self.run_once(conn)
                    # Retries come due with time, not with a notification: poll as well.
                    for _ in listener.notifies(timeout=poll_s, stop_after=1):
                        pass
        except psycopg.OperationalError as exc:
            raise StoreError(f"outbox lost the database: {exc}") from exc
