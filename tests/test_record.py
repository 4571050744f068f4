"""The continuous record of a shipment and of a location: four forms, the same numbers."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import psycopg
import pypdf
import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pytest

from coldtrail.api import record as rec
from coldtrail.api.models import RecordOut
from coldtrail.api.record.build import shipment_record
from coldtrail.api.record.forms import lot_class
from coldtrail.clock import ManualClock
from coldtrail.erp.masterdata import Location, assign_sensor, upsert_location, upsert_sensor
from coldtrail.erp.movements import arrive, create_shipment, depart, record_movement
from coldtrail.erp.products import register_lot
from coldtrail.rules.engine import RulesEngine
from coldtrail.rules.impact import CapaPolicy
from coldtrail.rules.mkt import weighted_mkt, weights
from tests.conftest import (
    GTIN,
    QA_PASSWORD,
    T0,
    api_client,
    as_superuser,
    cli_json,
    make_erp,
    store_readings,
    token,
)

Conn = psycopg.Connection[tuple[Any, ...]]
M = timedelta(minutes=1)
# GS1's schema, kept with the tests (tests/fixtures/epcis/NOTICE.md says where it comes from).
SCHEMA = Path(
    os.environ.get(
        "COLDTRAIL_EPCIS_SCHEMA",
        Path(__file__).resolve().parent / "fixtures" / "epcis" / "EPCIS-JSON-Schema.json",
    )
)
SHIPPED_MINUTES = 180
# Truck compartment TC carries two probes. S2 goes to 12 °C for minutes 60-79 (an excursion
# the rules confirm after the 5-minute delay); S3 sends nothing for minutes 100-129 (lost)
# and "unavailable" for minutes 140-150 (the probe answered without a value).
HOT = range(60, 80)
LOST = range(100, 130)
UNAVAILABLE = range(140, 151)


def _store(conn: Conn, sensor: str, rows: list[tuple[int, float | None]]) -> None:
    batch = conn.execute("INSERT INTO ingest_batches DEFAULT VALUES RETURNING id").fetchone()
    assert batch is not None
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO readings (sensor_id, seq, ts, received_at, gateway, status, "
            "temperature_c, humidity_pct, batch_id) VALUES (%s, %s, %s, %s, 'gw', %s, %s, %s, %s)",
            [
                (sensor, minute + 1, T0 + minute * M, T0 + minute * M + timedelta(seconds=2),
                 "ok" if t is not None else "unavailable", t, 45.5 if t is not None else None,
                 batch[0])
                for minute, t in rows
            ],
        )  # fmt: skip


@pytest.fixture
def shipped(conn: Conn, db_url: str, clock: ManualClock) -> dict[str, Any]:
    """Shipment SH1 with lot A, over three hours of two probes, its excursion judged by the
    real rules engine and the lot held; delivered at minute 175."""
    make_erp(conn)
    # The PDF writes times in the site's zone: eight hours ahead of UTC.
    conn.execute("UPDATE sites SET timezone = 'Asia/Shanghai'")
    conn.execute("UPDATE locations SET alarm_delay_s = 300")
    # S1 (cold room) says it is calibrated until next year, with no certificate on file.
    conn.execute("UPDATE sensors SET calibration_due = %s WHERE id = 'S1'", (date(2027, 6, 1),))
    upsert_sensor(conn, "S3", "xy-md02", "SN-S3")
    assign_sensor(conn, "S3", "TC", T0 - 60 * M, position="rear door")
    conn.execute(
        "INSERT INTO calibration_certificates (sensor_id, certificate_no, issuer, calibrated_on,"
        " valid_until, passed, max_error_c, recorded_by) VALUES"
        " ('S2', 'CAL-2026-017', 'NIM Lab', %s, %s, true, 0.2, 'admin'),"
        " ('S3', 'CAL-2024-101', 'NIM Lab', %s, %s, true, 0.3, 'admin')",
        (T0.date() - timedelta(days=30), T0.date() + timedelta(days=335),
         date(2024, 1, 10), date(2025, 1, 10)),
    )  # fmt: skip
    lot = register_lot(conn, "logi1", GTIN, "A-1").id
    record_movement(conn, "logi1", lot, "receiving", 10, T0 - 60 * M, to_location="CR")
    create_shipment(conn, "logi1", "SH1", "TRK", "s1", "Clinic 5")
    record_movement(conn, "logi1", lot, "loading", 10, T0 + 10 * M, from_location="CR",
                    to_location="TC", shipment_id="SH1")  # fmt: skip
    depart(conn, "logi1", "SH1", T0 + 15 * M)
    minutes = range(SHIPPED_MINUTES)
    _store(conn, "S2", [(m, 12.0 if m in HOT else 5.0 + (m % 7) * 0.13) for m in minutes])
    _store(
        conn,
        "S3",
        [(m, None if m in UNAVAILABLE else 4.0 + (m % 5) * 0.21) for m in minutes if m not in LOST],
    )
    record_movement(conn, "logi1", lot, "delivery", 10, T0 + 170 * M, from_location="TC",
                    shipment_id="SH1", party="Clinic 5")  # fmt: skip
    arrive(conn, "logi1", "SH1", T0 + 175 * M)
    clock.advance(4 * 3600)
    RulesEngine(db_url, clock=clock, capa=CapaPolicy(owner="qa1")).process_pending(conn)
    [hold] = conn.execute("SELECT id FROM holds WHERE lot_id = %s", (lot,)).fetchall()
    return {"lot": lot, "hold": hold[0]}


def _forms(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    got = {}
    for fmt in ("json", "csv", "pdf", "epcis"):
        resp = client.get("/api/v1/shipments/SH1/record", params={"format": fmt}, headers=headers)
        assert resp.status_code == 200, resp.text
        got[fmt] = resp
    return got


def test_qa_release_with_signature_shows_in_every_form_of_the_record(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    with api_client(db_url, clock) as client:
        clock.advance(3600)
        qa = token(client, "qa1", QA_PASSWORD)
        signed = client.post(
            f"/api/v1/holds/{shipped['hold']}/disposition",
            headers=qa,
            json={"disposition": "release", "username": "qa1", "password": QA_PASSWORD,
                  "meaning": "approval", "reason": "stability data cover 20 min at 12 °C"},
        )  # fmt: skip
        assert signed.status_code == 200, signed.text
        signed_at = signed.json()["signatures"][0]["signed_at"].replace("+00:00", "Z")
        signed_local = _local(datetime.fromisoformat(signed_at))
        forms = _forms(client, qa)
    doc = forms["json"].json()
    [exc] = doc["excursions"]
    [disp] = exc["dispositions"]
    assert disp["state"] == "released"
    [sig] = disp["signatures"]
    assert (sig["signer_name"], sig["meaning"], sig["signed_at"]) == (
        "Quinn Auditt", "approval", signed_at,
    )  # fmt: skip
    text = _pdf_text(forms["pdf"].content)
    assert (
        f"hold {shipped['hold']} released 已放行 Signed by Quinn Auditt (qa1, qa) at "
        f"{signed_local}; meaning: approval 批准; release: stability data cover 20 min at 12 °C"
    ) in text


def test_csv_json_pdf_and_epcis_agree_on_every_number(shipped: dict[str, Any], db_url: str,
                                                      clock: ManualClock) -> None:  # fmt: skip
    with api_client(db_url, clock) as client:
        forms = _forms(client, token(client, "qa1", QA_PASSWORD))
    doc = RecordOut.model_validate_json(forms["json"].content).model_dump(mode="json")
    raw = forms["csv"].content
    digest = hashlib.sha256(raw).hexdigest()
    assert doc["data_sha256"] == digest == forms["csv"].headers["X-Data-SHA256"]
    # The chains' heads it was built at, in every form: each reading lies in a link up to it.
    heads = doc["chain_heads"]
    assert forms["csv"].headers["X-Chain-Heads"] == (
        f"audit={heads['audit']['id']}:{heads['audit']['hash']},"
        f"readings={heads['readings']['link']}:{heads['readings']['hash']}"
    )
    with psycopg.connect(db_url) as conn:
        now = conn.execute(
            "SELECT a.last_id, a.hash, r.link, r.hash FROM audit_head a, reading_chain_head r"
        ).fetchone()
    assert now is not None
    assert (now[0], bytes(now[1]).hex(), now[2], bytes(now[3]).hex()) == (
        heads["audit"]["id"], heads["audit"]["hash"],
        heads["readings"]["link"], heads["readings"]["hash"],
    )  # fmt: skip

    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert (
        len(rows)
        == doc["summary"]["readings"]
        == sum(len(c["readings"]["seq"]) for c in doc["channels"])
    )
    pdf_text = _pdf_text(forms["pdf"].content)
    assert digest in pdf_text
    epcis = forms["epcis"].json()
    _validate_epcis(epcis)
    events = epcis["epcisBody"]["eventList"]
    assert len(events) == len(doc["channels"]) == 2
    for chan, event in zip(doc["channels"], events, strict=True):
        mine = [r for r in rows if r["sensor_id"] == chan["sensor_id"]]
        # Reading by reading, CSV and JSON hold the same times and values.
        assert [r["measured_at"] for r in mine] == chan["readings"]["measured_at"]
        assert [float(r["temperature_c"]) if r["temperature_c"] else None for r in mine] == (
            chan["readings"]["temperature_c"]
        )
        assert [r["calibration_status"] for r in mine] == chan["readings"]["calibration_status"]
        stats = _stats_from_csv(mine, chan["interval_s"], chan["start"], chan["end"])
        for key, value in stats.items():
            assert chan["stats"][key] == pytest.approx(value, abs=1e-9), key
        # The PDF prints them rounded, on the probe's row.
        row = f"{chan['sensor_id']} @ {chan['location_id']}"
        s = chan["stats"]
        expected = [str(s["readings"]), str(s["valid"]), f"{s['min_c']:.2f}", f"{s['max_c']:.2f}",
                    f"{s['mean_c']:.2f}", f"{s['mkt_c']:.2f}", f"{s['out_of_range_s'] / 60:.1f}",
                    f"{100 * s['completeness']:.2f}"]  # fmt: skip
        assert " ".join([row, *expected]) in pdf_text
        # EPCIS: the summary report and every valued reading.
        reports = event["sensorElementList"][0]["sensorReport"]
        summary = reports[0]
        assert (summary["minValue"], summary["maxValue"], summary["meanValue"]) == (
            s["min_c"], s["max_c"], s["mean_c"],
        )  # fmt: skip
        temps = [x for x in reports[1:] if x["type"] == "Temperature"]
        assert [x["time"] for x in temps] == chan["readings"]["measured_at"]
        assert [x.get("value") for x in temps] == chan["readings"]["temperature_c"]
        assert event["ct:mktCelsius"] == s["mkt_c"]
        assert event["ct:dataSha256"] == digest
        assert event["quantityList"] == [{"epcClass": lot_class(GTIN, "A-1"), "quantity": 10.0}]
    # Known answers: S2 out of range exactly its 20 hot minutes; the excursion is listed.
    s2 = next(c for c in doc["channels"] if c["sensor_id"] == "S2")
    assert s2["stats"]["out_of_range_s"] == 20 * 60
    assert s2["stats"]["max_c"] == 12.0
    assert doc["summary"]["out_of_range_s"] == 20 * 60
    assert "Time any probe was out of range (min) 任一探头超限时间(分钟): 20.0" in pdf_text
    [exc] = doc["excursions"]
    assert (exc["location_id"], exc["max_c"]) == ("TC", 12.0)
    assert (
        f"{exc['id']} TC {_local(exc['started_at'])} {_local(exc['ended_at'])} "
        f"{exc['min_c']:.2f} {exc['max_c']:.2f} {exc['duration_s'] / 60:.1f} ended 已结束"
    ) in pdf_text, pdf_text[pdf_text.find("Dispositions and signatures") :][:300]


def test_gaps_stay_gaps_in_every_form(shipped: dict[str, Any], db_url: str,
                                      clock: ManualClock) -> None:  # fmt: skip
    with api_client(db_url, clock) as client:
        forms = _forms(client, token(client, "qa1", QA_PASSWORD))
    doc = forms["json"].json()
    s3 = next(c for c in doc["channels"] if c["sensor_id"] == "S3")
    # Period: loading at minute 10 to delivery at 175 (after arrival at 175, same minute).
    assert (doc["start"], doc["end"]) == (_iso(10), _iso(175))
    gaps = [(g["start"], g["end"], g["readings_unavailable"], g["missing_seq"]) for g in s3["gaps"]]
    assert gaps == [(_iso(99), _iso(130), 0, 30), (_iso(139), _iso(151), 11, 0)]
    assert doc["gaps"] == s3["gaps"]
    # Nothing is made up for the lost half hour, in any form.
    lost = {_iso(m) for m in LOST}
    assert not lost & set(s3["readings"]["measured_at"])
    rows = csv.DictReader(io.StringIO(forms["csv"].text))
    assert not any(r["measured_at"] in lost for r in rows if r["sensor_id"] == "S3")
    event = forms["epcis"].json()["epcisBody"]["eventList"][1]
    times = [x.get("time") for x in event["sensorElementList"][0]["sensorReport"]]
    assert not lost & set(times)
    errors = [x["time"] for x in event["sensorElementList"][0]["sensorReport"]
              if x.get("exception") == "ERROR_CONDITION"]  # fmt: skip
    assert errors == [_iso(m) for m in UNAVAILABLE]
    # The completeness counts the 5-minute slots that hold a valid value.
    assert s3["stats"]["intervals_expected"] == 33  # 165 min / 5
    # Slots start at minute 10: 100-129 lost is six, 140-149 unavailable two more.
    assert s3["stats"]["intervals_recorded"] == 33 - 6 - 2
    pdf_text = _pdf_text(forms["pdf"].content)
    assert f"S3 TC {_local(99)} {_local(130)} 31.0 0 30" in pdf_text
    assert f"S3 TC {_local(139)} {_local(151)} 12.0 11 0" in pdf_text
    # Calibration: S2 covered by a certificate, S3's lapsed in 2025.
    assert set(s3["readings"]["calibration_status"]) == {"overdue"}
    s2 = next(c for c in doc["channels"] if c["sensor_id"] == "S2")
    assert set(s2["readings"]["calibration_status"]) == {"valid"}
    assert "CAL-2024-101 NIM Lab 2024-01-10 2025-01-10 passed" in pdf_text

    assert "overdue for 135 readings" in pdf_text


def test_location_record_covers_its_period_and_refuses_bad_requests(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    with api_client(db_url, clock) as client:
        auditor = _auditor(client)
        url = "/api/v1/locations/TC/record"
        ok = client.get(url, params={"from": _iso(0), "to": _iso(60)}, headers=auditor)
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert [c["sensor_id"] for c in body["channels"]] == ["S2", "S3"]
        assert body["channels"][0]["readings"]["measured_at"][-1] == _iso(59)
        # The cold room's S1 has a due date next year and no certificate: no evidence, so
        # "none" (it showed "valid").
        with psycopg.connect(db_url, autocommit=True) as conn:
            store_readings(conn, [("S1", n, T0 + n * M, 5.0) for n in range(1, 6)])
        room = client.get("/api/v1/locations/CR/record", params={"from": _iso(0),
                          "to": _iso(60)}, headers=auditor).json()  # fmt: skip
        [s1] = room["channels"]
        assert s1["sensor_id"] == "S1"
        assert set(s1["readings"]["calibration_status"]) == {"none"}
        # A period reaching into the future ends now: tomorrow is no gap (it counted as one).
        now = clock.now().isoformat().replace("+00:00", "Z")
        later = (clock.now() + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        upto_now = client.get(url, params={"from": _iso(0), "to": now}, headers=auditor).json()
        ahead = client.get(url, params={"from": _iso(0), "to": later}, headers=auditor).json()
        assert ahead["end"] == upto_now["end"]
        assert ahead["summary"] == upto_now["summary"]
        assert body["lots"][0]["lot_number"] == "A-1"
        for params, code in (
            ({"from": _iso(60), "to": _iso(0)}, 409),
            ({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, 409),
            ({"from": "2026-11-22T08:00:00", "to": _iso(60)}, 422),  # no UTC offset
            ({"from": _iso(0)}, 422),
            ({"from": _iso(0), "to": _iso(60), "format": "xlsx"}, 422),
        ):
            resp = client.get(url, params=params, headers=auditor)
            assert resp.status_code == code, (params, resp.text)
            assert resp.json()["detail"]
        assert client.get("/api/v1/locations/NOPE/record", params={"from": _iso(0),
                          "to": _iso(1)}, headers=auditor).status_code == 404  # fmt: skip
        assert client.get("/api/v1/shipments/NOPE/record", headers=auditor).status_code == 404
        with psycopg.connect(db_url, autocommit=True) as conn:
            create_shipment(conn, "logi1", "SH9", "TRK", "s1", "Clinic 9")
        planned = client.get("/api/v1/shipments/SH9/record", headers=auditor)
        assert planned.status_code == 409
        assert "neither been loaded nor departed" in planned.json()["detail"]


def test_report_command_writes_the_same_record(
    shipped: dict[str, Any], db_url: str, clock: ManualClock, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    with api_client(db_url, clock) as client:
        api_csv = client.get("/api/v1/shipments/SH1/record", params={"format": "csv"},
                             headers=_auditor(client)).content  # fmt: skip
    out = tmp_path / "sh1.csv"
    done = cli_json(["report", "shipment", "SH1", "--format", "csv", "-o", str(out)], monkeypatch,
                    COLDTRAIL_DATABASE_URL=db_url)  # fmt: skip
    assert out.read_bytes() == api_csv
    assert done == {"file": str(out), "format": "csv", "bytes": len(api_csv),
                    "data_sha256": hashlib.sha256(api_csv).hexdigest()}  # fmt: skip
    pdf = tmp_path / "tc.pdf"
    cli_json(["report", "location", "TC", "--from", _iso(0), "--to", _iso(60), "--format", "pdf",
              "-o", str(pdf)], monkeypatch, COLDTRAIL_DATABASE_URL=db_url)  # fmt: skip
    assert pdf.read_bytes().startswith(b"%PDF")


def _auditor(client: Any) -> dict[str, str]:
    resp = client.post(
        "/api/v1/users", headers=token(client, "admin", "admin-password-123"),
        json={"username": "aud1", "full_name": "Ada Auditor", "role": "auditor",
              "password": "auditor-password-1"},
    )  # fmt: skip
    assert resp.status_code in (201, 409), resp.text
    return token(client, "aud1", "auditor-password-1")


def _iso(minute: int) -> str:
    return (T0 + minute * M).isoformat().replace("+00:00", "Z")


def _local(at: int | str | datetime) -> str:
    """A time as the PDF writes it at the shipped fixture's site (UTC+8)."""
    if isinstance(at, int):
        at = T0 + at * M
    elif isinstance(at, str):
        at = datetime.fromisoformat(at)
    return f"{at.astimezone(timezone(timedelta(hours=8))):%Y-%m-%d %H:%M:%S} +08:00"


