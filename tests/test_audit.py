"""The audit trail: attributed, append-only, and a hash chain that shows any tampering."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from coldtrail.erp import audit
from coldtrail.erp.products import register_lot
from coldtrail.erp.tx import acting
from tests.conftest import GTIN, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]


def _some_history(conn: Conn) -> None:
    make_erp(conn)
    for n in range(5):
        register_lot(conn, "logi1", GTIN, f"L{n}")
    with acting(conn, "qa1"):
        audit.record(conn, "qa1", "export", "report", "shipment/SH1", {"format": "pdf"})


def test_every_change_is_attributed_with_old_and_new_values(conn: Conn) -> None:
    make_erp(conn)
    with acting(conn, "admin"):
        conn.execute("UPDATE locations SET temp_max_c = 7.5 WHERE id = 'CR'")

    [change] = audit.entries(conn, record_type="locations", record_id="CR", after_id=0)[-1:]
    assert (change.actor, change.action) == ("admin", "update")
    assert (change.old_value["temp_max_c"], change.new_value["temp_max_c"]) == (8.0, 7.5)
    users = audit.entries(conn, record_type="users")
    assert users
    assert all("password_hash" not in (e.new_value or {}) for e in users)
    # A change made outside the application still names the database user.
    conn.execute("UPDATE locations SET name = 'Cold room 1' WHERE id = 'CR'")
    last = audit.entries(conn, record_type="locations", record_id="CR")[-1]
    assert last.actor == "db:postgres"


def test_an_untouched_chain_verifies(conn: Conn) -> None:
    _some_history(conn)
    check = audit.verify(conn, batch=7)
    assert check.ok, check.reason
    assert check.rows == conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]  # type: ignore[index]
    assert len(check.head) == 64


def _as_superuser_without_triggers(conn: Conn, stmt: str, row_id: int) -> None:
    # What a database superuser can do: switch the append-only triggers off for a session.
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(stmt, (row_id,))


def test_an_edited_row_is_named_by_verify(conn: Conn) -> None:
    _some_history(conn)
    victim = conn.execute(
        "SELECT id FROM audit_log WHERE record_type = 'lots' ORDER BY id OFFSET 2 LIMIT 1"
    ).fetchone()
    assert victim is not None
    _as_superuser_without_triggers(
        conn,
        "UPDATE audit_log SET new_value = jsonb_set(new_value, '{lot_number}', '\"X9\"') "
        "WHERE id = %s",
        victim[0],
    )

    check = audit.verify(conn)
    assert not check.ok
    assert check.first_broken_id == victim[0]
    assert check.reason == f"row {victim[0]} was changed after writing"


def test_a_removed_row_is_found_at_the_next_one(conn: Conn) -> None:
    _some_history(conn)
    ids = [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
    _as_superuser_without_triggers(conn, "DELETE FROM audit_log WHERE id = %s", ids[3])

    check = audit.verify(conn)
    assert (check.ok, check.first_broken_id) == (False, ids[4])
    assert "does not follow" in (check.reason or "")


def test_rows_removed_at_the_end_are_found_by_the_head(conn: Conn) -> None:
    _some_history(conn)
    last = conn.execute("SELECT max(id) FROM audit_log").fetchone()
    assert last is not None
    _as_superuser_without_triggers(conn, "DELETE FROM audit_log WHERE id = %s", last[0])

    check = audit.verify(conn)
    assert not check.ok
    assert "rows at the end were removed" in (check.reason or "")


def _as_app(conn: Conn, stmt: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_app")
        conn.execute(stmt)


def test_the_application_role_can_append_but_never_change(conn: Conn) -> None:
    _some_history(conn)
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_app")
        register_lot(conn, "logi1", GTIN, "APP1")  # writes through the trigger, chain and all
    for stmt in (
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "UPDATE audit_head SET last_id = 0",
        "UPDATE readings SET temperature_c = 0",
        "DELETE FROM signatures",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _as_app(conn, stmt)
    # Even the owner is stopped by the trigger.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="GxP record"):
        conn.execute("DELETE FROM audit_log")
    assert audit.verify(conn).ok


def test_concurrent_writers_leave_one_unbroken_chain(conn: Conn, db_url: str) -> None:
    make_erp(conn)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as own:
                for i in range(25):
                    register_lot(own, f"w{n}", GTIN, f"W{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    check = audit.verify(conn)
    assert check.ok, check.reason
    assert len(audit.entries(conn, record_type="lots", limit=1000)) == 100


def test_a_rolled_back_savepoint_leaves_the_chain_whole(conn: Conn) -> None:
    make_erp(conn)

    class Undo(Exception):
        pass

    def second_lot_undone() -> None:
        with conn.transaction():
            register_lot(conn, "logi1", GTIN, "K2")
            raise Undo

    with conn.transaction():
        register_lot(conn, "logi1", GTIN, "K1")
        with pytest.raises(Undo):
            second_lot_undone()
        register_lot(conn, "logi1", GTIN, "K3")
        # Many rows in one transaction: the head is written once, at commit.
        conn.execute(
            "INSERT INTO audit_log (actor, action, record_type, record_id) "
            "SELECT 'bulk', 'export', 'report', g::text FROM generate_series(1, 2000) g"
        )

    check = audit.verify(conn)
    assert check.ok, check.reason
    numbers = [e.new_value["lot_number"] for e in audit.entries(conn, record_type="lots")]
    assert numbers == ["K1", "K3"]


def test_the_chains_session_settings_can_not_break_it(conn: Conn) -> None:
    """The chain once carried its state in settings any session may set: a head held back
    by `coldtrail.audit_last = '0'` made verify report rows at the end removed, for good."""
    _some_history(conn)
    for setting, value in (
        ("coldtrail.audit_last", "0"),
        ("coldtrail.audit_prev", "00" * 32),
        ("coldtrail.audit_prev", "not hex"),
    ):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE coldtrail_app")
            conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
            register_lot(conn, "logi1", GTIN, f"S-{setting[-4:]}-{value[:3]}")
            register_lot(conn, "logi1", GTIN, f"T-{setting[-4:]}-{value[:3]}")
        check = audit.verify(conn)
        assert check.ok, f"{setting}={value}: {check.reason}"
    # Moving the head by hand (a superuser) is still found.
    _as_superuser_without_triggers(conn, "UPDATE audit_head SET last_id = %s", 1)
    assert not audit.verify(conn).ok


def _record_as_app(conn: Conn, acting_as: str | None, actor: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_app")
        if acting_as is not None:
            conn.execute("SELECT set_config('coldtrail.actor', %s, true)", (acting_as,))
        audit.record(conn, actor, "export", "report", "shipment/SH2")


def test_the_application_role_can_not_write_a_trail_row_naming_anyone(conn: Conn) -> None:
    _some_history(conn)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as_app(
            conn,
            "INSERT INTO audit_log (actor, action, record_type, record_id) "
            "VALUES ('qa1', 'signature', 'hold', '1')",
        )
    # An explicit entry names the user the transaction acts as, and no one else.
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"acts as \(logi1\), not qa1"):
        _record_as_app(conn, "logi1", "qa1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"acts as \(nobody\)"):
        _record_as_app(conn, None, "qa1")
    _record_as_app(conn, "qa1", "qa1")
    # What the triggers write names the acting user too, whatever a row says.
    with acting(conn, "logi1"):
        conn.execute(
            "INSERT INTO audit_log (actor, action, record_type) VALUES ('mallory', 'x', 'y')"
        )
    assert [e.actor for e in audit.entries(conn, limit=1000)][-2:] == ["qa1", "logi1"]
    assert audit.verify(conn).ok


def test_tables_match_what_the_trail_says_they_became(conn: Conn) -> None:
    _some_history(conn)
    conn.execute("SET TimeZone = 'Asia/Shanghai'")  # images written in one zone, read in another
    check = audit.verify_state(conn)
    assert check.ok, check.findings
    assert check.tables >= 20
    assert check.records > 10


def test_changes_made_with_the_triggers_off_are_named_against_the_trail(conn: Conn) -> None:
    _some_history(conn)
    lot = conn.execute("SELECT id FROM lots ORDER BY id LIMIT 1").fetchone()
    assert lot is not None
    edits = [
        ("UPDATE lots SET lot_number = 'X9' WHERE id = %s", f"lots {lot[0]}: lot_number differ"),
        ("DELETE FROM locations WHERE id = 'QZ'", "locations QZ: the trail has it, the table not"),
        ("INSERT INTO sites (id, name) VALUES ('ghost', 'Ghost')", "sites ghost: a row the trail"),
    ]
    saved = conn.execute("SELECT * FROM locations WHERE id = 'QZ'").fetchone()
    for stmt, finding in edits:
        params: tuple[object, ...] = (lot[0],) if "%s" in stmt else ()
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(stmt, params)
        check = audit.verify_state(conn)
        assert not check.ok
        assert any(f.startswith(finding) for f in check.findings), check.findings
    assert audit.verify(conn).ok  # the trail itself is untouched: only the state check sees it
    # Put back, and it passes again.
    assert saved is not None
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE lots SET lot_number = 'L0' WHERE id = %s", (lot[0],))
        conn.execute("DELETE FROM sites WHERE id = 'ghost'")
        cols = ", ".join(["%s"] * len(saved))
        conn.execute(f"INSERT INTO locations VALUES ({cols})", saved)  # noqa: S608
    check = audit.verify_state(conn)
    assert check.ok, check.findings
