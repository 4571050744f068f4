"""Changes to a running broker's accounts, through its dynamic-security plugin.

``coldtrail gateways add / rotate / disable / enable / move`` send their change here when an
admin account is set up (``COLDTRAIL_MQTT_ADMIN_PASSWORD``), so it takes effect at once: a
stolen gateway is shut out the moment it is disabled, without restarting the broker. The
plugin answers each command on its response topic, and writes the change to its file.
"""

from __future__ import annotations

import json
import queue
import uuid
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from coldtrail import mqtt
from coldtrail.deploy.mosquitto import (
    CONTROL_TOPIC,
    Account,
    GatewayAccount,
    gateway_account,
    gateway_topics,
    role_acls,
)
from coldtrail.errors import TransportError

Command = dict[str, Any]
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class DynsecError(TransportError):
    """The broker could not be reached as admin, or refused a command."""


def send(options: mqtt.MqttOptions, commands: Sequence[Command], timeout_s: float = 10.0) -> None:
    """Send ``commands`` as one request and wait for the plugin's answer; raise naming the
    first command it refused. ``options`` carry the admin account."""
    correlation = uuid.uuid4().hex
    answers: queue.Queue[Any] = queue.Queue()
    client = mqtt.make_client(options, f"coldtrail-admin-{correlation[:8]}", persistent=False)

    def on_connect(_c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        answers.put(("connack", rc))

    def on_subscribe(_c: paho.Client, _u: Any, _m: int, rcs: list[ReasonCode], _p: Any) -> None:
        answers.put(("suback", rcs[0]))

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        answers.put(("message", bytes(msg.payload)))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    mqtt.connect(client, options, persistent=False)
    client.loop_start()
    try:
        _expect(answers, "connack", timeout_s, "connect as the broker's admin")
        client.subscribe(RESPONSE_TOPIC, qos=1)
        _expect(answers, "suback", timeout_s, f"subscribe to {RESPONSE_TOPIC}")
        body = [dict(c, correlationData=f"{correlation}-{i}") for i, c in enumerate(commands)]
        client.publish(CONTROL_TOPIC, json.dumps({"commands": body}), qos=1)
        pending = {c["correlationData"]: c for c in body}
        while pending:
            doc = json.loads(_expect(answers, "message", timeout_s, "the plugin's answer"))
            for answer in doc.get("responses", []):
                sent = pending.pop(answer.get("correlationData"), None)
                if sent is not None and answer.get("error"):
                    raise DynsecError(
                        f"the broker refused {sent['command']} of "
                        f"{sent.get('username') or sent.get('rolename')}: {answer['error']}"
                    )
    finally:
        client.disconnect()
        client.loop_stop()


def _expect(answers: queue.Queue[Any], kind: str, timeout_s: float, what: str) -> Any:
    try:
        got, value = answers.get(timeout=timeout_s)
    except queue.Empty:
        raise DynsecError(f"no answer from the broker within {timeout_s} s to {what}") from None
    if got != kind:
        raise DynsecError(f"unexpected {got} from the broker waiting to {what}")
    if isinstance(value, ReasonCode) and value.is_failure:
        raise DynsecError(f"the broker refused to {what}: {value}")
    return value


def add_gateway(topic_root: str, gw: GatewayAccount, password: str) -> list[Command]:
    a: Account = gateway_account(topic_root, gw)
    return [
        {"command": "createRole", "rolename": a.user, "acls": role_acls(a)},
        {
            "command": "createClient",
            "username": a.user,
            "password": password,
            "clientid": a.clientid,
            "textname": a.user,
            "roles": [{"rolename": a.user}],
        },
    ]


def set_password(gateway: str, password: str) -> list[Command]:
    return [{"command": "setClientPassword", "username": gateway, "password": password}]


def set_disabled(gateway: str, disabled: bool) -> list[Command]:
    return [{"command": "disableClient" if disabled else "enableClient", "username": gateway}]


def move_gateway(topic_root: str, gateway: str, old_site: str, new_site: str) -> list[Command]:
    """The gateway's role: its old site's topics out, the new site's in."""
    acl = {"rolename": gateway, "acltype": "publishClientSend"}
    out: list[Command] = [
        {"command": "removeRoleACL", **acl, "topic": t}
        for t in gateway_topics(topic_root, old_site, gateway)
    ]
    out += [
        {"command": "addRoleACL", **acl, "topic": t, "allow": True}
        for t in gateway_topics(topic_root, new_site, gateway)
    ]
    return out
