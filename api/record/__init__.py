"""The continuous temperature record of a shipment or a location, in four forms."""

from __future__ import annotations

from collections.abc import Iterator
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


def chunks(record: Record, fmt: Format) -> Iterator[bytes]:
    """The record in ``fmt``, in parts of a bounded size (except the PDF: one part), so that
    a record of millions of readings is sent without being held whole."""
    from coldtrail.api.record import forms

    if fmt == "csv":
        return forms.csv_chunks(record.channels)
    if fmt == "json":
        return forms.json_chunks(record)
    if fmt == "epcis":
        return forms.epcis_chunks(record)
    from coldtrail.api.record import pdf

    return iter([pdf.render(record)])


def render(record: Record, fmt: Format) -> bytes:
    """The record in ``fmt``, whole (small records, files)."""
    return b"".join(chunks(record, fmt))


__all__ = ["MEDIA_TYPES", "SUFFIXES", "Format", "Record", "chunks", "location_record",
           "render", "shipment_record"]  # fmt: skip
