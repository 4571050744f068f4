"""The OQ cases of ../shared/COMPLIANCE.md, each one definition that CI runs as a test and a
site runs with ``coldtrail validate oq`` against its installed system.

A case is data (id, requirement, source, procedure, acceptance) and one function that drives
the system on simulated probes and a driven clock, records each acceptance check with what it
observed, and keeps evidence (hashes of the data, excerpts of the trail). A check that fails,
or a case that can not finish, is a deviation; the run goes on with the next case.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import inspect
import io
import itertools
import logging
import secrets
import time
import tomllib
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from coldtrail.clock import ManualClock
from coldtrail.edge.clockcheck import kernel_clock_synced
from coldtrail.erp import audit, chain, changes, kpi
from coldtrail.erp.masterdata import get_location
from coldtrail.erp.people import Role, set_disabled
from coldtrail.erp.signatures import Credentials
from coldtrail.errors import ConfigError, RuleViolation, SignatureRefused
from coldtrail.messages import ClockState
from coldtrail.rules.conditions import Limits
from coldtrail.rules.engine import RulesEngine
from coldtrail.sim.scenarios import CompressorFailure, Scenario, Steady
from coldtrail.validation.harness import (
    CaseFailed,
    Conn,
    Probe,
    Receiver,
    Run,
    Target,
    async_wait_until,
    restored_copy,
    scratch_copy,
    scratch_template,
    seed_site,
    simulated,
    start_time,
    utcnow,
)
from coldtrail.validation.harness import chain as edge_chain

log = logging.getLogger(__name__)
Body = Callable[[Run], Awaitable[None] | None]


ZH = Path(__file__).resolve().parent / "cases_zh.toml"
"""Each case's requirement, procedure and acceptance in Chinese (the pack prints both)."""


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    title_zh: str
    requirement: str
    source: str
    procedure: str
    acceptance: str
    body: Body = field(repr=False, compare=False)

    @property
    def zh(self) -> dict[str, str]:
        return dict(_chinese().get(self.id, {}))


@functools.cache
def _chinese() -> dict[str, dict[str, str]]:
    return tomllib.loads(ZH.read_text("utf-8"))


@dataclass
class Result:
    id: str
    title: str
    title_zh: str
    requirement: str
    source: str
    procedure: str
    acceptance: str
    passed: bool
    checks: list[dict[str, Any]]
    evidence: dict[str, Any]
    error: str | None
    started_at: str
    seconds: float
    zh: dict[str, str] = field(default_factory=dict)
    """The requirement, procedure and acceptance in Chinese."""

    @property
    def deviations(self) -> list[str]:
        found = [f"{c['text']}: observed {c['observed']}" for c in self.checks if not c["passed"]]
        if self.error:
            found.append(self.error)
        return found


CASES: dict[str, Case] = {}


def case(
    id: str,
    title: str,
    title_zh: str,
    *,
    requirement: str,
    source: str,
    procedure: str,
    acceptance: str,
) -> Callable[[Body], Body]:
    def register(body: Body) -> Body:
        CASES[id] = Case(id, title, title_zh, requirement, source, procedure, acceptance, body)
        return body

    return register


def execute(one: Case, run: Run) -> Result:
    """Run one case; whatever goes wrong becomes its deviation, never the run's end."""
    started = utcnow()
    t0 = time.monotonic()
    error: str | None = None
    try:
        outcome = one.body(run)
        if inspect.isawaitable(outcome):
            asyncio.run(_awaited(outcome))
    except CaseFailed as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a case's failure is a deviation, listed whole
        error = f"{type(exc).__name__}: {exc} ({_where(exc)})"
    checks = [asdict(c) for c in run.checks]
    passed = error is None and bool(checks) and all(c["passed"] for c in checks)
    return Result(
        one.id, one.title, one.title_zh, one.requirement, one.source, one.procedure,
        one.acceptance, passed, checks, run.evidence, error, started.isoformat(),
        round(time.monotonic() - t0, 2), one.zh,
    )  # fmt: skip


async def _awaited(outcome: Awaitable[None]) -> None:
    await outcome


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}" if last else "?"


def _gaps_s(rows: list[tuple[Any, ...]]) -> list[float]:
    return [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(rows)]


def _seqs_whole(rows: list[tuple[Any, ...]]) -> bool:
    seqs = [r[0] for r in rows]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False


def _begin(run: Run) -> datetime:
    """The case's driven clock, started a day back on the hour; its start."""
    start = start_time(utcnow())
    run.clock = ManualClock(start)
    return start


def _room_probe(
    run: Run, start: datetime, scenario: Scenario | None = None, *,
    poll_interval_s: float = 60.0, limits: tuple[float, float] | None = None, **place: Any,
) -> Probe:  # fmt: skip
    """A 2-8 °C cold room of 20 m² (or as ``place`` says) with one simulated probe in it;
    the room is the probe's ``location``."""
    room = run.place("CR", **{"area_m2": 20, **place})
    device = simulated(1, scenario or Steady(base_c=5.0), start)
    return Probe(run.probe(room, 1, start), room, device, poll_interval_s, limits)


def _judged(run: Run) -> None:
    """The rules engine judges what ingest stored, on a connection of its own."""
    with psycopg.connect(run.database_url, autocommit=True) as rules_conn:
        _engine(run).process_pending(rules_conn)


