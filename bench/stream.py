"""Push-stream fan-out: 200 Server-Sent-Events clients while gateways publish 1 000 readings/s.

The API runs as ``coldtrail api`` in a process of its own (uvicorn, the real app and its MQTT
hub) on a scratch database, against the local Mosquitto. This process holds the clients (plain
asyncio sockets: a lean reader takes little from the measurement) and the gateways: 50
gateways of 20 sensors, each gateway one message a second, spread evenly, for ``--seconds``.
Each reading's ``ts`` is its wall-clock publish time; its delivery latency is its arrival at a
client minus that, for every reading at every client. Reference: a plain MQTT subscriber in
this process on the same topics, i.e. what the broker alone takes; ratio = our p99 / its p99.

    .venv/bin/python -m bench.stream [--clients 200] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import paho.mqtt.client as paho

from bench._api import Api, running_api
from bench._db import drop_database, make_database
from bench.ingest import MQTT
from coldtrail import mqtt
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.settings import MqttEndpoint

GATEWAYS = 50
ADMIN_PW = "bench-admin-password"


@dataclass
class Arrivals:
    """(latency_s, readings) per frame, and how many readings in all."""

    latency_s: list[float] = field(default_factory=list)
    weight: list[int] = field(default_factory=list)
    readings: int = 0

    def add(self, latency_s: float, n: int) -> None:
        self.latency_s.append(latency_s)
        self.weight.append(n)
        self.readings += n


def _ts_of(frame: bytes | bytearray) -> float:
    """The first reading's ``ts`` (all of a bench message's readings share it)."""
    i = frame.index(b'"ts":"') + 6
    return datetime.fromisoformat(frame[i : frame.index(b'"', i)].decode()).timestamp()


async def sse_client(port: int, token: str, arrivals: Arrivals, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/stream?types=readings HTTP/1.1\r\nHost: bench\r\n"
        b"Accept: text/event-stream\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {head.decode(errors='replace')}")
    buf = b""
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            now = time.time()
            buf += data
            # Chunked framing puts its size lines between whole SSE frames, never inside one:
            # the server writes each chunk as complete frames.
            *frames, buf = buf.split(b"\n\n")
            for f in frames:
                if b"event: readings" in f:
                    arrivals.add(now - _ts_of(f), f.count(b'"sensor":'))
                elif b"event: ready" in f:
                    ready.set()
    finally:
        writer.close()


class Reference:
    """A plain MQTT subscriber: the broker's own delivery time for the same messages."""

    def __init__(self, options: mqtt.MqttOptions, root: str) -> None:
        self.arrivals = Arrivals()
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._client = mqtt.make_client(
            options, f"bench-ref-{uuid.uuid4().hex[:6]}", persistent=False
        )
        self._client.on_connect = lambda c, *_: c.subscribe(f"{root}/v1/+/+/telemetry", qos=1)
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._client.on_message = self._on_message
        mqtt.connect(self._client, options, persistent=False)
        self._client.loop_start()

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        with self._lock:
            self.arrivals.add(now - _ts_of(msg.payload), msg.payload.count(b'"sensor":'))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def gateways(options: mqtt.MqttOptions, root: str, rate: int, seconds: float) -> int:
    """Publishes ``rate`` readings a second as GATEWAYS messages a second; returns how many."""
    per_message = rate // GATEWAYS
    pub = mqtt.make_client(options, f"bench-gw-{uuid.uuid4().hex[:6]}", persistent=False)
    pub.max_inflight_messages_set(1000)
    mqtt.connect(pub, options, persistent=False)
    pub.loop_start()
    sent = 0
    try:
        start = time.monotonic()
        n = 0
        while (t := n / GATEWAYS) < seconds:
            delay = start + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            g = n % GATEWAYS
            now = datetime.now(UTC)
            seq = n // GATEWAYS + 1
            readings = [
                Reading(sensor=f"S{g:02d}{k:03d}", seq=seq, ts=now, temperature_c=5.0)
                for k in range(per_message)
            ]
            topic = telemetry_topic(root, "bench", f"gw{g:02d}")
            last = pub.publish(topic, encode_telemetry(f"gw{g:02d}", now, readings), qos=1)
            sent += per_message
            n += 1
        if n:
            last.wait_for_publish(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
    return sent


def _percentiles(a: Arrivals) -> tuple[float, float, float]:
    lat = np.repeat(np.asarray(a.latency_s), np.asarray(a.weight))
    p50, p99 = np.percentile(lat, [50, 99])
    return float(p50) * 1000, float(p99) * 1000, float(lat.max()) * 1000


@dataclass
class Measured:
    sent: int
    arrivals: list[Arrivals]


async def measure(api: Api, root: str, clients: int, rate: int, seconds: float) -> Measured:
    options = mqtt.MqttOptions(MqttEndpoint.parse(MQTT))
    got = Measured(0, [Arrivals() for _ in range(clients)])
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(sse_client(api.port, api.token, a, r))
        for a, r in zip(got.arrivals, readies, strict=True)
    ]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(r.wait() for r in readies))
        got.sent = await asyncio.to_thread(gateways, options, root, rate, seconds)
        # The last messages are still on their way (the goal is < 1 s): wait for them.
        try:
            async with asyncio.timeout(30):
                # Counting what the client tasks append; there is no event to await.
                while sum(a.readings for a in got.arrivals) < got.sent * clients:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        except TimeoutError:
            pass  # the shortfall is reported as lost
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return got


def run(clients: int, rate: int, seconds: float) -> None:
    name = f"bench_stream_{uuid.uuid4().hex[:6]}"
    url = make_database(name)
    root = f"benchstream{uuid.uuid4().hex[:6]}"
    ref = Reference(mqtt.MqttOptions(MqttEndpoint.parse(MQTT)), root)
    try:
        with running_api(url, MQTT, root) as api:
            ref.subscribed.wait(10)
            got = asyncio.run(measure(api, root, clients, rate, seconds))
    finally:
        ref.close()
        drop_database(name)
    everyone = Arrivals()
    for a in got.arrivals:
        everyone.latency_s += a.latency_s
        everyone.weight += a.weight
        everyone.readings += a.readings
    lost = got.sent * clients - everyone.readings
    p50, p99, worst = _percentiles(everyone)
    _, ref_p99, _ = _percentiles(ref.arrivals)
    print(
        f"{clients} clients, {rate} readings/s for {seconds:.0f} s: {got.sent} readings sent, "
        f"{everyone.readings} delivered ({lost} lost); p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {worst:.1f} ms; plain MQTT subscriber p99 {ref_p99:.1f} ms"
    )
    print(
        f"RESULT name=stream clients={clients} readings_per_s={rate} seconds={seconds:.0f} "
        f"delivered={everyone.readings} lost={lost} "
        f"p50_ms={p50:.1f} p99_ms={p99:.1f} max_ms={worst:.1f} "
        f"reference=mqtt_subscriber reference_p99_ms={ref_p99:.1f} ratio={p99 / ref_p99:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1000, help="readings a second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    run(args.clients, args.rate, args.seconds)


if __name__ == "__main__":
    main()
