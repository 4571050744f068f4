"""Rules scenarios as data: each ``tests/cases/<name>/case.toml`` names the places, sensors,
profiles, lots and their movements, the readings (published through MQTT to a real ingest
worker, phase by phase, each judged at its own clock time), and what must come of it:
excursions, holds, impacts, budgets. A case marked ``also_shuffled`` runs a second time
with every phase's messages shuffled and sent twice: the outcome must be the same.
"""

from __future__ import annotations

import random
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail.clock import ManualClock
from coldtrail.erp.holds import find_holds
from coldtrail.erp.masterdata import (
    Location,
    assign_sensor,
    upsert_location,
    upsert_sensor,
    upsert_site,
)
from coldtrail.erp.movements import create_shipment, depart, record_movement
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.products import Product, Profile, register_lot, upsert_product, upsert_profile
from coldtrail.messages import Reading, encode_telemetry, telemetry_topic
from coldtrail.mqtt import MqttOptions
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import CapaPolicy, lot_budget
from tests.conftest import (
    QA_PASSWORD,
    T0,
    RunningIngest,
    count_readings,
    ingest_worker,
    publish,
    wait_for,
)

Conn = psycopg.Connection[tuple[Any, ...]]
CASES = Path(__file__).parent / "cases"
M = timedelta(minutes=1)


@dataclass(frozen=True)
class Variant:
    case: Path
    shuffled: bool

    def __str__(self) -> str:
        return self.case.name + ("-shuffled" if self.shuffled else "")


def _variants() -> list[Variant]:
    found = []
    for case in sorted(p.parent for p in CASES.glob("*/case.toml")):
        found.append(Variant(case, shuffled=False))
        if tomllib.loads((case / "case.toml").read_text()).get("also_shuffled"):
            found.append(Variant(case, shuffled=True))
    return found


def _at(minute: float) -> datetime:
    return T0 + minute * M


def _load(conn: Conn, spec: dict[str, Any]) -> dict[str, int]:
    upsert_site(conn, "s1", "Case site")
    create_user(conn, "qa1", "Quinn Auditt", Role.QA, QA_PASSWORD)
    for loc in spec["locations"]:
        upsert_location(
            conn,
            Location(loc["id"], "s1", loc["kind"], loc.get("name", loc["id"]),
                     loc.get("temp_min_c"), loc.get("temp_max_c"), parent_id=loc.get("parent"),
                     area_m2=loc.get("area_m2"), volume_m3=loc.get("volume_m3")),
        )  # fmt: skip
        if "alarm_delay_s" in loc:
            conn.execute(
                "UPDATE locations SET alarm_delay_s = %s WHERE id = %s",
                (loc["alarm_delay_s"], loc["id"]),
            )
    for sensor in spec["sensors"]:
        upsert_sensor(conn, sensor["id"], "xy-md02", f"SN-{sensor['id']}")
        assign_sensor(conn, sensor["id"], sensor["location"], _at(-60))
    for p in spec["profiles"]:
        upsert_profile(conn, "admin", Profile(
            p["id"], p.get("name", p["id"]), p.get("temp_min_c"), p.get("temp_max_c"),
            alarm_delay_s=p.get("alarm_delay_s", 0),
            stability_budget_min=p.get("stability_budget_min"),
            hold_on_excursion=p.get("hold_on_excursion", True),
        ))  # fmt: skip
    for prod in spec["products"]:
        upsert_product(conn, "admin", Product(prod["gtin"], prod["name"], prod["profile"]))
    lots = {}
    for lot in spec["lots"]:
        lots[lot["number"]] = register_lot(conn, "qa1", lot["gtin"], lot["number"]).id
    for ship in spec.get("shipments", []):
        create_shipment(conn, "qa1", ship["id"], ship["vehicle"], "s1", "Customer")
    events = [(m["minute"], 0, m) for m in spec.get("movements", [])]
    events += [
        (s["depart_minute"], 1, s) for s in spec.get("shipments", []) if "depart_minute" in s
    ]
    for minute, what, item in sorted(events, key=lambda e: (e[0], e[1])):
        if what == 1:
            depart(conn, "qa1", item["id"], _at(minute))
            continue
        record_movement(
            conn, "qa1", lots[item["lot"]], item["kind"], item.get("quantity", 10), _at(minute),
            from_location=item.get("from"), to_location=item.get("to"),
            shipment_id=item.get("shipment"),
        )  # fmt: skip
    return lots