def _engine(run: Run, **kw: Any) -> RulesEngine:
    return RulesEngine(run.database_url, clock=run.clock, notifiers=run.target.notifiers, **kw)


# ----------------------------------------------------------------------------- OQ-01


@case(
    "OQ-01", "Refresh and storage interval", "刷新与存储间隔",
    requirement="Each probe is read at least every minute and a record is stored at least as "
    "often as the profile's storage interval; none is lost or stored twice.",
    source="profile rule record_interval_storage (China drug GSP annex: 30 min; refresh 1 min)",
    procedure="A cold room with two simulated probes read every 60 s by the edge agent over "
    "Modbus TCP, published over MQTT and stored by ingest, for 2 hours of driven clock; the "
    "record completeness KPI over the same 2 hours by the profile's interval.",
    acceptance="120 readings per probe with sequence numbers whole, none twice; no interval "
    "between stored readings over 60 s; completeness 100 %.",
)  # fmt: skip
async def storage_interval(run: Run) -> None:
    start = _begin(run)
    room = run.place("CR", area_m2=40)
    probes = [
        Probe(run.probe(room, n, start), room, simulated(n, Steady(base_c=4.0 + n), start))
        for n in (1, 2)
    ]
    async with edge_chain(run, probes) as c:
        await c.poll(120, 60)
        await c.delivered({p.sensor: 120 for p in probes})
    storage_s = int(run.rule_value("record_interval_storage", 1800))
    for p in probes:
        rows = run.readings(p.sensor)
        gaps = _gaps_s(rows)
        run.expect(len(rows) == 120, f"{p.sensor}: 120 readings stored", len(rows))
        run.expect(_seqs_whole(rows), f"{p.sensor}: sequence numbers whole, none twice",
                   f"{rows[0][0] if rows else '-'}..{rows[-1][0] if rows else '-'}")  # fmt: skip
        run.expect(bool(gaps) and max(gaps) <= 60, f"{p.sensor}: every interval at most 60 s",
                   f"largest {max(gaps, default=0):g} s")  # fmt: skip
        run.expect(bool(gaps) and max(gaps) <= storage_s,
                   f"{p.sensor}: every interval within the profile's {storage_s} s",
                   f"largest {max(gaps, default=0):g} s")  # fmt: skip
    [line] = kpi.record_completeness(
        run.conn, start, start + timedelta(hours=2), [room], storage_s=storage_s
    )
    run.expect(line.intervals_recorded == line.intervals_expected,
               f"completeness by {storage_s} s intervals is 100 %",
               f"{line.intervals_recorded} of {line.intervals_expected}")  # fmt: skip
    run.keep("readings_sha256", run.data_hash())
    run.keep("readings", {p.sensor: len(run.readings(p.sensor)) for p in probes})


# ----------------------------------------------------------------------------- OQ-02


@case(
    "OQ-02", "Transport interval through a network outage", "网络中断期间的运输记录间隔",
    requirement="In transport a record is kept at least every transport interval, and a loss "
    "of the vehicle's network leaves no gap and no duplicate once it is back.",
    source="profile rule record_interval_transport (China drug GSP annex: 5 min)",
    procedure="A vehicle compartment with one probe read every 60 s; the gateway's link to the "
    "broker is cut (connections reset, reconnects refused) after 30 min for 60 min of driven "
    "clock while reading goes on, then restored; 30 min more.",
    acceptance="The edge holds the readings of the outage and delivers them after it; 120 "
    "readings stored, sequence whole, none twice, in time order; no interval over the profile's "
    "transport interval.",
)  # fmt: skip
async def transport_outage(run: Run) -> None:
    start = _begin(run)
    truck = run.place("TRK", kind="vehicle", low=None, high=None, volume_m3=12)  # type: ignore[arg-type]
    box = run.place("TC", kind="compartment", parent_id=truck, volume_m3=12)
    probe = Probe(run.probe(box, 1, start), box, simulated(1, Steady(base_c=5.0), start))
    async with edge_chain(run, [probe]) as c:
        await c.poll(30, 60)
        await c.delivered({probe.sensor: 30})
        c.relay.set_up(False)
        await c.poll(60, 60)
        held = len(c.agent.queue)
        stored_during = c.stored(probe.sensor)
        c.relay.set_up(True)
        await c.poll(30, 60)
        await c.delivered({probe.sensor: 120})
    rows = run.readings(probe.sensor)
    transport_s = run.rule_value("record_interval_transport", 300)
    gaps = _gaps_s(rows)
    run.expect(held >= 60, "the edge held the outage's readings", f"{held} queued")
    run.expect(stored_during == 30, "nothing reached the database during the outage",
               f"{stored_during} stored")  # fmt: skip
    run.expect(len(rows) == 120, "120 readings stored after the outage", len(rows))
    run.expect(_seqs_whole(rows), "sequence whole, none twice, in time order",
               [r[0] for r in rows[28:33]])  # fmt: skip
    largest = max(gaps, default=0)
    run.expect(bool(gaps) and largest <= transport_s,
               f"no interval over the profile's {transport_s:g} s",
               f"largest {largest:g} s")  # fmt: skip
    run.keep("readings_sha256", run.data_hash())
    run.keep("outage", {"minutes": 60, "queued_at_end": held})


# ----------------------------------------------------------------------------- OQ-03


