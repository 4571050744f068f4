"""Change control: a place's range, a storage profile's limits and a site's regime change
only as a change signed by QA with a reason, on real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest

from coldtrail.compliance import profiles
from coldtrail.erp import audit
from coldtrail.erp.changes import change, list_changes
from coldtrail.erp.masterdata import get_location
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.signatures import Credentials
from coldtrail.errors import NotFound, RuleViolation, SignatureRefused
from tests.conftest import QA_PASSWORD, T0, make_erp

Conn = psycopg.Connection[tuple[Any, ...]]
QA1 = Credentials("qa1", QA_PASSWORD)


def _change(conn: Conn, subject: Any, subject_id: str, values: dict[str, Any], **kw: Any) -> Any:
    args: dict[str, Any] = {"credentials": QA1, "meaning": "approval",
                            "reason": "cold room re-mapped; tighter range", "at": T0}  # fmt: skip
    args.update(kw)
    return change(conn, args["credentials"].username, subject, subject_id, values, **args)


def test_qa_changes_a_places_range_with_a_reason_and_the_change_keeps_before_and_after(
    conn: Conn,
) -> None:
    make_erp(conn)
    # As the services connect: the database's own check passes a change signed by QA.
    conn.execute("SET ROLE coldtrail_app")
    done = _change(conn, "location", "CR", {"temp_max_c": 7.5, "alarm_delay_s": 600})
    conn.execute("RESET ROLE")
    place = get_location(conn, "CR")
    assert place is not None
    assert (place.temp_min_c, place.temp_max_c, place.alarm_delay_s) == (2.0, 7.5, 600)
    assert done.changed == {"temp_max_c": (8.0, 7.5), "alarm_delay_s": (None, 600)}
    [listed] = list_changes(conn)
    assert (listed.subject, listed.subject_id, listed.site_id) == ("location", "CR", "s1")
    assert listed.reason == "cold room re-mapped; tighter range"
    [signature] = listed.signatures
    assert (signature.signer, signature.meaning, signature.action) == (
        "qa1", "approval", "change location CR",
    )  # fmt: skip
    trail = audit.latest(conn, record_type="locations", record_id="CR", limit=1)
    assert trail[0].actor == "qa1"
    assert list_changes(conn, since=T0) == []  # only what came after a moment


def test_a_change_is_refused_to_an_admin_a_wrong_password_a_blank_reason_or_a_bad_range(
    conn: Conn,
) -> None:
    make_erp(conn)
    create_user(conn, "boss", "Site Admin", Role.ADMIN, QA_PASSWORD)
    with pytest.raises(SignatureRefused, match="role admin may not sign"):
        _change(conn, "location", "CR", {"temp_max_c": 9.0},
                credentials=Credentials("boss", QA_PASSWORD))  # fmt: skip
    with pytest.raises(SignatureRefused, match="wrong"):
        _change(conn, "location", "CR", {"temp_max_c": 9.0},
                credentials=Credentials("qa1", "not-the-password"))  # fmt: skip
    with pytest.raises(RuleViolation, match="reason"):
        _change(conn, "location", "CR", {"temp_max_c": 9.0}, reason="  ")
    with pytest.raises(RuleViolation, match="below"):
        _change(conn, "location", "CR", {"temp_min_c": 9.0})
    with pytest.raises(RuleViolation, match="not under change control"):
        _change(conn, "location", "CR", {"name": "Other"})
    with pytest.raises(RuleViolation, match="already so"):
        _change(conn, "location", "CR", {"temp_max_c": 8.0})
    with pytest.raises(NotFound):
        _change(conn, "location", "NOWHERE", {"temp_max_c": 9.0})
    refused = [e for e in audit.latest(conn, limit=20) if e.action == "signature_failed"]
    assert len(refused) == 2
    place = get_location(conn, "CR")
    assert place is not None
    assert place.temp_max_c == 8.0
    assert list_changes(conn) == []


def test_the_application_role_can_not_change_a_limit_without_a_signed_change(
    conn: Conn,
) -> None:
    make_erp(conn)
    for stmt in (
        "UPDATE locations SET temp_max_c = 12 WHERE id = 'CR'",
        "UPDATE temperature_profiles SET temp_max_c = 12 WHERE id = '2-8'",
        "UPDATE sites SET compliance_profile = 'eu-gdp' WHERE id = 's1'",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match="signed by QA"):
            _as_app(conn, stmt)
    _as_app(conn, "UPDATE locations SET name = 'Cold room 1' WHERE id = 'CR'")  # names stay free


def _as_app(conn: Conn, stmt: str) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE coldtrail_app")
        conn.execute(stmt)


def test_a_storage_profile_and_a_sites_regime_change_only_signed(conn: Conn) -> None:
    make_erp(conn)
    _change(conn, "temperature_profile", "2-8", {"alarm_delay_s": 120, "release_signatures": 2})
    with pytest.raises(RuleViolation, match="no compliance profile"):
        _change(conn, "site", "s1", {"compliance_profile": "mars-gsp"},
                known_profiles=set(profiles()))  # fmt: skip
    _change(conn, "site", "s1", {"compliance_profile": "eu-gdp"}, known_profiles=set(profiles()))
    row = conn.execute("SELECT compliance_profile FROM sites WHERE id = 's1'").fetchone()
    assert row == ("eu-gdp",)
    assert [(c.subject, c.subject_id) for c in list_changes(conn, site="s1")] == [
        ("temperature_profile", "2-8"),  # no site owns a storage profile: every site lists it
        ("site", "s1"),
    ]
    assert [c.subject for c in list_changes(conn, site="other")] == ["temperature_profile"]


def test_the_profile_a_product_is_stored_under_changes_only_signed(conn: Conn) -> None:
    from coldtrail.erp.products import Product, Profile, find_product, upsert_profile

    make_erp(conn)
    upsert_profile(conn, "admin", Profile("15-25", "Room temperature", 15.0, 25.0))
    gtin = conn.execute("SELECT gtin FROM products").fetchone()[0]  # type: ignore[index]
    with pytest.raises(psycopg.errors.RaiseException, match=f"product {gtin} change only"):
        _as_app(conn, f"UPDATE products SET profile_id = '15-25' WHERE gtin = '{gtin}'")  # noqa: S608
    done = _change(conn, "product", gtin, {"profile_id": "15-25"},
                   reason="the supplier's new label: 15-25 °C")  # fmt: skip
    assert done.changed == {"profile_id": ("2-8", "15-25")}
    found = find_product(conn, gtin)
    assert found == Product(gtin, found.name if found else "", "15-25", False)


MINUTE = timedelta(minutes=1)
CHANGED = T0 + 30 * MINUTE


def _an_hour_at_7_8(conn: Conn, db_url: str) -> tuple[Any, Any]:
    """An hour of 7.8 °C in CR judged by the rules after it: the excursion's start, and the
    probe's channel of the hour's record."""
    from coldtrail.api.record.build import location_record
    from coldtrail.clock import ManualClock
    from coldtrail.rules.engine import RulesEngine
    from tests.conftest import store_readings

    store_readings(conn, [("S1", m + 1, T0 + m * MINUTE, 7.8) for m in range(60)])
    clock = ManualClock(T0 + 61 * MINUTE)
    RulesEngine(db_url, clock=clock).process_pending(conn)
    [(started,)] = conn.execute(
        "SELECT started_at FROM location_excursions WHERE location_id = 'CR'"
    ).fetchall()
    record = location_record(conn, "CR", T0, T0 + 60 * MINUTE, clock.now())
    [channel] = [c for c in record.channels if c.sensor_id == "S1"]
    return started, channel


def test_readings_are_judged_and_recorded_by_the_range_in_force_when_they_were_taken(
    conn: Conn, db_url: str
) -> None:
    make_erp(conn)
    conn.execute("UPDATE locations SET alarm_delay_s = 0 WHERE id = 'CR'")
    # 7.8 °C all along: within 2-8 °C, then out of the 2-7.5 °C QA signs at 30 min.
    _change(conn, "location", "CR", {"temp_max_c": 7.5}, at=CHANGED)
    started, channel = _an_hour_at_7_8(conn, db_url)
    assert started == CHANGED  # not T0: before the change 7.8 °C was within the range
    assert [(x.start, x.temp_max_c) for x in channel.limits] == [(T0, 8.0), (CHANGED, 7.5)]
    assert channel.stats.out_of_range_s == pytest.approx(30 * 60, abs=60)


def test_goods_are_judged_by_their_profiles_limits_in_force_when_measured(
    conn: Conn, db_url: str
) -> None:
    from coldtrail.erp.movements import record_movement
    from coldtrail.erp.products import register_lot
    from tests.conftest import GTIN

    make_erp(conn)
    conn.execute("UPDATE locations SET alarm_delay_s = 0 WHERE id = 'CR'")
    lot = register_lot(conn, "logi1", GTIN, "L-7").id
    record_movement(conn, "logi1", lot, "receiving", 10, T0 - 60 * MINUTE, to_location="CR")
    # The insulin's profile tightened to 2-7.5 °C at 30 min, with no delay; 7.8 °C all along.
    _change(conn, "temperature_profile", "2-8", {"temp_max_c": 7.5, "alarm_delay_s": 0},
            at=CHANGED)  # fmt: skip
    started, channel = _an_hour_at_7_8(conn, db_url)
    assert started == CHANGED
    assert [(x.start, x.temp_max_c) for x in channel.limits] == [(T0, 8.0), (CHANGED, 7.5)]


def test_goods_are_judged_by_the_profile_their_product_was_under_when_measured(
    conn: Conn, db_url: str
) -> None:
    from coldtrail.erp.movements import record_movement
    from coldtrail.erp.products import Profile, register_lot, upsert_profile
    from tests.conftest import GTIN

    make_erp(conn)
    conn.execute("UPDATE locations SET alarm_delay_s = 0 WHERE id = 'CR'")
    upsert_profile(conn, "admin", Profile("2-7.5", "Tighter", 2.0, 7.5))
    lot = register_lot(conn, "logi1", GTIN, "L-8").id
    record_movement(conn, "logi1", lot, "receiving", 10, T0 - 60 * MINUTE, to_location="CR")
    # The insulin is kept under 2-7.5 °C from 30 min on (it was 2-8 °C with a 5-min delay).
    _change(conn, "product", GTIN, {"profile_id": "2-7.5"}, at=CHANGED)
    started, channel = _an_hour_at_7_8(conn, db_url)
    assert started == CHANGED
    assert [(x.start, x.temp_max_c) for x in channel.limits] == [(T0, 8.0), (CHANGED, 7.5)]