def _pdf_text(content: bytes) -> str:
    """The text of every page, table cells and wrapped lines joined by single spaces."""
    pages = pypdf.PdfReader(io.BytesIO(content)).pages
    return " ".join(" ".join(page.extract_text().split()) for page in pages)


def _validate_epcis(doc: dict[str, Any]) -> None:
    assert SCHEMA.is_file(), f"GS1's EPCIS schema not at {SCHEMA}: set COLDTRAIL_EPCIS_SCHEMA"
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]


def _stats_from_csv(
    rows: list[dict[str, str]], interval: int, start: str, end: str
) -> dict[str, Any]:
    """The record's definitions, recomputed from the CSV alone."""
    from datetime import datetime

    def epoch(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    valid = [r for r in rows if r["status"] == "ok" and r["temperature_c"]]
    t = np.array([epoch(r["measured_at"]) for r in valid])
    v = np.array([float(r["temperature_c"]) for r in valid])
    w = weights(t, max_gap_s=float(interval))
    w[-1] = min(w[-1], epoch(end) - t[-1])
    out = np.array([r["out_of_range"] == "true" for r in valid])
    a, b = epoch(start), epoch(end)
    return {
        "readings": len(rows),
        "valid": len(valid),
        "min_c": float(v.min()),
        "max_c": float(v.max()),
        "mean_c": float(v.mean()),
        "mkt_c": weighted_mkt(v, w),
        "out_of_range_s": float(w[out].sum()),
        "intervals_expected": int(np.ceil((b - a) / interval)),
        "intervals_recorded": len({int((x - a) // interval) for x in t}),
    }


def test_a_shipment_record_covers_the_compartments_its_lots_were_in(conn: Conn) -> None:
    """The truck's second compartment carries goods at room temperature (20 °C). The record
    of a shipment whose lot rode in the 2-8 °C one shows that one's probes only: a mean or an
    MKT over both would describe nothing the lot went through. A lot loaded into the truck
    itself, without a compartment, gets the whole truck."""
    make_erp(conn)
    upsert_location(
        conn, Location("TB", "s1", "compartment", "Truck back", 15.0, 25.0, parent_id="TRK")
    )
    upsert_sensor(conn, "S9", "xy-md02", "SN-S9")
    assign_sensor(conn, "S9", "TB", T0 - 60 * M)
    _store(conn, "S2", [(m, 5.0) for m in range(60)])
    _store(conn, "S9", [(m, 20.0) for m in range(60)])
    cold = register_lot(conn, "logi1", GTIN, "C-1").id
    loose = register_lot(conn, "logi1", GTIN, "L-1").id
    for lot in (cold, loose):
        record_movement(conn, "logi1", lot, "receiving", 5, T0 - 60 * M, to_location="CR")
    create_shipment(conn, "logi1", "SH-C", "TRK", "s1", "Clinic 1")
    record_movement(conn, "logi1", cold, "loading", 5, T0, from_location="CR",
                    to_location="TC", shipment_id="SH-C")  # fmt: skip
    depart(conn, "logi1", "SH-C", T0 + M)
    now = T0 + 60 * M

    record = shipment_record(conn, "SH-C", now)
    assert record.subject.locations == ("TC",)
    assert [c.sensor_id for c in record.channels] == ["S2"]
    assert record.summary.max_c == 5.0

    create_shipment(conn, "logi1", "SH-L", "TRK", "s1", "Clinic 2")
    record_movement(conn, "logi1", loose, "loading", 5, T0, from_location="CR",
                    to_location="TRK", shipment_id="SH-L")  # fmt: skip
    depart(conn, "logi1", "SH-L", T0 + M)
    record = shipment_record(conn, "SH-L", now)
    assert record.subject.locations == ("TB", "TC", "TRK")
    assert sorted(c.sensor_id for c in record.channels) == ["S2", "S9"]
    assert record.summary.max_c == 20.0


def test_a_record_written_in_blocks_is_the_record_written_at_once_byte_for_byte(
    shipped: dict[str, Any], conn: Conn, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records are sent in blocks of readings so that memory stays flat (a year of a room
    used to take gigabytes); blocks of 7 readings (a probe's ~180 split at odd places, a
    microsecond time in one block only) must write exactly what one block writes."""
    from coldtrail.api.record import forms

    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # past the immutability
        conn.execute(
            "UPDATE readings SET received_at = received_at + interval '250 microseconds' "
            "WHERE sensor_id = 'S2' AND seq = 100"
        )
    record = rec.shipment_record(conn, "SH1", clock.now())
    monkeypatch.setattr(forms, "BLOCK", 10**9)
    whole = {f: list(rec.chunks(record, f)) for f in ("csv", "json", "epcis")}
    monkeypatch.setattr(forms, "BLOCK", 7)
    for fmt in ("csv", "json", "epcis"):
        parts = list(rec.chunks(record, fmt))
        assert b"".join(parts) == b"".join(whole[fmt]), fmt
        if fmt == "csv":  # JSON gathers its blocks into chunks of 64 KiB
            assert len(parts) > len(whole[fmt])
    doc = json.loads(b"".join(whole["json"]))
    s2 = next(c for c in doc["channels"] if c["sensor_id"] == "S2")
    assert s2["readings"]["received_at"][0].endswith(".000000Z")  # one unit for the probe
    assert record.data_sha256 == hashlib.sha256(b"".join(whole["csv"])).hexdigest()


def test_records_past_the_limit_at_once_are_a_503_and_a_sent_one_frees_its_place(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    import dataclasses

    from fastapi.testclient import TestClient

    from coldtrail.api.app import create_app
    from tests.conftest import api_config

    config = dataclasses.replace(api_config(db_url), records_at_once=1, record_wait_s=0)
    app = create_app(config, clock)
    with TestClient(app) as client:
        headers = token(client, "qa1", QA_PASSWORD)
        gate = app.state.record_gate
        assert gate.enter()  # somebody else's year of readings, being sent
        busy = client.get("/api/v1/shipments/SH1/record", params={"format": "csv"}, headers=headers)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "10"
        gate.leave()
        for fmt in ("csv", "json", "epcis", "pdf"):
            resp = client.get("/api/v1/shipments/SH1/record", params={"format": fmt},
                              headers=headers)  # fmt: skip
            assert resp.status_code == 200, fmt
        missing = client.get("/api/v1/shipments/NOPE/record", headers=headers)
        assert missing.status_code == 404
        assert gate.enter()  # every one of them, the refused build too, gave its place back
        gate.leave()


def test_a_record_whose_client_went_away_gives_its_place_back() -> None:
    from coldtrail.api.limits import Gate

    gate = Gate(1, wait_s=0)
    assert gate.enter()
    sending = gate.leave_after(iter([b"a", b"b", b"c"]))
    assert next(sending) == b"a"
    assert not gate.enter()
    sending.close()  # the client disconnected
    assert gate.enter()


def test_a_capa_linked_to_an_excursion_later_is_in_the_record(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    """A CAPA QA opened and linked to the excursion by hand was missing from the record: only
    the one the rules opened was shown."""
    from coldtrail.erp.capa import NewCapa, open_capa

    with psycopg.connect(db_url, autocommit=True) as conn:
        [(le,)] = conn.execute("SELECT id FROM location_excursions").fetchall()
        # As where the rules opened none (a profile that does not hold on excursions).
        conn.execute("UPDATE location_excursions SET capa_id = NULL WHERE id = %s", (le,))
        conn.execute("DELETE FROM capa_links WHERE kind = 'excursion' AND ref = %s", (str(le),))
        capa = open_capa(
            conn, "qa1",
            NewCapa("Compressor check", "qa1", T0.date() + timedelta(days=30),
                    links=(("excursion", str(le)),)),
            clock.now(),
        )  # fmt: skip
    with api_client(db_url, clock) as client:
        doc = client.get("/api/v1/shipments/SH1/record", params={"format": "json"},
                         headers=_auditor(client)).json()  # fmt: skip
    [exc] = doc["excursions"]
    assert (exc["capa_id"], exc["capa_state"]) == (capa.id, "open")


CHINESE = {
    "product": "胰岛素注射液 (Insulin injection)",
    "place": "冷藏车厢A区",
    "destination": "北京协和医院药房",
}


def test_the_pdf_carries_chinese_data_as_text_embeds_its_font_and_renders(
    shipped: dict[str, Any], db_url: str, clock: ManualClock, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        as_superuser(conn, "UPDATE products SET name = %s", CHINESE["product"])
        as_superuser(conn, "UPDATE locations SET name = %s WHERE id = 'TC'", CHINESE["place"])
        as_superuser(conn, "UPDATE shipments SET destination = %s", CHINESE["destination"])
    with api_client(db_url, clock) as client:
        pdf = _forms(client, token(client, "qa1", QA_PASSWORD))["pdf"].content
    (tmp_path / "record.pdf").write_bytes(pdf)
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    # Every font is embedded (none left for the reader's machine to find) and is ours.
    fonts = {}
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for ref in resources["/Font"].values():
            font = ref.get_object()
            fonts[font["/BaseFont"]] = font
    assert fonts, "the PDF names no font"
    for name, font in fonts.items():
        described = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
        descriptor = described["/FontDescriptor"].get_object()
        assert "/FontFile2" in descriptor, f"{name} is not embedded"
        assert "WenQuanYi" in str(name), name

    text = _pdf_text(pdf)
    engines = {"pypdf": text, "pdfium": _pdfium_text(pdf)}
    if shutil.which("pdftotext"):
        done = subprocess.run(
            [shutil.which("pdftotext") or "", "-", "-"], input=pdf, capture_output=True, check=True
        )
        engines["pdftotext"] = " ".join(done.stdout.decode().split())
    for engine, words in engines.items():
        for value in CHINESE.values():
            assert value in words, f"{engine} lost {value!r}"
        assert "连续温度记录" in words, engine
        assert "■" not in words, engine
        assert "\ufffd" not in words, engine

    # Times in the site's zone with the offset; the range written out and on the chart.
    assert f"Period 期间 {_local(10)} to {_local(175)}" in text
    assert "Time zone 时区 Asia/Shanghai (UTC+08:00)" in text
    assert "2.0 to 8.0 °C, alarm after 5 min" in text
    assert "max 8.0 °C" in text
    assert "min 2.0 °C" in text
    assert "Time 时间, Asia/Shanghai (UTC+08:00)" in text
    assert "Vehicle, state 车辆、状态 TRK, delivered 已送达" in text
    # Each page names the shipment and counts the pages.
    total = len(reader.pages)
    assert total >= 2
    for n, page in enumerate(reader.pages, start=1):
        words = " ".join(page.extract_text().split())
        assert "— shipment SH1" in words, n
        assert f"page {n} of {total}" in words, n
        # No heading stranded at the foot of a page: whatever follows it comes first there.
        content = words.split(" Continuous temperature record 连续温度记录 — shipment")[0]
        assert not content.endswith(HEADINGS), n

    # Rendered, the pages show the chart's colours: the range band, the excursion, the gap.
    document = pdfium.PdfDocument(pdf)
    colours = set()
    for n in range(len(document)):
        image = document[n].render(scale=2).to_pil()
        image.save(tmp_path / f"record-page-{n + 1}.png")
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert (pixels.min(axis=1) < 100).sum() > 2000, f"page {n + 1} is blank"
        colours |= {tuple(int(v) // 16 for v in p) for p in np.unique(pixels, axis=0)}
    assert _near(colours, BAND_SEEN), "no range band drawn"
    assert _near(colours, RED_SEEN), "no excursion shaded"


HEADINGS = (
    "Summary 汇总", "Allowed ranges and alarm delays 允许温度范围及报警延迟", "Charts 温度曲线",
    "Excursions and dispositions 温度偏差及处理", "Gaps in the record 记录缺失", "Calibration 校准",
    "How to read this record 说明",
)  # fmt: skip
# The band and the excursion shading over white, as pdfium draws them (in sixteenths).
BAND_SEEN = (13, 15, 13)
RED_SEEN = (15, 12, 12)


def _near(colours: set[tuple[int, ...]], want: tuple[int, int, int]) -> bool:
    return any(all(abs(a - b) <= 1 for a, b in zip(c, want, strict=True)) for c in colours)


def _pdfium_text(content: bytes) -> str:
    document = pdfium.PdfDocument(content)
    return " ".join(
        " ".join(document[n].get_textpage().get_text_range().split()) for n in range(len(document))
    )


LIMIT_KEYS = ("temp_min_c", "temp_max_c", "alarm_delay_s")


def test_the_record_gives_the_range_and_alarm_delay_in_force_place_or_product(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    def limits() -> list[tuple[str, str, float | None, float | None, float]]:
        with api_client(db_url, clock) as client:
            doc = _forms(client, token(client, "qa1", QA_PASSWORD))["json"].json()
        return [
            (x["start"][11:16], x["end"][11:16], *(x[k] for k in LIMIT_KEYS))
            for c in doc["channels"]
            for x in c["limits"]
        ]

    # The compartment's own delay (300 s) over the whole shipment (10:10 to 12:55 UTC), for
    # both probes.
    assert limits() == [("10:10", "12:55", 2.0, 8.0, 300.0)] * 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        as_superuser(conn, "UPDATE locations SET alarm_delay_s = NULL WHERE id = 'TC'")
        as_superuser(conn, "UPDATE temperature_profiles SET alarm_delay_s = 900")
    # Unset: the product's while the lot is aboard (delivered at 12:50), none after it.
    assert limits() == [("10:10", "12:50", 2.0, 8.0, 900.0), ("12:50", "12:55", 2.0, 8.0, 0.0)] * 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        as_superuser(conn, "UPDATE locations SET alarm_delay_s = 60 WHERE id = 'TC'")
    assert limits() == [("10:10", "12:55", 2.0, 8.0, 60.0)] * 2  # the shorter of the two


def test_chart_time_labels_fall_on_round_local_hours_and_days_with_the_offset() -> None:
    from coldtrail.api.record.pdf import Times, time_ticks

    shanghai = Times("Asia/Shanghai")
    start = datetime(2026, 11, 22, 10, 7, tzinfo=UTC).timestamp()
    ticks = time_ticks(start, start + 5 * 3600, shanghai)
    assert [label for _, label in ticks] == [
        "11-22 19:00", "11-22 20:00", "11-22 21:00", "11-22 22:00", "11-22 23:00",
    ]  # fmt: skip
    week = time_ticks(start, start + 7 * 86400, shanghai)
    assert [label for _, label in week][:2] == ["11-24", "11-26"]
    assert all(datetime.fromtimestamp(t, UTC).hour == 16 for t, _ in week)  # local midnight
    # Across the change to summer time, the zone label gives both offsets.
    berlin = Times("Europe/Berlin")
    a, b = datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    assert berlin.zone_label(a, b) == "Europe/Berlin (UTC+01:00 → +02:00)"
    assert berlin(b) == "2026-03-30 14:00:00 +02:00"
    assert Times("Not/AZone")(b) == "2026-03-30 12:00:00 +00:00"


def test_the_pdf_prints_names_with_angle_brackets_and_ampersands_as_written(
    shipped: dict[str, Any], db_url: str, clock: ManualClock
) -> None:
    # reportlab reads a paragraph as markup: "<10 ml>" was taken for a tag and dropped.
    product, place = "Vaccine <10 ml> & co", "Truck <front> & back"
    with psycopg.connect(db_url, autocommit=True) as conn:
        as_superuser(conn, "UPDATE products SET name = %s", product)
        as_superuser(conn, "UPDATE locations SET name = %s WHERE id = 'TC'", place)
    with api_client(db_url, clock) as client:
        pdf = _forms(client, token(client, "qa1", QA_PASSWORD))["pdf"].content
    text = _pdf_text(pdf)
    assert product in text
    assert place in text