class _Until:
    """The driven clock, for a coordinator left to pace itself: ends its run at ``end``."""

    def __init__(self, clock: ManualClock, end: datetime, stop: asyncio.Event) -> None:
        self._clock, self._end, self._stop = clock, end, stop

    def now(self) -> datetime:
        return self._clock.now()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        self._clock.advance(seconds)
        if self._clock.now() >= self._end:
            self._stop.set()
        await asyncio.sleep(0)


@case(
    "OQ-03", "Two-minute interval while out of range", "超限期间每2分钟记录",
    requirement="While a value is out of range a record is kept at least every out-of-range "
    "interval, whatever the normal cadence, and the excursion is raised.",
    source="profile rule record_interval_out_of_range (China drug GSP annex: 2 min)",
    procedure="A probe read every 10 min by its own cadence; its cooling fails after 20 min "
    "(towards 25 °C) and recovers at 40 min; the edge paces itself on the driven clock for "
    "90 min; the rules engine judges what was stored.",
    acceptance="Every interval that follows an out-of-range reading is at most the profile's "
    "out-of-range interval, the others 10 min; an excursion alarm for the place.",
)  # fmt: skip
async def out_of_range_interval(run: Run) -> None:
    start = _begin(run)
    scenario = CompressorFailure(
        base_c=5.0, ambient_c=25.0, fail_at_s=1200, warm_tau_s=300, recover_at_s=2400,
        cool_tau_s=60,
    )  # fmt: skip
    probe = _room_probe(run, start, scenario, poll_interval_s=600, limits=(2.0, 8.0))
    room = probe.location
    limit_s = run.rule_value("record_interval_out_of_range", 120)
    stop = asyncio.Event()
    paced = _Until(run.clock, start + timedelta(minutes=90), stop)
    async with edge_chain(run, [probe], clock=paced) as c:
        [coordinator] = c.agent.coordinators
        await coordinator.run(stop)
        rows_expected = len(c.agent.queue) + c.stored(probe.sensor)
        await c.delivered({probe.sensor: rows_expected})
    rows = run.readings(probe.sensor)
    wrong = []
    for a, b in itertools.pairwise(rows):
        out = a[2] is not None and not 2.0 <= a[2] <= 8.0
        gap = (b[1] - a[1]).total_seconds()
        if (out and gap > limit_s) or (not out and gap != 600):
            wrong.append(f"{a[1]:%H:%M} {a[2]} °C then {gap:g} s")
    outs = [r for r in rows if r[2] is not None and not 2.0 <= r[2] <= 8.0]
    run.expect(len(outs) >= 5, "the probe went out of range", f"{len(outs)} readings out")
    run.expect(not wrong, f"out of range: at most {limit_s:g} s between records; else 600 s",
               "; ".join(wrong[:3]) or f"{len(rows)} readings, all as required")  # fmt: skip
    _judged(run)
    alarms = run.conn.execute(
        "SELECT id, started_at, ended_at FROM alarms WHERE kind = 'excursion' AND location_id = %s",
        (room,),
    ).fetchall()
    run.expect(len(alarms) == 1, "one excursion alarm for the place", len(alarms))
    run.keep("readings_sha256", run.data_hash())
    run.keep("intervals_s", sorted({g for g in _gaps_s(rows)}))


# ----------------------------------------------------------------------------- OQ-04


@case(
    "OQ-04", "Alarm to the named people within the delay", "报警在延迟时间内通知指定人员",
    requirement="An excursion that lasts the alarm delay reaches every named contact of the "
    "site, at least as many as the profile requires, once the delay has passed and not before.",
    source="profile rule alarm_contacts (China drug GSP annex: 3 people by SMS or similar)",
    procedure="A cold room with a 5-minute alarm delay; its probe reads 5 °C for 10 min, then "
    "12 °C; each minute the edge reads, ingest stores and the rules engine and its alarm desk "
    "run on the driven clock, until the contacts were called or 30 min passed.",
    acceptance="No call before the delay; every level-0 contact of the site called within one "
    "reading interval and one desk pass after the delay; at least the profile's number of them.",
)  # fmt: skip
async def alarm_contacts(run: Run) -> None:
    start = _begin(run)
    delay_s = 300
    scenario = CompressorFailure(base_c=5.0, ambient_c=12.0, fail_at_s=600, warm_tau_s=1,
                                 recover_at_s=None)  # fmt: skip
    probe = _room_probe(run, start, scenario, alarm_delay_s=delay_s)
    room = probe.location
    contacts = run.conn.execute(
        "SELECT id, name FROM alarm_contacts WHERE level = 0 "
        "AND (site_id = %s OR site_id IS NULL) "
        "AND (kinds IS NULL OR 'excursion' = ANY(kinds::text[])) ORDER BY id",
        (run.target.site,),
    ).fetchall()
    required = int(run.rule_value("alarm_contacts", 1))
    run.expect(len(contacts) >= required,
               f"at least {required} named contacts for the site (profile {run.profile.id})",
               f"{len(contacts)}: {', '.join(n for _, n in contacts) or 'none'}")  # fmt: skip
    engine = _engine(run)
    called_at: datetime | None = None
    early = 0
    async with edge_chain(run, [probe]) as c:
        with psycopg.connect(run.database_url, autocommit=True) as rules_conn:
            for minute in range(1, 31):
                await c.poll(1, 60)
                await c.delivered({probe.sensor: minute})
                engine.tick(rules_conn)
                sent = _calls(run, room)
                if sent and called_at is None:
                    called_at = run.clock.now()
                    if called_at < start + timedelta(seconds=600 + delay_s):
                        early = len(sent)
                if called_at is not None and len(sent) >= len(contacts):
                    break
    sent = _calls(run, room)
    run.expect(early == 0, "no call before the delay ran out", f"{early} early")
    due = start + timedelta(seconds=600 + delay_s)
    run.expect(called_at is not None and called_at <= due + timedelta(seconds=120),
               "called within a reading interval and a desk pass of the delay",
               f"first call at +{(called_at - due).total_seconds():g} s after the delay"
               if called_at else "no call")  # fmt: skip
    reached = {name for name, _ in sent}
    missing = [n for _, n in contacts if n not in reached]
    run.expect(bool(contacts) and not missing, "every named contact reached",
               f"reached {sorted(reached)}; missing {missing}")  # fmt: skip
    if run.target.scratch and run.receiver is not None:
        bodies = [
            b for _, b in run.receiver.received
            if b.get("location") == room and b.get("kind") == "excursion"
        ]  # fmt: skip
        run.expect(len(bodies) >= len(contacts), "each call's text names the place",
                   f"{len(bodies)} received naming {room}")  # fmt: skip
        fields = ("alarm", "kind", "location", "message")
        run.keep("calls_received", [{k: b.get(k) for k in fields} for b in bodies[:3]])
    run.keep("calls", [{"contact": n, "sent_at": t.isoformat()} for n, t in sent])