def _readings(phase: dict[str, Any]) -> list[Reading]:
    """Segments ``{sensor, from, to, every, value}``; a later segment overrides a minute."""
    values: dict[tuple[str, int], float | None] = {}
    for seg in phase["readings"]:
        for minute in range(seg["from"], seg["to"], seg.get("every", 1)):
            values[(seg["sensor"], minute)] = seg.get("value")
    return [
        Reading(sensor=s, seq=m + 1000, ts=_at(m), temperature_c=v,
                status="ok" if v is not None else "unavailable")
        for (s, m), v in sorted(values.items())
    ]  # fmt: skip


@pytest.mark.parametrize("variant", _variants(), ids=str)
def test_case(
    variant: Variant,
    conn: Conn,
    db_url: str,
    mqtt_options: MqttOptions,
    topic_root: str,
    clock: ManualClock,
) -> None:
    spec = tomllib.loads((variant.case / "case.toml").read_text())
    lots = _load(conn, spec)
    engine = RulesEngine(
        db_url,
        clock=clock,
        capa=CapaPolicy(owner="qa1"),
        late_after=timedelta(minutes=spec.get("late_after_min", 5)),
    )
    rng = random.Random(7)
    stored: set[tuple[str, int]] = set()
    topic = telemetry_topic(topic_root, "s1", "gw-case")
    with RunningIngest(ingest_worker(db_url, mqtt_options, topic_root)):
        for phase in spec["phases"]:
            readings = _readings(phase)
            if "live_every_min" in phase:  # sent as it is measured, judged round by round
                step = phase["live_every_min"]
                by_round: dict[int, list[Reading]] = {}
                for r in readings:
                    by_round.setdefault(int((r.ts - T0) / M) // step, []).append(r)
                plan = [(part, (k + 1) * step) for k, part in sorted(by_round.items())]
            else:  # a backlog, sent at once
                plan = [(readings, phase["judge_at_minute"])]
            for part, judge_at in plan:
                clock.advance((_at(judge_at) - clock.now()).total_seconds())
                stored |= {(r.sensor, r.seq) for r in part}
                _send(mqtt_options, topic, clock.now(), part, variant.shuffled, rng)
                expected = len(stored)
                wait_for(lambda n=expected: count_readings(conn) == n, what="readings stored")
                engine.process_pending(conn)

    expect = spec["expect"]
    numbers = {v: k for k, v in lots.items()}
    excursions = conn.execute(
        "SELECT location_id, started_at, ended_at, late, sensors FROM location_excursions"
        " WHERE state <> 'withdrawn' ORDER BY started_at"
    ).fetchall()
    assert [
        {"location": loc, "start_minute": _minute(s), "end_minute": _minute(e), "late": late,
         "sensors": sensors}
        for loc, s, e, late, sensors in excursions
    ] == expect["excursions"]  # fmt: skip
    held = sorted(numbers[h.lot_id] for h in find_holds(conn, state="open"))
    assert held == sorted(expect["held"])
    impacts = conn.execute(
        "SELECT i.lot_id, i.shipment_id, i.minutes FROM excursion_impacts i"
        " JOIN location_excursions le ON le.id = i.location_excursion_id"
        " WHERE le.state <> 'withdrawn' ORDER BY le.started_at, i.lot_id"
    ).fetchall()
    assert [
        {"lot": numbers[lot], "shipment": ship or "", "minutes": minutes}
        for lot, ship, minutes in impacts
    ] == expect.get("impacts", [])
    for number, used in expect.get("budget_used_min", {}).items():
        assert lot_budget(conn, lots[number]).used_min == used
    exhausted = conn.execute("SELECT lot_id FROM budget_exhaustions ORDER BY lot_id").fetchall()
    assert sorted(numbers[r[0]] for r in exhausted) == sorted(expect.get("budget_exhausted", []))
    capas = conn.execute("SELECT count(*) FROM capas").fetchone()
    assert capas is not None
    assert capas[0] == len([e for e in excursions if _touched(conn, e)])


def _send(
    options: MqttOptions,
    topic: str,
    now: datetime,
    readings: list[Reading],
    shuffled: bool,
    rng: random.Random,
) -> None:
    chunks = [readings[i : i + 50] for i in range(0, len(readings), 50)]
    if shuffled:  # every message twice, in any order, each in any order inside
        chunks = [c[:] for c in chunks] * 2
        for c in chunks:
            rng.shuffle(c)
        rng.shuffle(chunks)
    publish(options, topic, *(encode_telemetry("gw-case", now, c) for c in chunks))


def _minute(at: datetime | None) -> float | None:
    return None if at is None else (at - T0) / M


def _touched(conn: Conn, excursion: tuple[Any, ...]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM excursion_impacts i JOIN location_excursions le"
        " ON le.id = i.location_excursion_id WHERE le.location_id = %s AND le.started_at = %s",
        (excursion[0], excursion[1]),
    ).fetchone()
    return bool(row and row[0])
