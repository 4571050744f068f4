"""Conditions beyond excursions raise alarms once; unacknowledged alarms escalate; channels
are real: a local HTTP receiver and a local SMTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import date, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller

from coldtrail.clock import ManualClock
from coldtrail.errors import Conflict, RuleViolation
from coldtrail.net import free_port
from coldtrail.rules import alarms
from coldtrail.rules.alarms import AlarmDesk, Contact, acknowledge, add_contact, find_alarms
from coldtrail.rules.conditions import Limits
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.notifiers import NotifierSettings, build_notifiers
from tests.conftest import T0, make_erp, make_site

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
# (minute, °C or None, %RH or None, battery % or None)
Row = tuple[int, float | None, float | None, float | None]


def _store(conn: Conn, sensor: str, rows: Sequence[Row]) -> None:
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c,"
            " humidity_pct, battery_pct, batch_id) VALUES (%s, %s, %s, 'gw', %s, %s, %s, %s, %s)",
            [
                (sensor, m + 1, T0 + m * M, "ok" if t is not None else "unavailable", t, rh, b,
                 batch[0])
                for m, t, rh, b in rows
            ],
        )  # fmt: skip


def _move(clock: ManualClock, to: Any) -> None:
    clock.advance((to - clock.now()).total_seconds())


def _kinds(conn: Conn) -> list[tuple[str, str | None, Any, Any]]:
    return [
        (a.kind, a.sensor_id, a.started_at, a.ended_at)
        for a in find_alarms(conn, limit=1000)
        if a.kind != "offline"
    ]


@pytest.fixture
def site(conn: Conn) -> Conn:
    make_site(conn, {"S1": "CR", "S2": "TC"})
    conn.execute("UPDATE locations SET rh_min_pct = 30, rh_max_pct = 70, alarm_delay_s = 120")
    return conn


def test_each_condition_raises_one_alarm_with_its_measurement_times(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    steady = [(m, 5.0, 50.0, 80.0) for m in range(0, 10)]
    # Humidity 80 %RH from minute 10 to 15; the battery runs low from minute 20.
    humid = [(m, 5.0, 80.0, 80.0) for m in range(10, 15)]
    dry = [(m, 5.0, 50.0, 80.0 if m < 20 else 12.0) for m in range(15, 25)]
    # The logger stops answering from minute 25 to 29 (power), then comes back.
    dark = [(m, None, None, None) for m in range(25, 29)]
    back = [(m, 5.0, 50.0, 12.0) for m in range(29, 31)]
    _store(site, "S1", [*steady, *humid, *dry, *dark, *back])
    # In the truck: a door left open (5 -> 7.5 °C in a minute) and then 8 minutes without a
    # record, more than the 5 GSP allows in transport.
    _store(site, "S2", [(0, 5.0, None, None), (1, 7.5, None, None), (2, 7.6, None, None),
                        (10, 7.0, None, None), (11, 6.0, None, None)])  # fmt: skip
    clock.advance(40 * 60)
    engine = RulesEngine(db_url, clock=clock)
    engine.process_pending(site)

    assert sorted(_kinds(site), key=lambda k: (k[0], k[2])) == [
        ("battery_low", "S1", T0 + 20 * M, None),
        ("humidity", "S1", T0 + 10 * M, T0 + 15 * M),
        ("rapid_change", "S2", T0, T0 + 1 * M),
        ("record_interval", "S2", T0 + 2 * M, T0 + 10 * M),
        ("unavailable", "S1", T0 + 25 * M, T0 + 29 * M),
    ]
    # Judging the same readings again raises nothing new.
    raised = len(find_alarms(site, limit=1000))
    engine.judge_sensors(site, {"S1": T0, "S2": T0})
    assert len(find_alarms(site, limit=1000)) == raised


def test_a_condition_lasting_over_many_batches_stays_one_alarm_until_it_ends(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    engine = RulesEngine(db_url, clock=clock)
    # Humidity above 70 %RH from minute 10, the logger not answering from minute 40: both
    # go on over batches an hour apart, far longer than any look-back.
    for first in range(0, 240, 60):
        _store(site, "S1", [
            (m, None if 40 <= m < 200 else 5.0, None if 40 <= m < 200 else 50.0 + 30 * (m >= 10),
             80.0)
            for m in range(first, first + 60)
        ])  # fmt: skip
        _move(clock, T0 + (first + 61) * M)
        engine.process_pending(site)
    _store(site, "S1", [(240, 5.0, 50.0, 80.0)])
    _move(clock, T0 + 241 * M)
    engine.process_pending(site)

    assert sorted(_kinds(site), key=lambda k: (k[0], k[2])) == [
        ("humidity", "S1", T0 + 10 * M, T0 + 240 * M),
        ("unavailable", "S1", T0 + 40 * M, T0 + 200 * M),
    ]


def test_a_silent_sensor_is_offline_until_it_reports_again(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    _store(site, "S1", [(m, 5.0, 50.0, 90.0) for m in range(0, 5)])
    _store(site, "S2", [(m, 5.0, 50.0, 90.0) for m in range(0, 30)])
    _move(clock, T0 + 30 * M)
    limits = Limits(offline_after_s=600)
    with site.transaction():
        alarms.check_timers(site, clock.now(), limits)
    [offline] = find_alarms(site, kind="offline")
    assert (offline.sensor_id, offline.started_at, offline.ended_at) == ("S1", T0 + 4 * M, None)
    with site.transaction():
        assert alarms.check_timers(site, clock.now(), limits) == 0  # raised once
    _store(site, "S1", [(40, 5.0, 50.0, 90.0)])
    _move(clock, T0 + 41 * M)
    with site.transaction():
        alarms.check_timers(site, clock.now(), limits)
    offline_now = {a.sensor_id: a for a in find_alarms(site, kind="offline")}
    assert offline_now["S1"].ended_at == T0 + 40 * M
    # S2 has now been silent 12 minutes itself.
    assert (offline_now["S2"].started_at, offline_now["S2"].ended_at) == (T0 + 29 * M, None)


def test_an_overdue_calibration_alarms_until_the_probe_is_calibrated(
    site: Conn, clock: ManualClock
) -> None:
    site.execute("UPDATE sensors SET calibration_due = %s WHERE id = 'S1'", (date(2026, 11, 1),))
    _move(clock, T0)
    with site.transaction():
        alarms.check_timers(site, clock.now(), Limits(offline_after_s=10**9))
    [overdue] = find_alarms(site, kind="calibration_overdue")
    assert overdue.sensor_id == "S1"
    assert "2026-11-01" in overdue.message
    site.execute("UPDATE sensors SET calibration_due = %s WHERE id = 'S1'", (date(2027, 11, 1),))
    with site.transaction():
        alarms.check_timers(site, clock.now(), Limits(offline_after_s=10**9))
    [overdue] = find_alarms(site, kind="calibration_overdue")
    assert overdue.ended_at == T0


# ---------------------------------------------------------------- escalation, channels


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]
    failing: list[bool]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.failing and self.failing.pop(0):
            self.send_response(503)
            self.end_headers()
            return
        self.received.append({"key": self.headers["Idempotency-Key"], **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], list[bool]]]:
    received: list[dict[str, Any]] = []
    failing: list[bool] = []
    handler = type("H", (_Receiver,), {"received": received, "failing": failing})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms", received, failing
    server.shutdown()
    server.server_close()


@pytest.fixture
def mailbox() -> Iterator[tuple[str, Mailbox]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", box
    controller.stop()


def test_an_unacknowledged_excursion_escalates_by_sms_then_email_until_acknowledged(
    conn: Conn,
    db_url: str,
    clock: ManualClock,
    webhook: tuple[str, list[dict[str, Any]], list[bool]],
    mailbox: tuple[str, Mailbox],
) -> None:
    url, texts, failing = webhook
    smtp_url, box = mailbox
    erp = make_erp(conn)
    conn.execute("UPDATE sites SET timezone = 'Asia/Shanghai'")  # the Chinese text's times
    notifiers = build_notifiers(NotifierSettings(smtp_url=smtp_url, smtp_from="alarms@test"))
    assert set(notifiers) == {"webhook", "smtp"}
    only = ("excursion",)
    for contact in (
        Contact("Night shift", "webhook", url, kinds=only),
        Contact("QA manager", "smtp", "qa@example.com", level=1, after_min=15, kinds=only),
        Contact("Site head", "smtp", "head@example.com", level=2, after_min=30, kinds=only),
    ):
        add_contact(conn, "admin", contact, set(notifiers))
    _store(conn, "S1", [(m, 12.0 if m >= 5 else 5.0, None, None) for m in range(0, 15)])
    _move(clock, T0 + 15 * M)
    engine = RulesEngine(db_url, clock=clock, notifiers=notifiers)
    failing.append(True)  # the SMS gateway is down at first
    engine.tick(conn)
    [alarm] = find_alarms(conn, kind="excursion")
    assert alarm.location_id == "CR"
    assert alarm.ended_at is None
    assert texts == []
    clock.advance(30)  # the first retry is due after 30 s
    engine.tick(conn)
    assert [(t["alarm"], t["kind"], t["level"], t["key"]) for t in texts] == [
        (alarm.id, "excursion", 0, f"alarm-{alarm.id}-level-0")
    ]
    # The message again in Chinese from the alarm's numbers, times in the site's zone.
    said = "CR 温度超出范围：12.0..12.0 °C（允许 2..8 °C），自 11-22 18:05:00 起（延迟发现）"  # noqa: RUF001
    assert (texts[0]["message"].split(" (")[0], texts[0]["message_zh"]) == (
        "CR out of range: 12.0..12.0 °C",
        said,
    )
    assert box.messages == []
    clock.advance(15 * 60)
    engine.tick(conn)
    [(to, mail)] = box.messages
    assert to == ["qa@example.com"]
    assert mail["From"] == "alarms@test"
    body = mail.get_payload(decode=True).decode(mail.get_content_charset())
    assert body.splitlines()[:2] == [alarm.message, said]
    assert f"[ColdTrail alarm {alarm.id}] excursion at CR (escalation 1)" == mail["Subject"]
    with pytest.raises(RuleViolation, match="needs a comment"):
        acknowledge(conn, alarm.id, erp.qa.username, "  ", clock.now())
    acknowledge(conn, alarm.id, erp.qa.username, "Door found open; closed it", clock.now())
    with pytest.raises(Conflict):
        acknowledge(conn, alarm.id, erp.qa.username, "again", clock.now())
    clock.advance(60 * 60)
    engine.tick(conn)
    assert len(box.messages) == 1
    assert len(texts) == 1
    kinds = [r[0] for r in conn.execute(
        "SELECT kind FROM outbox_events WHERE kind LIKE 'alarm.%%' AND subject = %s ORDER BY id",
        (f"alarm/{alarm.id}",),
    )]  # fmt: skip
    assert kinds == ["alarm.raised", "alarm.escalated", "alarm.acknowledged"]


def test_a_contact_needs_a_known_channel(conn: Conn) -> None:
    make_site(conn, {})
    with pytest.raises(RuleViolation, match="unknown channel 'pager'"):
        add_contact(conn, "admin", Contact("x", "pager", "123"), {"webhook"})
    desk = AlarmDesk({}, ManualClock(T0))
    assert desk.tick(conn) == 0


def _gap_alarms(conn: Conn) -> list[alarms.Alarm]:
    return [
        a
        for a in find_alarms(conn, limit=1000)
        if a.kind in ("record_interval", "offline") and a.sensor_id == "S1"
    ]


def _steady(first: int, last: int) -> list[Row]:
    return [(m, 5.0, 50.0, 80.0) for m in range(first, last)]


@pytest.mark.parametrize(
    "order",
    [
        pytest.param([5, 4, 3, 2, 1, 0], id="newest first"),
        pytest.param([2, 5, 0, 3, 1, 4], id="scattered"),
        pytest.param([0, 1, 2, 3, 4, 5], id="oldest first"),
    ],
)
def test_gap_alarms_are_withdrawn_when_a_late_backlog_fills_the_gap(
    site: Conn, db_url: str, clock: ManualClock, order: list[int]
) -> None:
    """A six-hour outage at the gateway: live readings resume first, the backlog then comes
    an hour at a time in some order. Every gap and silence the alarms reported while it
    arrived is filled in the end: each is withdrawn with its reason, none waits for a person."""
    engine = RulesEngine(db_url, clock=clock)
    limits = Limits()
    _store(site, "S1", _steady(0, 60))
    _move(clock, T0 + 61 * M)
    engine.process_pending(site)
    _move(clock, T0 + 80 * M)
    alarms.check_timers(site, clock.now(), limits)
    assert [a.kind for a in _gap_alarms(site)] == ["offline"]  # silent since minute 59
    _store(site, "S1", _steady(420, 430))  # back, live
    _move(clock, T0 + 431 * M)
    engine.process_pending(site)
    alarms.check_timers(site, clock.now(), limits)
    raised = {a.id for a in _gap_alarms(site)}
    assert any(a.kind == "record_interval" for a in _gap_alarms(site))

    for hour in order:  # the backlog, minutes 60 to 419, an hour a batch
        _store(site, "S1", _steady(60 + 60 * hour, 120 + 60 * hour))
        clock.advance(5)
        engine.process_pending(site)
        alarms.check_timers(site, clock.now(), limits)
        raised |= {a.id for a in _gap_alarms(site)}

    every = [alarms.get_alarm(site, i) for i in sorted(raised)]
    assert len(every) >= 2
    assert all(a.withdrawn_at is not None for a in every), [(a.kind, a.message) for a in every]
    assert all("late readings" in (a.withdrawn_reason or "") for a in every)
    assert not [a for a in find_alarms(site, active=True, limit=1000) if a.id in raised]
    # The withdrawal is in the trail, and it is no one's call to acknowledge.
    trail = site.execute(
        "SELECT count(*) FROM audit_log WHERE record_type = 'alarms' AND action = 'update' "
        "AND new_value ->> 'withdrawn_reason' IS NOT NULL"
    ).fetchone()
    assert trail is not None
    assert trail[0] == len(every)


def test_a_gap_the_backlog_leaves_stays_an_alarm(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    engine = RulesEngine(db_url, clock=clock)
    _store(site, "S1", _steady(0, 60))
    _store(site, "S1", _steady(420, 430))
    _move(clock, T0 + 431 * M)
    engine.process_pending(site)
    [whole] = [a for a in _gap_alarms(site) if a.kind == "record_interval"]
    # The backlog comes without the hour from minute 180: that much is still missing.
    for first in (300, 60, 120, 240, 360):
        _store(site, "S1", _steady(first, first + 60))
        clock.advance(5)
        engine.process_pending(site)
    assert alarms.get_alarm(site, whole.id).withdrawn_reason is not None
    left = [a for a in find_alarms(site, active=True, limit=1000) if a.kind == "record_interval"]
    assert [(a.started_at, a.ended_at) for a in left] == [(T0 + 179 * M, T0 + 240 * M)]
    assert left[0].withdrawn_at is None


def test_a_probes_resolution_step_between_readings_seconds_apart_is_no_rapid_change(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    """Readings every 5 s of a probe with 0.1 °C resolution flickering between two values:
    0.1 °C in 5 s is 1.2 °C/min, and raised 73 alarms in 10 minutes. Judged over a minute at
    least, it is none; a door left open (3 °C in 90 s) still is one."""

    def every_5_s(temps: list[float]) -> None:
        batch = site.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
        assert batch is not None
        with site.cursor() as cur:
            cur.executemany(
                "INSERT INTO readings (sensor_id, seq, ts, gateway, status, temperature_c,"
                " batch_id) VALUES ('S1', %s, %s, 'gw', 'ok', %s, %s)",
                [(n + 1, T0 + timedelta(seconds=5 * n), v, batch[0]) for n, v in enumerate(temps)],
            )

    flicker = [5.0 + 0.1 * (n % 2) for n in range(120)]  # ten minutes
    door = [5.1 + 3.0 * min(n, 18) / 18 for n in range(1, 37)]  # then 3 °C in 90 s
    every_5_s(flicker + door)
    clock.advance(20 * 60)
    RulesEngine(db_url, clock=clock).process_pending(site)
    rapid = [a for a in find_alarms(site, limit=1000) if a.kind == "rapid_change"]
    assert len(rapid) == 1
    assert rapid[0].started_at >= T0 + timedelta(minutes=9)


def test_after_a_restart_sensors_get_the_offline_limit_to_be_heard(
    site: Conn, db_url: str, clock: ManualClock
) -> None:
    """Every demo start raised an offline alarm for each sensor ("silent since yesterday"),
    active until someone acknowledged it. A silence counts from when the worker began
    watching at the earliest; one that lasts past the limit is still an alarm, dated from the
    last reading."""
    _store(site, "S1", [(-24 * 60, 5.0, None, None)])  # yesterday, before the restart
    engine = RulesEngine(db_url, clock=clock)  # started at T0
    engine.tick(site)
    assert [a.kind for a in find_alarms(site, limit=100)] == []
    clock.advance(5 * 60)
    _store(site, "S1", [(5, 5.0, None, None)])  # S1 is heard again; S2 says nothing
    engine.tick(site)
    clock.advance(6 * 60 + 30)
    engine.tick(site)
    offline = [a for a in find_alarms(site, limit=100) if a.kind == "offline"]
    assert [a.sensor_id for a in offline] == ["S2"]


def test_records_are_held_to_the_interval_of_the_sites_own_compliance_profile(
    conn: Conn, db_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    make_site(conn, {"S1": "CR"})
    (tmp_path / "strict.toml").write_text(
        'id = "strict-gsp"\nname = "A stricter house rule"\n\n'
        '[rules.record_interval_storage]\nvalue = 600\nunit = "s"\n'
        'text = "stored goods: a record at least every 10 minutes"\nsource = "SOP-17"\n',
        encoding="utf-8",
    )
    conn.execute("UPDATE sites SET compliance_profile = 'strict-gsp'")
    # Every 5 minutes, then 15 minutes without a record: within GSP's 30, not the house's 10.
    _store(conn, "S1", [(m, 5.0, None, None) for m in (0, 5, 10, 25, 30)])
    _move(clock, T0 + 31 * M)
    RulesEngine(db_url, clock=clock).process_pending(conn)
    assert [a for a in find_alarms(conn, limit=100) if a.kind == "record_interval"] == []
    conn.execute("UPDATE ingest_batches SET processed_at = NULL")
    conn.execute("DELETE FROM rules_cursors")
    RulesEngine(db_url, clock=clock, profiles_dir=tmp_path).process_pending(conn)
    [gap] = [a for a in find_alarms(conn, limit=100) if a.kind == "record_interval"]
    assert (gap.started_at, gap.ended_at) == (T0 + 10 * M, T0 + 25 * M)
    assert gap.message == "no record for 15 min, at most 10 min allowed"