def _calls(run: Run, room: str) -> list[tuple[str, datetime]]:
    return [
        (r[0], r[1])
        for r in run.conn.execute(
            "SELECT c.name, n.sent_at FROM alarm_notifications n "
            "JOIN alarm_contacts c ON c.id = n.contact_id JOIN alarms a ON a.id = n.alarm_id "
            "WHERE a.location_id = %s AND a.kind = 'excursion' AND n.sent_at IS NOT NULL "
            "ORDER BY n.sent_at, c.id",
            (room,),
        )
    ]


# ----------------------------------------------------------------------------- OQ-05


@case(
    "OQ-05", "Power loss: alarm, no missing record", "断电：报警且无记录缺失",
    requirement="A logger losing power is recorded as not answering and raises an alarm; a "
    "gateway losing power keeps what it had read and sends it when it is back.",
    source="China drug GSP annex (power failure alarm, records kept through it); "
    "COMPLIANCE.md OQ-05",
    procedure="A probe reads every 60 s; its logger loses power for 10 min (no answer on the "
    "bus); later the gateway's link is lost and the gateway stops with 15 unsent readings; a "
    "new edge process starts on the same state directory and the link comes back.",
    acceptance="The logger's silence stored as readings marked unavailable and an alarm of kind "
    "unavailable; every reading the stopped gateway held delivered after its restart, sequence "
    "whole, none twice.",
)  # fmt: skip
async def power_loss(run: Run) -> None:
    start = _begin(run)
    probe = _room_probe(run, start)
    device = probe.device
    state = run.target.workdir / f"{run.prefix}-edge"
    async with edge_chain(run, [probe], state_dir=state) as c:
        await c.poll(10, 60)
        device.offline = True
        await c.poll(10, 60)
        device.offline = False
        await c.poll(10, 60)
        await c.delivered({probe.sensor: 30})
        c.relay.set_up(False)
        await c.poll(15, 60)
        held = len(c.agent.queue)
    async with edge_chain(run, [probe], state_dir=state) as c:
        await c.poll(5, 60)
        await c.delivered({probe.sensor: 50})
    rows = run.readings(probe.sensor)
    dark = [r for r in rows if r[3] == "unavailable"]
    run.expect(len(dark) == 10, "the logger's 10 minutes without power stored as unavailable",
               f"{len(dark)} unavailable readings")  # fmt: skip
    _judged(run)
    alarms = run.conn.execute(
        "SELECT started_at, ended_at FROM alarms WHERE kind = 'unavailable' AND sensor_id = %s",
        (probe.sensor,),
    ).fetchall()
    run.expect(len(alarms) == 1, "one alarm of kind unavailable for the probe",
               _spans(alarms))  # fmt: skip
    run.expect(held == 15, "the gateway stopped holding 15 unsent readings", held)
    run.expect(len(rows) == 50 and _seqs_whole(rows),
               "all 50 readings stored after the restart, sequence whole, none twice",
               _seq_span(rows))  # fmt: skip
    run.keep("readings_sha256", run.data_hash())


# ----------------------------------------------------------------------------- OQ-06


