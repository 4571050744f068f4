"""The push stream: readings, gateway status and ColdTrail's events as Server-Sent Events.

One :class:`StreamHub` per API process subscribes to the broker (account ``coldtrail-api``)
and fans each message out to the connected clients. A message is decoded and laid out as an
SSE frame once, on paho's thread; a client only gets references to the shared bytes.

Each frame has an id ``{stream}-{n}``. The hub keeps the last frames, so a client that
reconnects with ``Last-Event-ID`` gets what it missed; when that is no longer held (or the
API restarted) it gets a ``reset`` frame instead and should reload ``GET /live``. A client
too slow to keep up gets a ``lagged`` frame and is disconnected rather than slowing the
others: it reconnects with its last id and catches up from the kept frames.

The stream shows readings as the broker delivers them, in parallel with ingest: it is the
live view, not the record (a reading appears here before it is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import TypeAdapter

from coldtrail import mqtt
from coldtrail.clock import Clock
from coldtrail.errors import PayloadError, TransportError
from coldtrail.messages import ReadingDoc, json_object, parse_telemetry_docs, rfc3339

log = logging.getLogger(__name__)

EVENT_TYPES = ("alarm", "excursion", "hold", "capa", "lot")
"""The first part of an event's kind (``hold.placed`` -> ``hold``) is its stream type."""
STREAM_TYPES = ("readings", "status", *EVENT_TYPES)
StreamType = Literal["readings", "status", "alarm", "excursion", "hold", "capa", "lot"]

_readings_json = TypeAdapter(list[ReadingDoc])
SHUTDOWN_GRACE_S = 3
"""Push-stream clients never hang up on their own: a stopping server cuts them after this."""


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    type: str
    site: str | None
    gateway: str | None
    wire: bytes
    """The whole SSE frame, id and blank line included."""


@dataclass(frozen=True, slots=True)
class Decoded:
    type: str
    site: str | None
    gateway: str | None
    data: bytes


@dataclass(frozen=True)
class StreamFilter:
    types: frozenset[str] | None = None
    site: str | None = None
    gateway: str | None = None

    def admits(self, frame: Frame) -> bool:
        if frame.type == "feed":
            return True  # the feed's own state reaches everyone: a quiet stream must be explained
        if self.types is not None and frame.type not in self.types:
            return False
        if self.site is not None and frame.site is not None and frame.site != self.site:
            return False
        return not (
            self.gateway is not None and frame.gateway is not None and frame.gateway != self.gateway
        )


@dataclass(eq=False)
class Subscription:
    """One client's frames waiting to be written, and why it must stop, if it must."""

    filter: StreamFilter
    max_pending: int
    pending: deque[Frame] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: Literal["lagged", "shutdown"] | None = None

    def offer(self, frame: Frame) -> bool:
        """Queue a frame; False (and closed) when the client has fallen too far behind."""
        if not self.filter.admits(frame):
            return True
        if len(self.pending) >= self.max_pending:
            self.close("lagged")
            return False
        self.pending.append(frame)
        self.ready.set()
        return True

    def close(self, why: Literal["lagged", "shutdown"]) -> None:
        self.closed = why
        self.ready.set()

    def take(self, at_most: int) -> list[Frame]:
        n = min(at_most, len(self.pending))
        return [self.pending.popleft() for _ in range(n)]


@dataclass(frozen=True)
class Resume:
    replayed: list[Frame]
    reset: str | None
    """Why the missed frames can't be given (the client must reload the live view)."""


