"""Anchors on real PostgreSQL: a chain recomputed by someone who can write every table
verifies on its own, and fails against an anchor signed before; anchors go out through the
outbox (here to a file) and are checked by `audit verify --anchors`."""

from __future__ import annotations

import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail import readingchain as rc
from coldtrail.clock import ManualClock
from coldtrail.erp import anchors, audit
from coldtrail.erp.chain import verify_readings
from coldtrail.erp.outbox import Destination, OutboxDispatcher, add_destination
from coldtrail.erp.products import register_lot
from coldtrail.errors import ConfigError, RuleViolation
from tests.conftest import (
    GTIN,
    T0,
    as_superuser,
    cli_json,
    make_erp,
    printed_lines,
    store_readings,
)

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "anchor.key"
    anchors.keygen(path)
    return path


def _history(conn: Conn) -> None:
    make_erp(conn)
    for n in range(3):
        register_lot(conn, "logi1", GTIN, f"L{n}")
        store_readings(conn, [("S1", 10 * n + i, T0 + (10 * n + i) * M, 5.0) for i in range(10)])


def _recompute_readings_chain(conn: Conn) -> None:
    """What someone who can write every table can do: every link made again from the rows."""
    prev = rc.GENESIS
    links = conn.execute("SELECT link, batch_id FROM reading_chain ORDER BY link").fetchall()
    for link, batch in links:
        lines = printed_lines(conn, batch)
        body = rc.body(batch, lines)
        h = rc.link(prev, body)
        as_superuser(
            conn,
            "UPDATE reading_chain SET readings = %s, body = %s, fingerprints = %s, "
            "prev_hash = %s, hash = %s WHERE link = %s",
            len(lines),
            body,
            rc.fingerprints(lines),
            prev,
            h,
            link,
        )
        prev = h
    as_superuser(conn, "UPDATE reading_chain_head SET hash = %s", prev)


def _recompute_audit_chain(conn: Conn) -> None:
    prev = audit.GENESIS
    rows = conn.execute(
        "SELECT id, at, actor, action, record_type, record_id, old_value::text, "
        "new_value::text FROM audit_log ORDER BY id"
    ).fetchall()
    for rid, at, actor, action, rtype, rec, old, new in rows:
        fields = (str(rid), audit._utc(at), actor, action, rtype, rec or "", old or "", new or "")
        h = hashlib.sha256(audit.message(prev, fields)).digest()
        as_superuser(
            conn, "UPDATE audit_log SET prev_hash = %s, hash = %s WHERE id = %s", prev, h, rid
        )
        prev = h
    as_superuser(conn, "UPDATE audit_head SET hash = %s", prev)


