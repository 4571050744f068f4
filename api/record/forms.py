"""The record as CSV, JSON and EPCIS 2.0 JSON-LD (the PDF is in ``pdf``).

Every form takes its numbers from the one built record and writes times and values the same
way: times in UTC as RFC 3339 (``Z``), values as the shortest text that reads back to the
stored float, so a copy can be compared to another digit for digit.

Each form is written as a stream of chunks of at most BLOCK readings: the record itself is
compact (numpy columns, about 100 bytes a reading), its text is not (a Python string or float
per value), and a year of a room's readings written whole took gigabytes.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
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


BLOCK = 16_384
"""Readings per chunk written."""


def time_unit(us: np.ndarray) -> Literal["s", "us"]:
    """To the second, unless a time carries microseconds."""
    return "s" if not np.any(us % 1_000_000) else "us"


def times(us: np.ndarray, unit: Literal["s", "us"] | None = None) -> list[str]:
    """RFC 3339 in UTC; to the second unless a time carries microseconds (``unit``: the
    choice made once for all the times of a channel, when they are written in parts)."""
    unit = unit or time_unit(us)
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


def _blocks(size: int) -> Iterator[slice]:
    return (slice(a, min(a + BLOCK, size)) for a in range(0, size, BLOCK))


def csv_chunks(channels: Sequence[Channel]) -> Iterator[bytes]:
    """Header and one row per reading, channel after channel, LF line ends."""
    from coldtrail.api.record.build import CALIBRATION_NAMES, STATUS_NAMES

    yield (",".join(CSV_COLUMNS) + "\n").encode()
    for c in channels:
        fixed = ",".join(
            _field(x)
            for x in (c.location_id, c.location_name, c.position, c.sensor_id, c.model, c.serial)
        )
        unit = time_unit(c.ts_us)
        received_unit = time_unit(c.received_us)
        out = c.out_of_range
        for part in _blocks(c.seq.size):
            lines = [
                f"{fixed},{cal},{seq},{ts},{rx},{st},{temp},{rh},{lo},{hi},"
                f"{'true' if bad else 'false'}\n"
                for cal, seq, ts, rx, st, temp, rh, lo, hi, bad in zip(
                    [CALIBRATION_NAMES[k] for k in c.calibration[part].tolist()],
                    c.seq[part].tolist(),
                    times(c.ts_us[part], unit),
                    times(c.received_us[part], received_unit),
                    [STATUS_NAMES[k] for k in c.status[part].tolist()],
                    _text(c.temp[part]),
                    _text(c.humidity[part]),
                    _text(c.lo[part]),
                    _text(c.hi[part]),
                    out[part].tolist(),
                    strict=True,
                )
            ]
            yield "".join(lines).encode()


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


def _channel(c: Channel, readings: str) -> dict[str, Any]:
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
        "limits": [
            {
                "start": iso(x.start),
                "end": iso(x.end),
                "temp_min_c": x.temp_min_c,
                "temp_max_c": x.temp_max_c,
                "alarm_delay_s": x.alarm_delay_s,
            }
            for x in c.limits
        ],
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
        "readings": readings,
    }


def _reading_columns(c: Channel) -> Iterator[str]:
    """The channel's ``readings`` object, one column after another, each in blocks."""
    from coldtrail.api.record.build import CALIBRATION_NAMES, STATUS_NAMES

    unit, received_unit = time_unit(c.ts_us), time_unit(c.received_us)
    columns: list[tuple[str, Callable[[slice], list[Any]]]] = [
        ("measured_at", lambda p: times(c.ts_us[p], unit)),
        ("received_at", lambda p: times(c.received_us[p], received_unit)),
        ("seq", lambda p: c.seq[p].tolist()),
        ("status", lambda p: [STATUS_NAMES[k] for k in c.status[p].tolist()]),
        ("temperature_c", lambda p: numbers(c.temp[p])),
        ("humidity_pct", lambda p: numbers(c.humidity[p])),
        ("limit_min_c", lambda p: numbers(c.lo[p])),
        ("limit_max_c", lambda p: numbers(c.hi[p])),
        ("out_of_range", lambda p: c.out_of_range[p].tolist()),
        ("calibration_status", lambda p: [CALIBRATION_NAMES[k] for k in c.calibration[p].tolist()]),
    ]
    yield "{"
    for i, (name, values) in enumerate(columns):
        yield (", " if i else "") + json.dumps(name) + ": ["
        yield from _list_items(values(p) for p in _blocks(c.seq.size))
        yield "]"
    yield "}"


def _list_items(blocks: Iterator[list[Any]]) -> Iterator[str]:
    """The items of one JSON list written block by block, as ``json.dumps`` would write the
    whole list (", " between items)."""
    first = True
    for block in blocks:
        if not block:
            continue
        text = json.dumps(block, ensure_ascii=False)[1:-1]
        yield text if first else ", " + text
        first = False


