"""Building paho-mqtt 2.x clients the same way in every stage."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from coldtrail.errors import TransportError
from coldtrail.settings import MqttEndpoint, MqttProtocol

# How long the broker keeps a persistent session (and the QoS 1 messages queued for it)
# while its client is away: long enough for a restart, a deploy, a night offline.
SESSION_EXPIRY_S = 7 * 24 * 3600


@dataclass(frozen=True)
class MqttOptions:
    endpoint: MqttEndpoint
    protocol: MqttProtocol = "5"
    keepalive_s: int = 30
    ca_file: Path | None = None
    """Trust this CA (PEM) for ``mqtts://`` instead of the system's, e.g. a private CA."""


def make_client(
    options: MqttOptions,
    client_id: str,
    *,
    persistent: bool,
    manual_ack: bool = False,
) -> paho.Client:
    """A client that still needs ``connect``; ``persistent`` keeps the session across reconnects."""
    v5 = options.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    ep = options.endpoint
    if ep.username is not None:
        client.username_pw_set(ep.username, ep.password)
    if ep.tls:
        client.tls_set_context(ssl.create_default_context(cafile=options.ca_file))
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect(
    client: paho.Client, options: MqttOptions, *, persistent: bool, background: bool = False
) -> None:
    """Connect; the caller starts the network loop. ``background`` returns at once and lets
    the loop connect (and keep retrying) on its own, for clients that start before the broker."""
    ep = options.endpoint
    kwargs: dict[str, object] = {"keepalive": options.keepalive_s}
    if options.protocol == "5":
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if persistent:
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        kwargs["clean_start"] = not persistent
        kwargs["properties"] = props
    try:
        if background:
            client.connect_async(ep.host, ep.port, **kwargs)  # type: ignore[arg-type]
        else:
            client.connect(ep.host, ep.port, **kwargs)  # type: ignore[arg-type]
    except OSError as exc:
        raise TransportError(f"cannot reach MQTT broker {ep.host}:{ep.port}: {exc}") from exc