@case(
    "OQ-06", "Probe or gateway silent: alarm, gap shown, never interpolated",
    "探头或网关无响应：报警、显示缺口、绝不插值",
    requirement="A gateway that goes silent raises an alarm; the record shows the gap as a gap "
    "and invents no value in it.",
    source="China drug GSP annex (data continuity); WHO TRS 961 Annex 9; COMPLIANCE.md OQ-06",
    procedure="A probe reads every 60 s for 30 min; the gateway then sends nothing for 40 min "
    "while the rules engine's timers run; it comes back for 20 min. The place's record is "
    "built for the 90 minutes.",
    acceptance="An offline alarm raised during the silence and ended when the probe is heard "
    "again; the record lists one gap of about 40 min; no reading stored inside it; the "
    "record's CSV has no row inside it.",
)  # fmt: skip
async def silent_gateway(run: Run) -> None:
    from coldtrail.api.record import build, render

    start = _begin(run)
    probe = _room_probe(run, start)
    room = probe.location
    engine = _engine(run, limits=Limits(offline_after_s=600), timers_every_s=60)
    async with edge_chain(run, [probe]) as c:
        with psycopg.connect(run.database_url, autocommit=True) as rules_conn:
            await c.poll(30, 60)
            await c.delivered({probe.sensor: 30})
            engine.tick(rules_conn)
            for _ in range(40):  # silence: the clock moves, nothing is read
                run.clock.advance(60)
                engine.tick(rules_conn)
            raised = _offline(run, probe.sensor)
            await c.poll(20, 60)
            await c.delivered({probe.sensor: 50})
            run.clock.advance(60)
            engine.tick(rules_conn)
    ended = _offline(run, probe.sensor)
    run.expect(len(raised) == 1 and raised[0][1] is None, "an offline alarm during the silence",
               _spans(raised))  # fmt: skip
    run.expect(len(ended) == 1 and ended[0][1] is not None, "the alarm ended when heard again",
               _spans(ended))  # fmt: skip
    silence_start = start + timedelta(minutes=29)
    silence_end = start + timedelta(minutes=70)
    inside = run.conn.execute(
        "SELECT count(*) FROM readings WHERE sensor_id = %s AND ts > %s AND ts < %s",
        (probe.sensor, silence_start, silence_end),
    ).fetchone()
    run.expect(inside is not None and inside[0] == 0, "no reading stored inside the silence",
               inside[0] if inside else None)  # fmt: skip
    record = build.location_record(run.conn, room, start, start + timedelta(minutes=90), utcnow())
    gaps = [g for g in record.gaps if g.duration_s >= 30 * 60]
    run.expect(len(gaps) == 1 and 40 * 60 <= gaps[0].duration_s <= 42 * 60,
               "the record shows one gap of about 40 min",
               [f"{g.start:%H:%M}-{g.end:%H:%M} ({g.duration_s / 60:g} min)"
                for g in gaps])  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(render(record, "csv").decode())))
    times = [datetime.fromisoformat(r["measured_at"]) for r in rows]
    in_gap = [t for t in times if silence_start < t < silence_end]
    run.expect(len(times) == 50 and not in_gap, "the record's CSV has no row inside the gap",
               f"{len(times)} rows, {len(in_gap)} inside")  # fmt: skip
    run.keep("record_data_sha256", record.data_sha256)
    run.keep("gap", [{"start": g.start.isoformat(), "end": g.end.isoformat()} for g in gaps])


def _seq_span(rows: list[tuple[Any, ...]]) -> str:
    return f"{len(rows)} stored, seq {rows[0][0]}..{rows[-1][0]}" if rows else "none stored"


def _spans(rows: list[tuple[Any, ...]]) -> list[str]:
    return [f"{a:%H:%M}-{b:%H:%M}" if b else f"{a:%H:%M}-" for a, b in rows]


def _offline(run: Run, sensor: str) -> list[tuple[Any, ...]]:
    return run.conn.execute(
        "SELECT started_at, ended_at FROM alarms WHERE kind = 'offline' AND sensor_id = %s",
        (sensor,),
    ).fetchall()


# ----------------------------------------------------------------------------- OQ-07


@case(
    "OQ-07", "No edit, delete or import of records; the chains verify",
    "记录不可修改、删除或导入；哈希链校验通过",
    requirement="No reading can be edited, deleted, imported or offset through the user "
    "interface, the API or the application's database role; any change made around them is "
    "found by verification.",
    source="21 CFR 11.10(a),(e); EU GMP Annex 11 §9; China drug GSP (records not alterable)",
    procedure="Readings stored through the chain; the API's routes listed for any way to write "
    "or remove readings; UPDATE, DELETE and TRUNCATE tried on the readings and the audit trail "
    "as the application's role; the readings' and the audit trail's chains verified; on a "
    "scratch database a superuser then changes one value and verification is run again.",
    acceptance="No such route; every write refused by the database; both chains verify; the "
    "superuser's change named by the readings' verification.",
)  # fmt: skip
async def no_edit(run: Run) -> None:
    start = _begin(run)
    probe = _room_probe(run, start)
    async with edge_chain(run, [probe]) as c:
        await c.poll(10, 60)
        await c.delivered({probe.sensor: 10})
    writes = _reading_routes()
    run.expect(not writes, "no API route writes, imports or removes readings", writes or "none")
    for stmt in (
        "UPDATE readings SET temperature_c = temperature_c + 1 WHERE sensor_id = %(s)s",
        "UPDATE readings SET ts = ts + interval '1 minute' WHERE sensor_id = %(s)s",
        "DELETE FROM readings WHERE sensor_id = %(s)s",
        "TRUNCATE readings",
        "UPDATE audit_log SET actor = 'someone' WHERE id = (SELECT max(id) FROM audit_log)",
        "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)",
    ):
        refused = _as_app(run, stmt, {"s": probe.sensor})
        what = stmt.split(" WHERE")[0]
        run.expect(refused is not None, f"refused to the application's role: {what}",
                   refused or "it went through")  # fmt: skip
    readings = chain.verify_readings(run.conn)
    trail = audit.verify(run.conn)
    run.expect(readings.ok, "the readings' chain verifies",
               f"{readings.readings} readings in {readings.links} links; "
               f"{readings.reason or 'intact'}")  # fmt: skip
    run.expect(trail.ok, "the audit trail's chain verifies",
               f"{trail.rows} rows; {trail.reason or 'intact'}")  # fmt: skip
    run.keep("readings_head", readings.head)
    run.keep("audit_head", trail.head)
    if run.target.scratch:
        with run.conn.transaction():
            run.conn.execute("SET LOCAL session_replication_role = replica")
            run.conn.execute(
                "UPDATE readings SET temperature_c = temperature_c + 0.5 "
                "WHERE sensor_id = %s AND seq = 5",
                (probe.sensor,),
            )
        after = chain.verify_readings(run.conn)
        run.expect(not after.ok and any(probe.sensor in f for f in after.findings),
                   "a superuser's change to one reading is named by verification",
                   (after.findings or [str(after.reason)])[:1])  # fmt: skip


