"""The record as CSV, JSON and EPCIS 2.0 JSON-LD (the PDF is in ``pdf``).

Every form takes its numbers from the one built record and writes times and values the same
way: times in UTC as RFC 3339 (``Z``), values as the shortest text that reads back to the
stored float, so a copy can be compared to another digit for digit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

import numpy as np

if TYPE_CHECKING:
    from coldtrail.api.record.build import Channel, Record, Stats

CSV_COLUMNS = (
    "location_id", "location_name", "position", "sensor_id", "sensor_model", "sensor_serial",
    "calibration_status", "seq", "measured_at", "received_at", "status", "temperature_c",
    "humidity_pct", "limit_min_c", "limit_max_c", "out_of_range",
)  # fmt: skip
EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
CT_NS = "https://coldtrail.dev/epcis/"
_NAMESPACE = uuid.UUID("5b0c2a54-6f0e-4d0e-9a37-0c01d7c0a11e")


def times(us: np.ndarray) -> list[str]:
    """RFC 3339 in UTC; to the second unless a time carries microseconds."""
    unit: Literal["s", "us"] = "s" if not np.any(us % 1_000_000) else "us"
    stamps: np.ndarray[Any, np.dtype[np.datetime64]] = us.astype("datetime64[us]")
    return [s + "Z" for s in np.datetime_as_string(stamps, unit=unit).tolist()]


@overload
def iso(at: datetime) -> str: ...
@overload
def iso(at: None) -> None: ...
@overload
def iso(at: datetime | None) -> str | None: ...


def iso(at: datetime | None) -> str | None:
    if at is None:
        return None
    return times(np.array([int(at.timestamp()) * 1_000_000 + at.microsecond]))[0]


def numbers(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]  # v != v: NaN


def _text(values: np.ndarray) -> list[str]:
    return ["" if v != v else repr(v) for v in values.tolist()]


def _field(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_rows(channels: Sequence[Channel]) -> bytes:
    """Header and one row per reading, channel after channel, LF line ends."""
    from coldtrail.api.record.build import CALIBRATION_NAMES, STATUS_NAMES

    lines = [",".join(CSV_COLUMNS)]
    for c in channels:
        fixed = ",".join(
            _field(x)
            for x in (c.location_id, c.location_name, c.position, c.sensor_id, c.model, c.serial)
        )
        out = c.out_of_range
        for cal, seq, ts, rx, st, temp, rh, lo, hi, bad in zip(
            [CALIBRATION_NAMES[k] for k in c.calibration.tolist()],
            c.seq.tolist(),
            c.measured_text,
            c.received_text,
            [STATUS_NAMES[k] for k in c.status.tolist()],
            _text(c.temp),
            _text(c.humidity),
            _text(c.lo),
            _text(c.hi),
            out.tolist(),
            strict=True,
        ):
            lines.append(
                f"{fixed},{cal},{seq},{ts},{rx},{st},{temp},{rh},{lo},{hi},"
                f"{'true' if bad else 'false'}"
            )
    return ("\n".join(lines) + "\n").encode()


def _stats(s: Stats) -> dict[str, Any]:
    return {
        "readings": s.readings,
        "valid": s.valid,
        "min_c": s.min_c,
        "max_c": s.max_c,
        "mean_c": s.mean_c,
        "mkt_c": s.mkt_c,
        "covered_s": s.covered_s,
        "out_of_range_s": s.out_of_range_s,
        "intervals_expected": s.intervals_expected,
        "intervals_recorded": s.intervals_recorded,
        "completeness": s.completeness,
    }


def _channel(c: Channel) -> dict[str, Any]:
    from coldtrail.api.record.build import CALIBRATION_NAMES, STATUS_NAMES

    return {
        "sensor_id": c.sensor_id,
        "model": c.model,
        "serial": c.serial,
        "location_id": c.location_id,
        "location_name": c.location_name,
        "position": c.position,
        "start": iso(c.start),
        "end": iso(c.end),
        "interval_s": c.interval_s,
        "calibration_due": c.calibration_due.isoformat() if c.calibration_due else None,
        "certificates": [
            {
                "certificate_no": x.certificate_no,
                "issuer": x.issuer,
                "calibrated_on": x.calibrated_on.isoformat(),
                "valid_until": x.valid_until.isoformat(),
                "passed": x.passed,
                "max_error_c": x.max_error_c,
            }
            for x in c.certificates
        ],
        "stats": _stats(c.stats),
        "gaps": [_gap(g) for g in c.gaps],
        "readings": {
            "measured_at": c.measured_text,
            "received_at": c.received_text,
            "seq": c.seq.tolist(),
            "status": [STATUS_NAMES[k] for k in c.status.tolist()],
            "temperature_c": numbers(c.temp),
            "humidity_pct": numbers(c.humidity),
            "limit_min_c": numbers(c.lo),
            "limit_max_c": numbers(c.hi),
            "out_of_range": c.out_of_range.tolist(),
            "calibration_status": [CALIBRATION_NAMES[k] for k in c.calibration.tolist()],
        },
    }


def _gap(g: Any) -> dict[str, Any]:
    return {
        "sensor_id": g.sensor_id,
        "location_id": g.location_id,
        "start": iso(g.start),
        "end": iso(g.end),
        "duration_s": g.duration_s,
        "readings_unavailable": g.readings_unavailable,
        "missing_seq": g.missing_seq,
    }


def as_json(r: Record) -> dict[str, Any]:
    ship = r.subject.shipment
    return {
        "subject": {
            "kind": r.subject.kind,
            "id": r.subject.id,
            "name": r.subject.name,
            "locations": list(r.subject.locations),
            "shipment": None
            if ship is None
            else {
                "id": ship.id,
                "vehicle_id": ship.vehicle_id,
                "origin_site": ship.origin_site,
                "destination": ship.destination,
                "route": ship.route,
                "state": ship.state,
                "departed_at": iso(ship.departed_at),
                "arrived_at": iso(ship.arrived_at),
            },
        },
        "start": iso(r.start),
        "end": iso(r.end),
        "generated_at": iso(r.generated_at),
        "data_sha256": r.data_sha256,
        "summary": {
            **_stats(r.summary),
            "out_of_range_s": r.out_of_range_s,
            "gaps": len(r.gaps),
            "excursions": len(r.excursions),
        },
        "lots": [
            {
                "lot_id": x.lot_id,
                "gtin": x.gtin,
                "lot_number": x.lot_number,
                "product": x.product,
                "status": x.status,
                "quantity": None if x.quantity is None else float(x.quantity),
            }
            for x in r.lots
        ],
        "excursions": [
            {
                "id": e.id,
                "location_id": e.location_id,
                "started_at": iso(e.started_at),
                "ended_at": iso(e.ended_at),
                "state": e.state,
                "late": e.late,
                "sensors": list(e.sensors),
                "limit_min_c": e.limit_min_c,
                "limit_max_c": e.limit_max_c,
                "min_c": e.min_c,
                "max_c": e.max_c,
                "duration_s": e.duration_s,
                "degree_minutes": e.degree_minutes,
                "mkt_c": e.mkt_c,
                "capa_id": e.capa_id,
                "capa_state": e.capa_state,
                "detected_at": iso(e.detected_at),
                "dispositions": [
                    {
                        "hold_id": d.hold_id,
                        "lot_id": d.lot_id,
                        "gtin": d.gtin,
                        "lot_number": d.lot_number,
                        "state": d.state,
                        "placed_at": iso(d.placed_at),
                        "disposed_at": iso(d.disposed_at),
                        "reason": d.reason,
                        "signatures": [
                            {
                                "signer": s.signer,
                                "signer_name": s.signer_name,
                                "signer_role": s.signer_role,
                                "meaning": s.meaning,
                                "reason": s.reason,
                                "action": s.action,
                                "signed_at": iso(s.signed_at),
                            }
                            for s in d.signatures
                        ],
                    }
                    for d in e.dispositions
                ],
            }
            for e in r.excursions
        ],
        "gaps": [_gap(g) for g in r.gaps],
        "channels": [_channel(c) for c in r.channels],
    }


def _urn(kind: str, ident: str) -> str:
    return f"urn:coldtrail:{kind}:{quote(ident, safe='')}"


def lot_class(gtin: str, lot_number: str) -> str:
    """The lot as a GS1 Digital Link URI: no company-prefix length needed, unlike an LGTIN."""
    return f"https://id.gs1.org/01/{gtin}/10/{quote(lot_number, safe='')}"


def as_epcis(r: Record) -> dict[str, Any]:
    """One ObjectEvent per channel: the lots observed in that place, with the probe's summary
    and every reading as ``sensorReport`` entries; a reading without a value is an
    ``ERROR_CONDITION``, and gaps stay gaps."""
    events = []
    quantities = [
        {"epcClass": lot_class(x.gtin, x.lot_number), **(
            {"quantity": float(x.quantity)} if x.quantity is not None else {}
        )}
        for x in r.lots
    ]  # fmt: skip
    for c in r.channels:
        reports: list[dict[str, Any]] = []
        if c.stats.valid:
            reports.append(
                {"type": "Temperature", "minValue": c.stats.min_c, "maxValue": c.stats.max_c,
                 "meanValue": c.stats.mean_c, "uom": "CEL"}
            )  # fmt: skip
        for at, st, temp, rh in zip(
            c.measured_text, c.status.tolist(), numbers(c.temp), numbers(c.humidity), strict=True
        ):
            if st == 0 and temp is not None:
                reports.append({"type": "Temperature", "time": at, "value": temp, "uom": "CEL"})
            else:
                reports.append({"type": "Temperature", "time": at, "exception": "ERROR_CONDITION"})
            if rh is not None and st == 0:
                reports.append({"type": "RelativeHumidity", "time": at, "value": rh, "uom": "P1"})
        event: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": uuid.uuid5(
                _NAMESPACE, f"{r.data_sha256}/{c.sensor_id}/{c.location_id}/{iso(c.start)}"
            ).urn,
            "eventTime": iso(c.end),
            "eventTimeZoneOffset": "+00:00",
            "action": "OBSERVE",
            "bizStep": "sensor_reporting",
            "epcList": [],
            "quantityList": quantities,
            "readPoint": {"id": _urn("location", c.location_id)},
            "sensorElementList": [
                {
                    "sensorMetadata": {
                        "startTime": iso(c.start),
                        "endTime": iso(c.end),
                        "deviceID": _urn("sensor", c.sensor_id),
                    },
                    "sensorReport": reports,
                }
            ],
            "ct:dataSha256": r.data_sha256,
            "ct:mktCelsius": c.stats.mkt_c,
            "ct:completeness": c.stats.completeness,
            "ct:gaps": [_gap(g) for g in c.gaps],
        }
        if r.subject.kind == "shipment":
            event["bizTransactionList"] = [
                {"type": "desadv", "bizTransaction": _urn("shipment", r.subject.id)}
            ]
        events.append(event)
    return {
        "@context": [EPCIS_CONTEXT, {"ct": CT_NS}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": iso(r.generated_at),
        "epcisBody": {"eventList": events},
    }
