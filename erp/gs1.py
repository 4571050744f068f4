"""GS1 element strings and UDI carriers, read with biip: what a scanner gives at receiving."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import biip
from biip.gs1_messages import GS1Message

from coldtrail.errors import PayloadError

GS = "\x1d"
# Symbology identifiers a scanner may put in front: GS1-128, GS1 DataMatrix, GS1 QR.
_SYMBOLOGY_PREFIXES = ("]C1", "]d2", "]Q3", "]e0", "]J1")


@dataclass(frozen=True)
class Gs1Data:
    gtin: str | None
    lot: str | None = None
    serial: str | None = None
    expiry: date | None = None
    production_date: date | None = None
    elements: dict[str, str] = field(default_factory=dict)
    """Every application identifier read, by AI, as its raw value."""

    def as_json(self) -> dict[str, object]:
        return {
            "gtin": self.gtin,
            "lot": self.lot,
            "serial": self.serial,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "production_date": self.production_date.isoformat() if self.production_date else None,
            "elements": self.elements,
        }


def decode_gs1(text: str) -> Gs1Data:
    """Read a GS1 element string: bracketed HRI ``(01)...(10)...``, raw with GS (ASCII 29,
    or the text ``<GS>``) after variable-length fields, with or without a symbology
    identifier, or a GS1 Digital Link URI. Raises PayloadError with the reason."""
    value = text.strip().replace("<GS>", GS)
    if not value:
        raise PayloadError("empty GS1 string")
    try:
        if value.startswith("("):
            message = GS1Message.parse_hri(value)
        else:
            for prefix in _SYMBOLOGY_PREFIXES:
                if value.startswith(prefix):
                    value = value[len(prefix) :]
                    break
            result = biip.parse(value)
            if result.gs1_message is not None:
                message = result.gs1_message
            elif result.gs1_digital_link_uri is not None:
                message = result.gs1_digital_link_uri.as_gs1_message()
            else:
                reason = result.gs1_message_error or result.gs1_digital_link_uri_error
                raise PayloadError(reason or f"not a GS1 element string: {text!r}")
    except biip.ParseError as exc:
        raise PayloadError(str(exc)) from exc
    return _from_message(message)


def _from_message(message: GS1Message) -> Gs1Data:
    elements = {e.ai.ai: e.value for e in message.element_strings}
    dates = {e.ai.ai: e.date for e in message.element_strings if e.date is not None}
    gtin = next((e.gtin.value for e in message.element_strings if e.gtin is not None), None)
    if "01" in elements and gtin is None:
        why = next((e.gtin_error for e in message.element_strings if e.ai.ai == "01"), None)
        raise PayloadError(f"(01) {elements['01']!r} is not a valid GTIN: {why}")
    return Gs1Data(
        gtin=gtin.zfill(14) if gtin else None,
        lot=elements.get("10"),
        serial=elements.get("21"),
        expiry=dates.get("17"),
        production_date=dates.get("11"),
        elements=elements,
    )