class StreamHub:
    def __init__(
        self,
        options: mqtt.MqttOptions,
        topic_root: str,
        clock: Clock,
        *,
        keep: int = 10_000,
        max_pending: int = 5_000,
        client_id: str | None = None,
    ) -> None:
        self._options = options
        self._root = topic_root
        self._clock = clock
        self._client_id = client_id or f"coldtrail-api-{secrets.token_hex(4)}"
        self.stream_id = secrets.token_hex(4)
        """Changes with every start of the API: ids of an earlier run can't be resumed."""
        self._kept: deque[Frame] = deque(maxlen=keep)
        self._max_pending = max_pending
        self._subs: set[Subscription] = set()
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self.connected = False
        self.subscribed = threading.Event()
        """Set once the broker has granted every subscription (tests and benches wait on it)."""
        self.dropped = 0
        """Messages that could not be decoded (ingest dead-letters them; the stream skips)."""

    @property
    def filters(self) -> list[str]:
        base = f"{self._root}/v1"
        return [f"{base}/+/+/telemetry", f"{base}/+/+/status", f"{base}/events/#"]

    @property
    def clients(self) -> int:
        return len(self._subs)

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (the API starts even while the broker is down)."""
        self._loop = asyncio.get_running_loop()
        client = mqtt.make_client(self._options, self._client_id, persistent=False)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        try:
            mqtt.connect(client, self._options, persistent=False, background=True)
        except TransportError:
            log.exception("push stream: broker unreachable; retrying in the background")
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self.connected = False  # our own leaving is not a lost broker
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        for sub in list(self._subs):
            sub.close("shutdown")
        self._subs.clear()

    # -- clients ---------------------------------------------------------------------------

    def subscribe(
        self, flt: StreamFilter, last_event_id: str | None
    ) -> tuple[Subscription, Resume]:
        sub = Subscription(flt, self._max_pending)
        resume = self._resume(flt, last_event_id)
        self._subs.add(sub)
        return sub, resume

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _resume(self, flt: StreamFilter, last_event_id: str | None) -> Resume:
        if not last_event_id:
            return Resume([], None)
        stream, _, n = last_event_id.partition("-")
        if stream != self.stream_id or not n.isdigit():
            return Resume([], "the API restarted since that event; reload the live view")
        last = int(n)
        if last > self._seq:
            return Resume([], "that event id was never sent; reload the live view")
        oldest = self._kept[0].seq if self._kept else self._seq + 1
        if last + 1 < oldest:
            return Resume([], "events since then are no longer kept; reload the live view")
        return Resume([f for f in self._kept if f.seq > last and flt.admits(f)], None)

    # -- paho thread -----------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("push stream: broker refused %s: %s", self._client_id, rc)
            return
        client.subscribe([(f, 1) for f in self.filters])
        self.connected = True
        self._to_loop([self._feed()])

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any
    ) -> None:
        if any(rc.is_failure for rc in rcs):
            log.error("push stream: broker refused subscriptions %s: %s", self.filters, rcs)
        else:
            self.subscribed.set()

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.subscribed.clear()
        if self.connected:
            log.warning("push stream: lost the broker (%s); reconnecting", rc)
            self.connected = False
            self._to_loop([self._feed()])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            decoded = decode(self._root, msg.topic, bytes(msg.payload))
        except PayloadError as exc:
            self.dropped += 1
            log.debug("push stream: skipped %s: %s", msg.topic, exc)
            return
        if decoded is not None:
            self._to_loop([decoded])

    def _feed(self) -> Decoded:
        """The broker state as a ``feed`` frame."""
        state = "connected" if self.connected else "disconnected"
        data = json.dumps({"mqtt": state, "at": rfc3339(self._clock.now())}).encode()
        return Decoded("feed", None, None, data)

    def _to_loop(self, items: list[Decoded]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed between the check and the call (the API stops).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, items)

    # -- event loop ------------------------------------------------------------------------

    def _dispatch(self, items: Iterable[Decoded]) -> None:
        for d in items:
            self._seq += 1
            wire = b"".join(
                (
                    b"id: ",
                    f"{self.stream_id}-{self._seq}".encode(),
                    b"\nevent: ",
                    d.type.encode(),
                    b"\ndata: ",
                    d.data,
                    b"\n\n",
                )
            )
            frame = Frame(self._seq, d.type, d.site, d.gateway, wire)
            self._kept.append(frame)
            lagging = [s for s in self._subs if not s.offer(frame)]
            for s in lagging:
                self._subs.discard(s)


def decode(root: str, topic: str, payload: bytes) -> Decoded | None:
    """A broker message as a stream frame's type and data; None for a topic not streamed.
    Raises :class:`PayloadError` for a payload that can't be read."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != root or parts[1] != "v1":
        return None
    if parts[2] == "events":
        doc = json_object(payload)
        return Decoded(parts[3], None, None, _compact(doc))
    if len(parts) != 5:
        return None
    site, gateway, leaf = parts[2], parts[3], parts[4]
    if leaf == "telemetry":
        _, readings, _ = parse_telemetry_docs(payload)
        if not readings:
            raise PayloadError("no valid reading in the message")
        head = json.dumps({"site": site, "gateway": gateway}, separators=(",", ":")).encode()
        return Decoded(
            "readings",
            site,
            gateway,
            head[:-1] + b',"readings":' + _readings_json.dump_json(readings) + b"}",
        )
    if leaf == "status":
        doc = json_object(payload)
        if doc.get("state") not in ("online", "offline"):
            raise PayloadError("status without an online/offline state")
        return Decoded("status", site, gateway, _compact({"site": site, "gateway": gateway, **doc}))
    return None