def _reading_routes() -> list[str]:
    from coldtrail.api.app import ApiConfig, create_app

    # Only its routes are read: the app is built, never started (its pool stays closed).
    config = ApiConfig(database_url="postgresql:///unused", secret_key=secrets.token_hex(32))
    app = create_app(config)
    found = []
    for path, item in app.openapi().get("paths", {}).items():
        for method in item:
            if method in ("put", "patch", "delete", "post") and "reading" in path:
                found.append(f"{method.upper()} {path}")
    return found


def _as_app(run: Run, stmt: str, params: dict[str, Any]) -> str | None:
    """The database's refusal, or None if the application's role could do it."""
    try:
        # Rolled back whatever happens: a write that went through must not stay.
        with run.conn.transaction(force_rollback=True):
            run.conn.execute("SET LOCAL ROLE coldtrail_app")
            # Checks deferred to commit (a change's signature) run now: there is no commit.
            run.conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
            run.conn.execute(stmt, params)
    except psycopg.Error as exc:
        return (exc.diag.message_primary or str(exc)).splitlines()[0]
    return None


# ----------------------------------------------------------------------------- OQ-08


@case(
    "OQ-08", "Only QA changes a limit, with a reason, in the trail",
    "仅QA可修改限值、需说明理由并记入审计追踪",
    requirement="A place's range changes only by QA, with a reason and an e-signature; every "
    "other way is refused and the refusal is recorded; the change keeps before and after.",
    source="21 CFR 11.10(d),(e),(k); EU GMP Annex 11 §10, §12; China drug GSP (access control)",
    procedure="A cold room at 2-8 °C; people of each role made for the case. An administrator "
    "and a logistics user try to sign a change of its upper limit to 7.5 °C; QA tries without "
    "a reason and with a wrong password; the application's database role updates the limit "
    "directly; then QA signs the change with a reason.",
    acceptance="Every attempt but the last refused, the refused signatures in the audit trail; "
    "the range unchanged until QA signs; then 2-7.5 °C, one change listed with before, after, "
    "reason and QA's signature, and the trail naming QA as the one who changed the place.",
)  # fmt: skip
def limit_change(run: Run) -> None:
    start = utcnow()
    room = run.place("CR", area_m2=20)
    people_made = {role: run.person(role) for role in (Role.ADMIN, Role.LOGISTICS, Role.QA)}
    tries = [
        ("an administrator", people_made[Role.ADMIN], "range re-mapped"),
        ("a logistics user", people_made[Role.LOGISTICS], "range re-mapped"),
        ("QA without a reason", people_made[Role.QA], "  "),
        ("QA with a wrong password",
         Credentials(people_made[Role.QA].username, "not-the-password"), "range re-mapped"),
    ]  # fmt: skip
    for who, credentials, reason in tries:
        try:
            changes.change(
                run.conn, credentials.username, "location", room, {"temp_max_c": 7.5},
                credentials=credentials, meaning="approval", reason=reason, at=start,
            )  # fmt: skip
        except (SignatureRefused, RuleViolation) as exc:
            run.expect(True, f"refused to {who}", str(exc))
        else:
            run.expect(False, f"refused to {who}", "the change went through")
    refused = _as_app(run, "UPDATE locations SET temp_max_c = 7.5 WHERE id = %(s)s", {"s": room})
    run.expect(refused is not None, "refused to the application's role without a signed change",
               refused or "it went through")  # fmt: skip
    place = get_location(run.conn, room)
    run.expect(place is not None and place.temp_max_c == 8.0, "the range unchanged so far",
               place and f"{place.temp_min_c}..{place.temp_max_c} °C")  # fmt: skip
    failed = [e for e in audit.latest(run.conn, actor=None, since=start, limit=50)
              if e.action == "signature_failed"]  # fmt: skip
    run.expect(len(failed) >= 3, "the refused signatures are in the audit trail",
               f"{len(failed)} signature_failed entries")  # fmt: skip
    qa = people_made[Role.QA]
    done = changes.change(
        run.conn, qa.username, "location", room, {"temp_max_c": 7.5}, credentials=qa,
        meaning="approval", reason="re-mapped: the warm spot by the door reads 7.6 °C", at=start,
    )  # fmt: skip
    place = get_location(run.conn, room)
    run.expect(place is not None and (place.temp_min_c, place.temp_max_c) == (2.0, 7.5),
               "QA's signed change applied",
               place and f"{place.temp_min_c}..{place.temp_max_c} °C")  # fmt: skip
    listed = [c for c in changes.list_changes(run.conn, since=start - timedelta(seconds=1))
              if c.subject_id == room]  # fmt: skip
    ok = (
        len(listed) == 1
        and listed[0].changed == {"temp_max_c": (8.0, 7.5)}
        and [s.signer for s in listed[0].signatures] == [qa.username]
        and listed[0].reason.startswith("re-mapped")
    )
    run.expect(ok, "one change listed with before, after, reason and QA's signature",
               [(c.changed, c.reason, [g.signer for g in c.signatures])
                for c in listed])  # fmt: skip
    trail = audit.latest(run.conn, record_type="locations", record_id=room, limit=1)
    run.expect(bool(trail) and trail[0].actor == qa.username,
               "the trail names QA as the one who changed the place",
               trail[0].actor if trail else "no entry")  # fmt: skip
    run.keep("change", {"id": done.id, "signature": done.signatures[0].record_digest,
                        "changed": {k: list(v) for k, v in done.changed.items()}})  # fmt: skip