def _with_parts(
    doc: dict[str, Any], parts: dict[str, Channel], write: Callable[[Channel], Iterator[str]]
) -> Iterator[bytes]:
    """``doc`` as ``json.dumps`` writes it, where each string value that is a key of ``parts``
    is replaced by what ``write`` writes of that channel: the document around the readings is
    small and written at once, the readings in chunks."""
    text = json.dumps(doc, ensure_ascii=False)
    at = 0
    while True:
        found = [(text.find(json.dumps(m), at), m) for m in parts]
        found = [(i, m) for i, m in found if i >= 0]
        if not found:
            break
        i, marker = min(found)
        yield text[at:i].encode()
        pending: list[str] = []
        size = 0
        for piece in write(parts[marker]):
            pending.append(piece)
            size += len(piece)
            if size >= 1 << 16:
                yield "".join(pending).encode()
                pending, size = [], 0
        if pending:
            yield "".join(pending).encode()
        at = i + len(json.dumps(marker))
    yield text[at:].encode()


def _markers(n: int) -> list[str]:
    """Strings no record can hold (a fresh random id in each), one per channel."""
    tag = uuid.uuid4().hex
    return [f"\u0000coldtrail-part-{tag}-{i}" for i in range(n)]


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


def json_chunks(r: Record) -> Iterator[bytes]:
    markers = _markers(len(r.channels))
    doc = _as_json(r, markers)
    return _with_parts(doc, dict(zip(markers, r.channels, strict=True)), _reading_columns)


def _as_json(r: Record, markers: list[str]) -> dict[str, Any]:
    ship = r.subject.shipment
    return {
        "subject": {
            "kind": r.subject.kind,
            "id": r.subject.id,
            "name": r.subject.name,
            "locations": list(r.subject.locations),
            "timezone": r.subject.timezone,
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
        "chain_heads": _heads(r),
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
        "channels": [_channel(c, m) for c, m in zip(r.channels, markers, strict=True)],
    }


def _urn(kind: str, ident: str) -> str:
    return f"urn:coldtrail:{kind}:{quote(ident, safe='')}"


def lot_class(gtin: str, lot_number: str) -> str:
    """The lot as a GS1 Digital Link URI: no company-prefix length needed, unlike an LGTIN."""
    return f"https://id.gs1.org/01/{gtin}/10/{quote(lot_number, safe='')}"


def epcis_chunks(r: Record) -> Iterator[bytes]:
    """One ObjectEvent per channel: the lots observed in that place, with the probe's summary
    and every reading as ``sensorReport`` entries; a reading without a value is an
    ``ERROR_CONDITION``, and gaps stay gaps."""
    markers = _markers(len(r.channels))
    parts = dict(zip(markers, r.channels, strict=True))
    return _with_parts(_as_epcis(r, markers), parts, _reports)


def _reports(c: Channel) -> Iterator[str]:
    def block(p: slice) -> list[dict[str, Any]]:
        reports: list[dict[str, Any]] = []
        for at, st, temp, rh in zip(
            times(c.ts_us[p], unit),
            c.status[p].tolist(),
            numbers(c.temp[p]),
            numbers(c.humidity[p]),
            strict=True,
        ):
            if st == 0 and temp is not None:
                reports.append({"type": "Temperature", "time": at, "value": temp, "uom": "CEL"})
            else:
                reports.append({"type": "Temperature", "time": at, "exception": "ERROR_CONDITION"})
            if rh is not None and st == 0:
                reports.append({"type": "RelativeHumidity", "time": at, "value": rh, "uom": "P1"})
        return reports

    unit = time_unit(c.ts_us)
    summary: list[dict[str, Any]] = []
    if c.stats.valid:
        summary.append(
            {"type": "Temperature", "minValue": c.stats.min_c, "maxValue": c.stats.max_c,
             "meanValue": c.stats.mean_c, "uom": "CEL"}
        )  # fmt: skip
    yield "["
    yield from _list_items(itertools.chain([summary], (block(p) for p in _blocks(c.seq.size))))
    yield "]"


def _as_epcis(r: Record, markers: list[str]) -> dict[str, Any]:
    events = []
    quantities = [
        {"epcClass": lot_class(x.gtin, x.lot_number), **(
            {"quantity": float(x.quantity)} if x.quantity is not None else {}
        )}
        for x in r.lots
    ]  # fmt: skip
    for c, marker in zip(r.channels, markers, strict=True):
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
                    "sensorReport": marker,
                }
            ],
            "ct:dataSha256": r.data_sha256,
            "ct:chainHeads": _heads(r),
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


def _heads(r: Record) -> dict[str, Any]:
    """The chains' heads the record was built at (``coldtrail audit verify --anchors``)."""
    h = r.heads
    return {
        "audit": {"id": h.audit_id, "hash": h.audit_hash},
        "readings": {"link": h.link, "hash": h.readings_hash},
    }