def _compact(doc: dict[str, Any]) -> bytes:
    # One line: an SSE data field ends at a newline.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def control(event: str, doc: dict[str, Any]) -> bytes:
    """A frame without an id (ready, reset, lagged, expired, revoked): it is not in the kept
    history."""
    return b"event: " + event.encode() + b"\ndata: " + _compact(doc) + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


async def frames(
    hub: StreamHub,
    sub: Subscription,
    resume: Resume,
    *,
    clock: Clock,
    expires_at: datetime,
    keepalive_s: float,
    max_events: int | None,
    still_valid: Callable[[], Awaitable[bool]] | None = None,
    batch: int = 256,
) -> AsyncIterator[bytes]:
    """What one client is sent, until it goes, falls behind, its token expires or is revoked
    (``still_valid``, asked at most every ``keepalive_s``: a password change or a disabled
    account ends the stream within that), or ``max_events`` frames (``ready`` included) have
    gone out."""
    sent = 0
    loop = asyncio.get_running_loop()
    next_check = loop.time() + keepalive_s

    def budget() -> int:
        return batch if max_events is None else min(batch, max_events - sent)

    try:
        hello = {
            "stream": hub.stream_id,
            "mqtt": "connected" if hub.connected else "disconnected",
            "replayed": len(resume.replayed),
            "token_expires_at": rfc3339(expires_at),
        }
        first = [control("ready", hello)]
        if resume.reset is not None:
            first.append(control("reset", {"reason": resume.reset}))
        yield b"".join(first)
        sent += 1
        backlog = deque(resume.replayed)
        while max_events is None or sent < max_events:
            if clock.now() >= expires_at:
                yield control("expired", {"reason": "the token expired; sign in and reconnect"})
                return
            if still_valid is not None and loop.time() >= next_check:
                if not await still_valid():
                    reason = "the token was revoked (a password change, a disabled account, "
                    yield control("revoked", {"reason": reason + "or a sign-out everywhere)"})
                    return
                next_check = loop.time() + keepalive_s
            if backlog:
                chunk = [backlog.popleft() for _ in range(min(budget(), len(backlog)))]
            else:
                chunk = sub.take(budget())
            if chunk:
                sent += len(chunk)
                yield b"".join(f.wire for f in chunk)
                continue
            if sub.closed is not None:
                reason = (
                    "too far behind: reconnect with Last-Event-ID to catch up"
                    if sub.closed == "lagged"
                    else "the API is stopping"
                )
                yield control(sub.closed, {"reason": reason})
                return
            # Frames arrive from the same loop, so nothing lands between take() and clear().
            sub.ready.clear()
            try:
                async with asyncio.timeout(keepalive_s):
                    await sub.ready.wait()
            except TimeoutError:
                yield KEEPALIVE
    finally:
        hub.unsubscribe(sub)


CONTROL_TYPES = ("feed", "ready", "reset", "lagged", "expired", "revoked")
"""What every stream gets, whatever it asks for: naming them in ``types`` is allowed."""


def parse_types(text: str | None) -> frozenset[str] | None:
    if not text:
        return None
    named = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(named - set(STREAM_TYPES) - set(CONTROL_TYPES))
    if unknown:
        raise ValueError(
            f"unknown stream types {unknown}; known: {', '.join(STREAM_TYPES + CONTROL_TYPES)}"
        )
    return named & frozenset(STREAM_TYPES)  # only control events asked for: no data events