# ----------------------------------------------------------------------------- OQ-09


@case(
    "OQ-09", "Backup and restore into a clean instance, hashes equal",
    "备份并恢复至全新实例，哈希值一致",
    requirement="A backup restores into a clean database with every record whole: the same "
    "record data hash, the same chain heads, both chains verifying.",
    source="EU GMP Annex 11 §7.2 (backups checked for restorability); WHO TRS 1019 Annex 3 "
    "App. 5; COMPLIANCE.md OQ-09",
    procedure="Readings stored through the chain and a signed change made; the place's record "
    "built; the database backed up with pg_dump (custom format) and restored with pg_restore "
    "into a new, empty database on the same server (TimescaleDB: between its pre- and "
    "post-restore calls); the record built and both chains verified there.",
    acceptance="The restore finishes; the record's data SHA-256, the readings' and the audit "
    "trail's chain heads and the row counts are equal to the original's; both chains verify "
    "on the restored database.",
)  # fmt: skip
async def backup_restore(run: Run) -> None:
    from coldtrail.api.record import build

    start = _begin(run)
    probe = _room_probe(run, start)
    room = probe.location
    async with edge_chain(run, [probe]) as c:
        await c.poll(30, 60)
        await c.delivered({probe.sensor: 30})
    end = start + timedelta(minutes=30)
    qa = run.person(Role.QA)
    changes.change(run.conn, qa.username, "location", room, {"alarm_delay_s": 300},
                   credentials=qa, meaning="approval", reason="OQ-09: a signed record",
                   at=end)  # fmt: skip
    before = _fingerprint(run.conn, room, start, end, build)
    with restored_copy(run) as (url, seconds), psycopg.connect(url, autocommit=True) as copy:
        after = _fingerprint(copy, room, start, end, build)
        readings = chain.verify_readings(copy)
        trail = audit.verify(copy)
    run.keep("restore_seconds", seconds)
    for key, text in (
        ("record_sha256", "the record's data SHA-256"),
        ("readings_head", "the readings' chain head"),
        ("audit_head", "the audit trail's chain head"),
        ("rows", "rows of readings, links, trail, signatures, changes"),
    ):
        run.expect(after[key] == before[key], f"{text} equal after the restore",
                   f"{before[key]} / {after[key]}")  # fmt: skip
    run.expect(readings.ok and trail.ok, "both chains verify on the restored database",
               f"readings {readings.reason or 'intact'}; "
               f"trail {trail.reason or 'intact'}")  # fmt: skip
    run.keep("fingerprint", before)


def _fingerprint(
    conn: Conn, room: str, start: datetime, end: datetime, build: Any
) -> dict[str, Any]:
    record = build.location_record(conn, room, start, end, end)
    rows = conn.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM reading_chain), "
        "(SELECT count(*) FROM audit_log), (SELECT count(*) FROM signatures), "
        "(SELECT count(*) FROM changes)"
    ).fetchone()
    return {
        "record_sha256": record.data_sha256,
        "readings_head": chain.verify_readings(conn).head,
        "audit_head": audit.verify(conn).head,
        "rows": list(rows) if rows else [],
    }


# ----------------------------------------------------------------------------- OQ-10


