"""The continuous temperature record of a shipment or a location, in four forms."""

from __future__ import annotations

import json
from typing import Literal

from coldtrail.api.record.build import Record, location_record, shipment_record

Format = Literal["json", "csv", "pdf", "epcis"]
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "pdf": "application/pdf",
    "epcis": "application/ld+json",
}
SUFFIXES = {"json": "json", "csv": "csv", "pdf": "pdf", "epcis": "jsonld"}


def render(record: Record, fmt: Format) -> bytes:
    from coldtrail.api.record import forms

    if fmt == "csv":
        return record.csv_bytes
    if fmt == "json":
        return json.dumps(forms.as_json(record), ensure_ascii=False).encode()
    if fmt == "epcis":
        return json.dumps(forms.as_epcis(record), ensure_ascii=False).encode()
    from coldtrail.api.record import pdf

    return pdf.render(record)


__all__ = ["MEDIA_TYPES", "SUFFIXES", "Format", "Record", "location_record", "render",
           "shipment_record"]  # fmt: skip
