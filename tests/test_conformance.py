"""Compliance profiles as data, and a site checked against its own: each kind of
nonconformity found, then cleared (real PostgreSQL)."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail import compliance
from coldtrail.erp.conformance import Finding, check
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.errors import RuleViolation
from tests.conftest import T0, make_site, needs_timescaledb, store_readings

Conn = psycopg.Connection[tuple[Any, ...]]
NOW = T0 + timedelta(days=1)


def _rules(found: list[Finding]) -> list[tuple[str, str, str, str]]:
    return [(f.rule, f.subject, f.found, f.required) for f in found]


def _certify(conn: Conn, sensor: str, calibrated: date, valid_until: date) -> None:
    conn.execute(
        "INSERT INTO calibration_certificates (sensor_id, certificate_no, issuer, calibrated_on,"
        " valid_until, passed, max_error_c, recorded_by)"
        " VALUES (%s, %s, 'NIM', %s, %s, true, 0.2, 'admin')",
        (sensor, f"CAL-{sensor}-{calibrated}", calibrated, valid_until),
    )


def _contacts(conn: Conn, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        conn.execute(
            "INSERT INTO alarm_contacts (site_id, level, after_min, name, channel, target)"
            " VALUES ('s1', 0, 0, %s, 'smtp', %s)",
            (f"on call {i}", f"oncall{i}@example.cn"),
        )


def test_every_built_in_profile_loads_each_rule_with_its_source_or_unsourced() -> None:
    found = compliance.profiles()
    assert set(found) == {"cn-drug-gsp", "cn-device-gsp", "eu-gdp", "who-trs961", "usp-1079"}
    drug = found["cn-drug-gsp"]
    assert drug.rules["record_interval_transport"].value == 300
    assert drug.rules["alarm_contacts"].value == 3
    assert found["cn-device-gsp"].rules["alarm_contacts"].value == 2
    assert not drug.rules["time_synchronised"].sourced
    for profile in found.values():
        for rule in profile.rules.values():
            assert rule.source.strip(), (profile.id, rule.id)
            assert rule.text.strip(), (profile.id, rule.id)


def test_a_storeroom_short_of_probes_for_its_area_is_found_then_cleared(conn: Conn) -> None:
    make_site(conn, {"S1": "CR", "S2": "TC", "S3": "TC"})
    upsert_location(conn, Location("CR4", "s1", "cold_room", "Big cold room", 2.0, 8.0,
                                   area_m2=450))  # fmt: skip
    for i in range(4):
        upsert_sensor(conn, f"B{i}", "xy-md02", f"SN-B{i}")
        assign_sensor(conn, f"B{i}", "CR4", T0)
    _contacts(conn, 3)
    for s in ("S1", "S2", "S3", "B0", "B1", "B2", "B3"):
        _certify(conn, s, NOW.date() - timedelta(days=30), NOW.date() + timedelta(days=300))
    found = _rules(check(conn, NOW))
    # The drug annex: 2, and one more per further full 100 m² of a cold room: 450 m² needs 5.
    assert ("probes_per_room", "CR4 (cold_room, 450 m²)", "4 probes", "5 probes") in found
    # CR (50 m²) has one probe of the 2 every room needs.
    assert ("probes_per_room", "CR (cold_room, 50 m²)", "1 probe", "2 probes") in found
    upsert_sensor(conn, "B4", "xy-md02", "SN-B4")
    assign_sensor(conn, "B4", "CR4", T0)
    _certify(conn, "B4", NOW.date() - timedelta(days=30), NOW.date() + timedelta(days=300))
    after = _rules(check(conn, NOW))
    assert not [f for f in after if f[0] == "probes_per_room" and f[1].startswith("CR4")]
    # Under the device guide a room needs 2 whatever its area.
    conn.execute("UPDATE sites SET compliance_profile = 'cn-device-gsp'")
    assert [f for f in _rules(check(conn, NOW)) if f[0] == "probes_per_room"] == [
        ("probes_per_room", "CR (cold_room, 50 m²)", "1 probe", "2 probes")
    ]


def test_a_compartment_with_one_probe_is_found_then_cleared(conn: Conn) -> None:
    make_site(conn, {"S1": "CR", "S2": "TC"})
    found = _rules(check(conn, NOW))
    assert ("probes_per_compartment", "TC (10 m³)", "1 probe", "2 probes") in found
    upsert_sensor(conn, "S3", "xy-md02", "SN-S3")
    assign_sensor(conn, "S3", "TC", T0)
    assert not [f for f in _rules(check(conn, NOW)) if f[0] == "probes_per_compartment"]


def test_a_probe_without_a_current_certificate_or_calibrated_too_long_ago_is_found(
    conn: Conn,
) -> None:
    make_site(conn, {"S1": "CR"})
    calibration = [f for f in _rules(check(conn, NOW)) if f[0] == "calibration"]
    assert calibration == [
        ("calibration", "probe S1 at CR", "no passed certificate covering today",
         "a passed certificate")
    ]  # fmt: skip
    # Valid until next year on paper, but calibrated over a year ago: yearly is the rule.
    old = NOW.date() - timedelta(days=400)
    _certify(conn, "S1", old, NOW.date() + timedelta(days=100))
    [stale] = [f for f in _rules(check(conn, NOW)) if f[0] == "calibration"]
    assert stale[2] == f"CAL-S1-{old} calibrated {old}"
    _certify(conn, "S1", NOW.date() - timedelta(days=10), NOW.date() + timedelta(days=355))
    assert not [f for f in _rules(check(conn, NOW)) if f[0] == "calibration"]


def test_too_few_alarm_contacts_and_an_unsynchronised_clock_are_found_then_cleared(
    conn: Conn,
) -> None:
    make_site(conn, {"S1": "CR"})
    _contacts(conn, 2)
    conn.execute(
        "INSERT INTO sensor_latest (sensor_id, seq, ts, received_at, gateway, status,"
        " temperature_c, clock) VALUES ('S1', 1, %s, %s, 'gw', 'ok', 5.0, 'unsynced')",
        (NOW, NOW),
    )
    found = [f for f in check(conn, NOW) if f.rule in ("alarm_contacts", "time_synchronised")]
    assert _rules(found) == [
        ("time_synchronised", "probe S1 at CR", "clock unsynced", "clock ok"),
        ("alarm_contacts", "site s1", "2 alarm contacts", "3 alarm contacts"),
    ]
    assert found[0].source == "unsourced"
    assert "drug GSP annex" in found[1].source
    _contacts(conn, 1, first=2)
    conn.execute("UPDATE sensor_latest SET clock = 'ok'")
    assert not [f for f in check(conn, NOW) if f.rule in ("alarm_contacts", "time_synchronised")]


def test_intervals_without_a_valid_reading_are_found_by_the_profiles_interval(
    conn: Conn,
) -> None:
    make_site(conn, {"S1": "CR", "S2": "TC"})
    day = timedelta(days=1)
    # S1 every 10 minutes all day; S2 every 5 minutes but for a 30-minute hole at noon.
    rows: list[tuple[str, int, Any, float | None]] = [
        ("S1", i + 1, T0 + i * timedelta(minutes=10), 5.0) for i in range(144)
    ]
    rows += [("S2", i + 1, T0 + i * timedelta(minutes=5), 5.0) for i in range(288)
             if not 144 <= i < 150]  # fmt: skip
    store_readings(conn, rows)
    found = [f for f in check(conn, NOW, period=day) if f.rule.startswith("record_interval")]
    assert _rules(found) == [
        ("record_interval_transport", "TC over the last 1 days",
         "282 of 288 5-minute intervals recorded (97.9 %)",
         "a valid reading in every 5-minute interval of each probe"),
    ]  # fmt: skip
    # Under EU GDP the intervals are risk-based: no fixed one to fall short of.
    conn.execute("UPDATE sites SET compliance_profile = 'eu-gdp'")
    assert not [f for f in check(conn, NOW, period=day) if f.rule.startswith("record_interval")]


@needs_timescaledb
def test_a_retention_policy_shorter_than_the_profiles_is_found_then_cleared(conn: Conn) -> None:
    make_site(conn, {"S1": "CR"})

    def retention() -> list[tuple[str, str, str, str]]:
        return [f for f in _rules(check(conn, NOW)) if f[0] == "retention"]

    assert retention() == []  # ColdTrail deletes nothing of itself
    conn.execute("SELECT add_retention_policy('readings', INTERVAL '1 year')")
    assert retention() == [("retention", "table readings", "dropped after 1 year", "kept 5 years")]
    conn.execute("SELECT remove_retention_policy('readings')")
    conn.execute("SELECT add_retention_policy('readings', INTERVAL '6 years')")
    assert retention() == []


def test_a_sites_own_profile_replaces_a_built_in_one_and_an_unknown_one_is_refused(
    conn: Conn, tmp_path: Path
) -> None:
    make_site(conn, {"S1": "CR"})
    _contacts(conn, 3)
    (tmp_path / "strict.toml").write_text(
        'id = "cn-drug-gsp"\nname = "our stricter SOP"\n'
        '[rules.alarm_contacts]\nvalue = 4\nunit = "people"\n'
        'text = "SOP-QA-017: four people"\nsource = "SOP-QA-017 §4"\n'
    )
    [ours] = [f for f in check(conn, NOW, extra_profiles=tmp_path) if f.rule == "alarm_contacts"]
    assert (ours.found, ours.required, ours.source) == (
        "3 alarm contacts", "4 alarm contacts", "SOP-QA-017 §4",
    )  # fmt: skip
    conn.execute("UPDATE sites SET compliance_profile = 'nope'")
    with pytest.raises(RuleViolation, match="names compliance profile 'nope'; known: cn-device"):
        check(conn, NOW)
    (tmp_path / "bad.toml").write_text("[rules.x]\nvalue = 1\n")
    with pytest.raises(RuleViolation, match="rule x needs value, unit, text and source"):
        compliance.profiles(tmp_path)


def test_the_conformance_command_prints_each_finding_and_exits_1(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from coldtrail import cli

    make_site(conn, {"S1": "CR"})
    for key in [k for k in os.environ if k.startswith("COLDTRAIL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("COLDTRAIL_DATABASE_URL", db_url)
    with pytest.raises(SystemExit) as ended:
        cli.main(["conformance", "--site", "s1"])
    assert ended.value.code == 1
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {f["rule"] for f in found} == {
        "alarm_contacts",
        "calibration",
        "probes_per_room",
        "probes_per_compartment",
        "record_interval_storage",
    }
    assert all(f["source"] for f in found)


def test_the_rules_worker_keeps_each_check_so_each_finding_is_a_kpi_over_time(
    conn: Conn, db_url: str
) -> None:
    from coldtrail.clock import ManualClock
    from coldtrail.erp.conformance import history
    from coldtrail.erp.masterdata import upsert_site
    from coldtrail.rules.engine import RulesEngine

    make_site(conn, {"S1": "CR"})
    _certify(conn, "S1", NOW.date() - timedelta(days=10), NOW.date() + timedelta(days=300))
    upsert_site(conn, "s2", "Empty depot")  # nothing placed, its contacts named: no finding
    for i in range(3):
        conn.execute(
            "INSERT INTO alarm_contacts (site_id, level, after_min, name, channel, target)"
            " VALUES ('s2', 0, 0, %s, 'smtp', %s)",
            (f"depot {i}", f"depot{i}@example.cn"),
        )
    clock = ManualClock(NOW)
    engine = RulesEngine(db_url, clock=clock, conformance_every_s=6 * 3600)
    engine.tick(conn)  # s1: one probe in CR, no alarm contact
    clock.advance(3600)
    engine.tick(conn)  # not due yet
    _contacts(conn, 3)
    clock.advance(5 * 3600)
    engine.tick(conn)  # due: s1's contacts are named now
    checks = conn.execute(
        "SELECT checked_at, site_id, findings FROM conformance_checks ORDER BY id"
    ).fetchall()
    at = [(when - NOW, site) for when, site, _ in checks]
    assert at == [(timedelta(0), "s1"), (timedelta(0), "s2"),
                  (timedelta(hours=6), "s1"), (timedelta(hours=6), "s2")]  # fmt: skip
    s1 = [n for _, site, n in checks if site == "s1"]
    assert s1[0] == s1[1] + 1  # the alarm contacts' finding cleared
    # A check that found nothing is kept too: a zero on the chart, not a gap.
    assert [n for _, site, n in checks if site == "s2"] == [0, 0]
    days = {(d.site_id, d.rule, d.findings) for d in history(conn, NOW - timedelta(days=1))}
    assert ("s1", "alarm_contacts", 1) in days
    assert ("s1", "probes_per_room", 1) in days
    assert not [d for d in days if d[0] == "s2"]