@case(
    "OQ-10", "Gateway clock skewed: flagged, times in order",
    "网关时钟偏差：标记并保持时间顺序",
    requirement="Readings taken on a gateway clock that lost its time are flagged and kept out "
    "of the record, never placed at a wrong time; once the clock is right readings are stored "
    "in order again.",
    source="EU GMP Annex 11 §12.4 (time stamps); China drug GSP annex (system time); "
    "COMPLIANCE.md OQ-10",
    procedure="A gateway whose clock reads 2000-01-01 reads a probe 10 times; its clock is then "
    "set right and it reads 10 times more.",
    acceptance="The 10 readings of the wrong clock marked implausible and kept aside (not in "
    "the readings) with the rule that kept them; the 10 after the correction stored, marked "
    "as the kernel's synchronisation says, in time and sequence order.",
)  # fmt: skip
async def clock_skew(run: Run) -> None:
    real_start = start_time(utcnow())
    run.clock = ManualClock(datetime(2000, 1, 1, tzinfo=real_start.tzinfo))
    room = run.place("CR", area_m2=20)
    sensor = run.probe(room, 1, real_start)
    probe = Probe(sensor, room, simulated(1, Steady(base_c=5.0), real_start))
    async with edge_chain(run, [probe]) as c:
        await c.poll(10, 60)
        c.agent.publisher.wake()
        await _kept_aside(run, sensor, 10)
        run.clock.advance((real_start - run.clock.now()).total_seconds())
        await c.poll(10, 60)
        await c.delivered({sensor: 10})
    aside = run.conn.execute(
        "SELECT clock::text, reason, ts FROM quarantined_readings WHERE sensor_id = %s "
        "ORDER BY seq",
        (sensor,),
    ).fetchall()
    run.expect(len(aside) == 10 and all(a[0] == "implausible" for a in aside),
               "the wrong clock's readings marked implausible and kept aside",
               f"{len(aside)} kept aside, marked {sorted({a[0] for a in aside})}, "
               f"rule {sorted({a[1] for a in aside})}")  # fmt: skip
    rows = run.conn.execute(
        "SELECT seq, ts, clock::text FROM readings WHERE sensor_id = %s ORDER BY ts", (sensor,)
    ).fetchall()
    synced = kernel_clock_synced()
    want = ClockState.OK.value if synced is not False else ClockState.UNSYNCED.value
    run.expect(len(rows) == 10 and all(r[1] >= real_start for r in rows),
               "only the readings on the right clock stored, none at a wrong time",
               f"{len(rows)} stored from {rows[0][1]:%Y-%m-%d %H:%M}" if rows else "none",
    )  # fmt: skip
    run.expect([r[0] for r in rows] == sorted(r[0] for r in rows) == list(range(11, 21)),
               "in time and sequence order", [r[0] for r in rows])  # fmt: skip
    run.expect(all(r[2] == want for r in rows), f"marked as the kernel's clock stands ({want})",
               sorted({r[2] for r in rows}))  # fmt: skip
    run.keep("kept_aside", len(aside))


async def _kept_aside(run: Run, sensor: str, n: int) -> None:
    def count() -> int:
        row = run.conn.execute(
            "SELECT count(*) FROM quarantined_readings WHERE sensor_id = %s", (sensor,)
        ).fetchone()
        return int(row[0]) if row else 0

    await async_wait_until(lambda: count() >= n, 30, f"{n} readings kept aside")


# ----------------------------------------------------------------------------- running


def selected(ids: list[str] | None) -> list[Case]:
    if not ids:
        return list(CASES.values())
    unknown = [i for i in ids if i not in CASES]
    if unknown:
        raise ConfigError(f"no OQ case {', '.join(unknown)}; known: {', '.join(CASES)}")
    return [CASES[i] for i in ids]


def target_summary(target: Target) -> dict[str, Any]:
    return {
        "site": target.site,
        "profile": target.profile.id,
        "scratch_database": target.scratch,
        "topic_root": target.topic_root,
    }


def run_cases(
    target: Target,
    ids: list[str] | None = None,
    template: str | None = None,
    report: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run the cases on ``target``: each on a scratch database of its own (copied from
    ``template``, or from one migrated for the run) or, on the operator's database, side by
    side under names of their own."""
    cases = selected(ids)
    results: list[Result] = []
    with Receiver() as receiver:
        if target.scratch:
            assert target.admin_url is not None  # noqa: S101 - a scratch target names its server
            with contextlib.ExitStack() as stack:
                if template is None:
                    template = stack.enter_context(scratch_template(target.admin_url))
                for one in cases:
                    with (
                        scratch_copy(target.admin_url, template) as url,
                        psycopg.connect(url, autocommit=True) as conn,
                    ):
                        seed_site(conn, target, receiver)
                        results.append(execute(one, _run(target, one, url, conn, receiver)))
                    if report is not None:
                        report(results[-1])
        else:
            with psycopg.connect(target.database_url, autocommit=True) as conn:
                for one in cases:
                    run = _run(target, one, target.database_url, conn, None)
                    results.append(execute(one, run))
                    _retire(conn, run)
                    if report is not None:
                        report(results[-1])
    return results


def _run(target: Target, one: Case, url: str, conn: Conn, receiver: Receiver | None) -> Run:
    tag = uuid.uuid4().hex[:6]
    prefix = f"{one.id.replace('-', '')}-{tag}"
    return Run(target, one.id, url, conn, ManualClock(utcnow()), prefix, receiver=receiver)


def _retire(conn: Conn, run: Run) -> None:
    """On the operator's database a case's probes stop being expected to report when it
    ends, so the next case's timers do not call them silent, and the people it made can no
    longer sign in (whether the case passed or not)."""
    with conn.transaction():
        conn.execute(
            "UPDATE sensor_assignments SET valid = tstzrange(lower(valid), greatest(lower(valid), "
            "%s)) WHERE sensor_id = ANY(%s) AND upper_inf(valid)",
            (run.clock.now(), run.sensors),
        )
    for name in run.people:
        try:
            set_disabled(conn, name, True, "oq")
        except RuleViolation as exc:  # the database's only administrator stays enabled
            log.warning("OQ user %s left enabled: %s", name, exc)
