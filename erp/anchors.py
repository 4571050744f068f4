"""Anchors: the heads of the audit trail's and the readings' hash chains, signed with an
Ed25519 key the database never sees and kept outside it.

Whoever can write the tables could recompute both chains from any row on, and a recomputed
chain verifies on its own. It can't match an anchor kept elsewhere: every link's hash after
the rewritten row changes, and the anchor names the hash its link had. ``audit verify
--anchors`` checks each anchor's signature with the public key, then that the chain (itself
recomputed from the rows) has that hash at that row and link.

An anchor goes out as an outbox event (``audit.anchor``) to the destinations that take it: a
webhook of another organisation's system, an MQTT topic, a file on a WORM mount.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coldtrail.erp import outbox
from coldtrail.erp import queries as q
from coldtrail.erp.tx import Conn
from coldtrail.errors import ConfigError

FORMAT = "coldtrail.anchor/1"
KIND = "audit.anchor"


def keygen(path: Path) -> str:
    """Write a new private key to ``path`` (0600; refused if it exists) and its public half
    to ``path.pub``; returns the key id."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key()
    Path(f"{path}.pub").write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_id(public)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"anchor key {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"anchor key {path}: not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"anchor public key {path}: {exc.strerror or exc}") from exc
    if b"PRIVATE KEY" in data:
        return load_private(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"anchor public key {path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"anchor public key {path}: not an Ed25519 key")
    return key


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Heads:
    audit_id: int
    audit_hash: str
    link: int
    readings_hash: str


def heads(conn: Conn) -> Heads:
    row = conn.execute(q.CHAIN_HEADS).fetchone()
    assert row is not None  # noqa: S101 - two singleton rows
    return Heads(int(row[0]), bytes(row[1]).hex(), int(row[2]), bytes(row[3]).hex())


def make(conn: Conn, key: Ed25519PrivateKey, now: datetime) -> dict[str, Any]:
    """The signed anchor of the heads as they are now."""
    h = heads(conn)
    name = conn.execute("SELECT current_database()").fetchone()
    anchor = {
        "format": FORMAT,
        "made_at": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "database": str(name[0]) if name else "",
        "audit": {"id": h.audit_id, "hash": h.audit_hash},
        "readings": {"link": h.link, "hash": h.readings_hash},
    }
    return {
        "anchor": anchor,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(_canonical(anchor))).decode(),
    }


def publish(conn: Conn, signed: dict[str, Any], now: datetime) -> None:
    """Hand an anchor to the outbox, in the caller's transaction."""
    a = signed["anchor"]
    subject = f"audit/{a['audit']['id']}/readings/{a['readings']['link']}"
    outbox.emit(conn, KIND, subject, signed, now)


class Anchorer:
    """Anchors the heads every ``every_s`` if they moved since the last anchor it made (the
    outbox worker runs one)."""

    def __init__(self, key: Ed25519PrivateKey, every_s: float) -> None:
        self._key = key
        self._every_s = every_s
        self._due = 0.0
        self._last: Heads | None = None

    def maybe(self, conn: Conn, now: datetime) -> bool:
        t = now.timestamp()
        if self._every_s <= 0 or t < self._due:
            return False
        self._due = t + self._every_s
        current = heads(conn)
        if current == self._last:
            return False
        with conn.transaction():
            publish(conn, make(conn, self._key, now), now)
        self._last = current
        return True


@dataclass(frozen=True)
class AnchorCheck:
    ok: bool
    anchors: int
    """Anchors checked (signed by the key, of this database)."""
    skipped: list[str]
    """Files or lines that held no anchor of this key, and why."""
    reason: str | None = None


def read(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Signed anchors in ``path`` (a file or every file under a directory): a file of one
    JSON document, or JSON lines (as the file destination writes them); bare anchors or
    outbox events carrying one. Yields (where, signed anchor); what is not one is skipped."""
    if not path.exists():
        raise ConfigError(f"no anchors at {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        try:
            docs = [json.loads(text)]
        except (json.JSONDecodeError, RecursionError):  # nested too deep: not an anchor
            docs = []
            for n, line in enumerate(text.splitlines(), 1):
                try:
                    docs.append(json.loads(line))
                except (json.JSONDecodeError, RecursionError):
                    yield f"{f}:{n}", {}
        for doc in docs:
            if isinstance(doc, dict) and doc.get("type") == f"coldtrail.{KIND}":
                doc = doc.get("data")
            yield str(f), doc if isinstance(doc, dict) else {}


def check(conn: Conn, path: Path, public: Ed25519PublicKey) -> AnchorCheck:
    """Each anchor's signature, then the chains at its row and link. Call it after the
    chains verified: the stored hashes are then the recomputed ones."""
    mine = key_id(public)
    skipped: list[str] = []
    count = 0
    for where, signed in read(path):
        anchor = signed.get("anchor")
        if not isinstance(anchor, dict) or anchor.get("format") != FORMAT:
            skipped.append(f"{where}: not an anchor")
            continue
        if signed.get("key_id") != mine:
            skipped.append(f"{where}: signed by key {signed.get('key_id')}, not {mine}")
            continue
        try:
            public.verify(base64.b64decode(str(signed.get("signature"))), _canonical(anchor))
        except (InvalidSignature, ValueError):
            return AnchorCheck(False, count, skipped, f"{where}: the signature does not match")
        reason = _against_chains(conn, anchor)
        if reason is not None:
            return AnchorCheck(False, count, skipped, f"{where}: {reason}")
        count += 1
    if not count:
        return AnchorCheck(False, 0, skipped, f"no anchor of key {mine} in {path}")
    return AnchorCheck(True, count, skipped)


def _against_chains(conn: Conn, anchor: dict[str, Any]) -> str | None:
    made = anchor.get("made_at")
    audit, readings = anchor.get("audit") or {}, anchor.get("readings") or {}
    row = conn.execute(
        q.CHAIN_HASHES_AT, {"id": audit.get("id"), "link": readings.get("link")}
    ).fetchone()
    assert row is not None  # noqa: S101 - two scalar subqueries
    at_id, at_link = (bytes(v).hex() if v is not None else None for v in row)
    if audit.get("id") and at_id != audit.get("hash"):
        found = "no such row" if at_id is None else f"hash {at_id}"
        return (
            f"anchored at {made}, audit row {audit.get('id')} had hash {audit.get('hash')}; "
            f"the trail has {found}: it was rewritten"
        )
    if readings.get("link") and at_link != readings.get("hash"):
        found = "no such link" if at_link is None else f"hash {at_link}"
        return (
            f"anchored at {made}, readings link {readings.get('link')} had hash "
            f"{readings.get('hash')}; the chain has {found}: it was rewritten"
        )
    return None