def _anchor(conn: Conn, key: Path, folder: Path) -> Path:
    signed = anchors.make(conn, anchors.load_private(key), datetime.now(UTC))
    folder.mkdir(exist_ok=True)
    path = folder / f"{signed['anchor']['audit']['id']}.json"
    path.write_text(json.dumps(signed))
    return path


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    path = tmp_path / "k"
    kid = anchors.keygen(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert anchors.key_id(anchors.load_public(Path(f"{path}.pub"))) == kid
    with pytest.raises(FileExistsError):
        anchors.keygen(path)


def test_a_recomputed_readings_chain_verifies_alone_but_fails_its_anchor(
    conn: Conn, key: Path, tmp_path: Path
) -> None:
    _history(conn)
    folder = tmp_path / "anchors"
    _anchor(conn, key, folder)
    public = anchors.load_public(key)
    assert anchors.check(conn, folder, public).ok

    as_superuser(conn, "UPDATE readings SET temperature_c = 3.3 WHERE seq = 14")
    assert not verify_readings(conn).ok
    _recompute_readings_chain(conn)
    assert verify_readings(conn).ok  # the rewrite is consistent in itself
    result = anchors.check(conn, folder, public)
    assert not result.ok
    assert "readings link 3 had hash" in (result.reason or "")
    assert "it was rewritten" in (result.reason or "")


def test_a_recomputed_audit_trail_verifies_alone_but_fails_its_anchor(
    conn: Conn, key: Path, tmp_path: Path
) -> None:
    _history(conn)
    folder = tmp_path / "anchors"
    _anchor(conn, key, folder)
    as_superuser(conn, "UPDATE audit_log SET actor = 'mallory' WHERE id = 5")
    _recompute_audit_chain(conn)
    assert audit.verify(conn).ok
    result = anchors.check(conn, folder, anchors.load_public(key))
    assert not result.ok
    assert "audit row" in (result.reason or "")


def test_an_anchor_changed_or_signed_by_another_key_does_not_count(
    conn: Conn, key: Path, tmp_path: Path
) -> None:
    _history(conn)
    folder = tmp_path / "anchors"
    path = _anchor(conn, key, folder)
    public = anchors.load_public(key)
    signed = json.loads(path.read_text())
    signed["anchor"]["readings"]["hash"] = "00" * 32
    path.write_text(json.dumps(signed))
    result = anchors.check(conn, folder, public)
    assert (result.ok, result.reason) == (False, f"{path}: the signature does not match")

    other = tmp_path / "other.key"
    anchors.keygen(other)
    path.unlink()
    _anchor(conn, other, folder)
    result = anchors.check(conn, folder, public)
    assert not result.ok
    assert "no anchor of key" in (result.reason or "")
    assert "signed by key" in result.skipped[0]


def test_the_outbox_worker_anchors_when_the_heads_move_and_writes_them_to_a_file(
    conn: Conn, db_url: str, key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(conn)
    monkeypatch.setenv("COLDTRAIL_OUTBOX_FILE_DIR", str(tmp_path))
    target = tmp_path / "worm" / "anchors.jsonl"
    target.parent.mkdir()
    add_destination(
        conn, "admin", Destination("worm", "file", f"file://{target}", kinds=(anchors.KIND,))
    )
    clock = ManualClock(T0)
    anchorer = anchors.Anchorer(anchors.load_private(key), every_s=3600)
    dispatcher = OutboxDispatcher(db_url, clock=clock, periodic=[anchorer.maybe])
    assert anchorer.maybe(conn, clock.now())
    assert not anchorer.maybe(conn, clock.now())  # not due yet
    clock.advance(3600)
    assert not anchorer.maybe(conn, clock.now())  # due, but nothing moved
    clock.advance(3600)
    store_readings(conn, [("S1", 99, T0, 4.0)])
    assert anchorer.maybe(conn, clock.now())
    assert dispatcher.run_once(conn) == 2
    lines = target.read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["coldtrail.audit.anchor"] * 2
    assert json.loads(lines[1])["data"]["anchor"]["readings"]["link"] == 4

    out = cli_json(
        ["audit", "verify", "--anchors", str(target.parent), "--public-key", f"{key}.pub"],
        monkeypatch,
        COLDTRAIL_DATABASE_URL=db_url,
    )
    assert out["ok"] is True
    assert out["anchors"]["anchors"] == 2


def test_a_file_destination_writes_only_under_the_configured_folder(
    conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_erp(conn)
    monkeypatch.setenv("COLDTRAIL_OUTBOX_FILE_DIR", str(tmp_path / "allowed"))
    (tmp_path / "allowed").mkdir()
    for url in (f"file://{tmp_path}/elsewhere.jsonl", "file:///etc/passwd", "file:relative"):
        with pytest.raises(RuleViolation, match="file"):
            add_destination(conn, "admin", Destination("f", "file", url))
    traversal = f"file://{tmp_path}/allowed/../escaped.jsonl"
    with pytest.raises(RuleViolation, match="not under"):
        add_destination(conn, "admin", Destination("f", "file", traversal))


def test_hostile_files_among_the_anchors_are_skipped_and_the_rest_checked(
    conn: Conn, key: Path, tmp_path: Path
) -> None:
    _history(conn)
    folder = tmp_path / "anchors"
    _anchor(conn, key, folder)
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "bytes.json").write_bytes(b'{"anchor": "\xff\xfe not utf-8"}\n\x00\x01')
    (folder / "nan.json").write_text('{"anchor": {"format": NaN}}')
    (folder / "event.jsonl").write_text('{"type": "coldtrail.hold.placed", "data": {}}\n')
    result = anchors.check(conn, folder, anchors.load_public(key))
    assert result.ok, result.reason
    assert result.anchors == 1
    assert len(result.skipped) >= 4
    with pytest.raises(ConfigError, match="no anchors at"):
        anchors.check(conn, tmp_path / "nowhere", anchors.load_public(key))
