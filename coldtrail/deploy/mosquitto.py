"""Mosquitto's accounts and access rules, generated from the gateways in the database.

The shipped broker config loads Mosquitto 2's dynamic-security plugin with the file written
here (``dynamic-security.json``), because the plain password and ACL files can't hold the
line: Mosquitto grants any subscription there (a gateway could join ingest's shared
subscription and make the broker drop half the stream) and any client id (a gateway could take
over a service's session). With the plugin:

- a gateway may connect only with its own id as client id, publish only its own telemetry and
  status topics, and subscribe to nothing;
- each ColdTrail service gets just the topics its stage needs; services take client ids
  beginning ``coldtrail-``, which no gateway may be named (migration 0012);
- changes while the broker runs go through the plugin's ``$CONTROL`` topic
  (:mod:`coldtrail.deploy.dynsec`); the plugin keeps them in the same file. The plugin is not
  reloaded on SIGHUP: a regenerated file takes effect when the broker starts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Mosquitto 2's own default is 101. Gateways reconnect rarely, so a login may cost more.
PBKDF2_ITERATIONS = 20_000
_SALT_BYTES = 12


def hash_password(
    password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None
) -> str:
    """The ``$7$`` (PBKDF2-SHA512) form that ``mosquitto_passwd`` writes."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Account:
    user: str
    password_hash: str
    receive: tuple[str, ...] = ()
    """Topics whose messages it may be sent."""
    subscribe: tuple[str, ...] = ()
    """Filters it may subscribe with (a ``+`` here matches any level of the filter)."""
    write: tuple[str, ...] = ()
    clientid: str | None = None
    """The only client id it may connect with; any when None."""
    disabled: bool = False


@dataclass(frozen=True)
class GatewayAccount:
    gateway: str
    site: str
    password_hash: str
    disabled: bool = False


SERVICE_ROLES = ("ingest", "outbox", "api", "admin")
SERVICE_PREFIX = "coldtrail-"
DYNSEC_FILE = "dynamic-security.json"
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"


def service_topics(topic_root: str) -> dict[str, Account]:
    """What each service account may do, keyed by role (user name and password left empty)."""
    telemetry = f"{topic_root}/v1/+/+/telemetry"
    status = f"{topic_root}/v1/+/+/status"
    events = f"{topic_root}/v1/events/#"
    control = "$CONTROL/dynamic-security/#"
    return {
        # Any shared-subscription group: COLDTRAIL_INGEST_SHARE_GROUP is the site's choice.
        "ingest": Account("", "", (telemetry,), (telemetry, f"$share/+/{telemetry}")),
        # The rules engine's outbox publishes alarms, excursions, holds and CAPA events.
        "outbox": Account("", "", write=(events,)),
        # The API pushes live readings, gateway states and events to its clients.
        "api": Account("", "", (telemetry, status, events), (telemetry, status, events)),
        # `coldtrail gateways` changes gateways while the broker runs.
        "admin": Account("", "", (control,), (control,), (control,)),
    }


def service_user(role: str) -> str:
    return f"{SERVICE_PREFIX}{role}"


def service_accounts(topic_root: str, passwords: Mapping[str, str]) -> list[Account]:
    """Accounts for the roles given a password; unknown roles are refused."""
    topics = service_topics(topic_root)
    unknown = sorted(set(passwords) - set(topics))
    if unknown:
        raise ValueError(f"no such service account: {', '.join(unknown)} (known: {sorted(topics)})")
    return [
        dataclasses.replace(
            topics[role],
            user=service_user(role),
            password_hash=_stable_hash(service_user(role), pw),
        )
        for role, pw in sorted(passwords.items())
    ]


def _stable_hash(user: str, password: str) -> str:
    # A salt derived from user and password keeps the file unchanged between runs when no
    # password changed; it stays unique per user.
    salt = hashlib.sha256(f"{user}\0{password}".encode()).digest()[:_SALT_BYTES]
    return hash_password(password, salt=salt)


def gateway_topics(topic_root: str, site: str, gateway: str) -> tuple[str, str]:
    base = f"{topic_root}/v1/{site}/{gateway}"
    # The status topic is the gateway's retained state and its will: written, never read.
    return (f"{base}/telemetry", f"{base}/status")


def gateway_account(topic_root: str, gw: GatewayAccount) -> Account:
    return Account(
        gw.gateway,
        gw.password_hash,
        write=gateway_topics(topic_root, gw.site, gw.gateway),
        clientid=gw.gateway,
        disabled=gw.disabled,
    )


def role_acls(a: Account) -> list[dict[str, object]]:
    """The plugin's ACL entries for an account's role."""
    return [
        *({"acltype": "publishClientSend", "topic": t, "allow": True} for t in a.write),
        *({"acltype": "publishClientReceive", "topic": t, "allow": True} for t in a.receive),
        *({"acltype": "subscribePattern", "topic": t, "allow": True} for t in a.subscribe),
    ]


def _password_fields(password_hash: str) -> dict[str, object]:
    """Mosquitto's ``$7$iterations$salt$hash`` (PBKDF2-SHA512, what the database keeps) in
    the plugin's own fields: the same salt and digest."""
    parts = password_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ password hash")
    return {"password": parts[4], "salt": parts[3], "iterations": int(parts[2])}


def render_dynsec(accounts: Sequence[Account]) -> str:
    """The plugin's configuration file: every account a client with a role of its own, and
    nothing allowed that a role does not grant."""
    _check_unique(accounts)
    clients = []
    for a in accounts:
        client: dict[str, object] = {
            "username": a.user,
            "textname": a.user,
            **_password_fields(a.password_hash),
            "roles": [{"rolename": a.user}],
        }
        if a.clientid is not None:
            client["clientid"] = a.clientid
        if a.disabled:
            client["disabled"] = True
        clients.append(client)
    doc = {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": [{"rolename": a.user, "acls": role_acls(a)} for a in accounts],
    }
    return json.dumps(doc, indent=2) + "\n"


def _check_unique(accounts: Iterable[Account]) -> None:
    seen: set[str] = set()
    for a in accounts:
        if a.user in seen:
            raise ValueError(
                f"MQTT user {a.user!r} appears twice (a gateway named like a service?)"
            )
        seen.add(a.user)


def write_atomically(path: Path, text: str, mode: int = 0o640) -> bool:
    """Write through a temporary file and rename; returns whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True
