"""BLE advert decoders, by format name, and the guessing that ``coldtrail decode ble`` needs.

A decoder implements :class:`AdvertDecoder`; :data:`FORMATS` maps a format name (as a device
profile's ``[ble] format`` names it) to a factory, so a new format is one entry here. Each device
gets its own decoder because some parsers keep state between adverts.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from coldtrail.edge.ble.advert import (
    BTHOME_UUID,
    ENVIRONMENTAL_SENSING_UUID,
    RUUVI_COMPANY_ID,
    Advert,
    Decoded,
    UndecodableAdvert,
    mac_from_bytes,
    uuid16,
)
from coldtrail.edge.ble.atc import AtcDecoder
from coldtrail.edge.ble.hass import HassParser, SensorStateDataDecoder


class AdvertDecoder(Protocol):
    name: str

    def matches(self, advert: Advert) -> bool:
        """Whether the advert is in this decoder's format at all (cheap: no parsing)."""
        ...

    def decode(self, advert: Advert) -> Decoded:
        """The advert's values; raises :class:`UndecodableAdvert` with the reason."""
        ...


@dataclass(frozen=True)
class DecoderOptions:
    bindkey: bytes | None = None
    """BTHome encryption key (16 bytes) of the device, if it encrypts its adverts."""


# -- BTHome v2 -------------------------------------------------------------------------------

_BTHOME = HassParser("bthome_ble", "BTHomeBluetoothDeviceData", "bthome-ble")


def _bthome_check(options: DecoderOptions) -> Callable[[Advert], None]:
    def check(advert: Advert) -> None:
        data = advert.service_data[BTHOME_UUID]
        if not data:
            raise UndecodableAdvert("BTHome service data is empty")
        version = data[0] >> 5
        if version != 2:
            raise UndecodableAdvert(f"BTHome version {version} in the device info byte; v2 only")
        if data[0] & 0x01 and options.bindkey is None:
            raise UndecodableAdvert("BTHome advert is encrypted: the device's bindkey is needed")

    return check


def bthome(options: DecoderOptions) -> AdvertDecoder:
    kwargs = {"bindkey": options.bindkey} if options.bindkey is not None else {}
    return SensorStateDataDecoder(
        "bthome",
        _BTHOME.create(**kwargs),
        matches=lambda a: BTHOME_UUID in a.service_data,
        check=_bthome_check(options),
    )


# -- Ruuvi -----------------------------------------------------------------------------------

_RUUVI = HassParser("ruuvitag_ble", "RuuvitagBluetoothDeviceData", "ruuvitag-ble")
RUUVI_RAWV2 = 0x05
RUUVI_RAWV2_LEN = 24


def _ruuvi_rawv2(advert: Advert) -> bytes | None:
    data = advert.manufacturer_data.get(RUUVI_COMPANY_ID, b"")
    return data if len(data) == RUUVI_RAWV2_LEN and data[0] == RUUVI_RAWV2 else None


def _ruuvi_extras(advert: Advert) -> Mapping[str, int | None]:
    # ruuvitag-ble leaves out the measurement sequence, which tells a repeated advert from a
    # new measurement; 0xFFFF is its not-available code.
    data = _ruuvi_rawv2(advert)
    if data is None:
        return {}
    (seq,) = struct.unpack_from(">H", data, 16)
    return {"packet_id": None if seq == 0xFFFF else seq}


def _ruuvi_mac(advert: Advert) -> str | None:
    data = _ruuvi_rawv2(advert)
    if data is None or data[18:24] == b"\xff" * 6:
        return None
    return mac_from_bytes(data[18:24])


def ruuvi(_: DecoderOptions) -> AdvertDecoder:
    return SensorStateDataDecoder(
        "ruuvi",
        _RUUVI.create(),
        matches=lambda a: RUUVI_COMPANY_ID in a.manufacturer_data,
        extras=_ruuvi_extras,
        mac=_ruuvi_mac,
    )


# -- Other Home Assistant parsers (optional packages) -----------------------------------------


def _hass_any(name: str, parser: HassParser) -> Callable[[DecoderOptions], AdvertDecoder]:
    def factory(_: DecoderOptions) -> AdvertDecoder:
        instance = parser.create()
        # These parsers know their own adverts best: matching is their supported().
        return SensorStateDataDecoder(name, instance, matches=lambda _a: True)

    return factory


def atc(_: DecoderOptions) -> AdvertDecoder:
    return AtcDecoder()


FORMATS: dict[str, Callable[[DecoderOptions], AdvertDecoder]] = {
    "bthome": bthome,
    "ruuvi": ruuvi,
    "atc": atc,
    "xiaomi": _hass_any(
        "xiaomi", HassParser("xiaomi_ble", "XiaomiBluetoothDeviceData", "xiaomi-ble")
    ),
    "govee": _hass_any("govee", HassParser("govee_ble", "GoveeBluetoothDeviceData", "govee-ble")),
    "inkbird": _hass_any(
        "inkbird", HassParser("inkbird_ble", "INKBIRDBluetoothDeviceData", "inkbird-ble")
    ),
    "thermobeacon": _hass_any(
        "thermobeacon",
        HassParser("thermobeacon_ble", "ThermoBeaconBluetoothDeviceData", "thermobeacon-ble"),
    ),
    "sensorpush": _hass_any(
        "sensorpush",
        HassParser("sensorpush_ble", "SensorPushBluetoothDeviceData", "sensorpush-ble"),
    ),
}
"""Format name -> decoder factory. bthome, ruuvi and atc come with ColdTrail; the others need
their parser package installed (``pip install govee-ble`` ...)."""

CONTRACT_FORMATS = ("bthome", "ruuvi", "atc")
"""What ``coldtrail decode ble`` guesses among when no format is given."""


def create_decoder(fmt: str, options: DecoderOptions | None = None) -> AdvertDecoder:
    factory = FORMATS.get(fmt)
    if factory is None:
        raise UndecodableAdvert(f"unknown BLE format {fmt!r}; known: {', '.join(FORMATS)}")
    return factory(options or DecoderOptions())


# -- Hex payloads, for the command line ----------------------------------------------------------

_AD_SERVICE_DATA_16 = 0x16
_AD_MANUFACTURER = 0xFF


def parse_hex(text: str) -> bytes:
    cleaned = re.sub(r"[\s:\-]", "", text.strip())
    cleaned = cleaned.removeprefix("0x").removeprefix("0X")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise UndecodableAdvert(f"not a hex string: {text!r}") from exc


def _ad_structures(raw: bytes) -> Advert | None:
    """Raw advertising data (length, type, value...), as a sniffer or hcidump shows it."""
    service: dict[str, bytes] = {}
    manufacturer: dict[int, bytes] = {}
    i = 0
    while i < len(raw):
        length = raw[i]
        if length == 0 or i + 1 + length > len(raw):
            return None
        ad_type, value = raw[i + 1], raw[i + 2 : i + 1 + length]
        if ad_type == _AD_SERVICE_DATA_16 and len(value) >= 2:
            service[uuid16(int.from_bytes(value[:2], "little"))] = value[2:]
        elif ad_type == _AD_MANUFACTURER and len(value) >= 2:
            manufacturer[int.from_bytes(value[:2], "little")] = value[2:]
        i += 1 + length
    if not service and not manufacturer:
        return None
    return Advert(service_data=service, manufacturer_data=manufacturer)


def _candidates(raw: bytes, fmt: str | None) -> list[tuple[str, Advert, bool]]:
    """Every reading of ``raw`` that is plausible, most specific first, each with whether the
    payload names that format itself (AD structures, or a UUID / company id in front)."""
    ad = _ad_structures(raw)
    if ad is not None:
        return [(name, ad, True) for name in ((fmt,) if fmt else CONTRACT_FORMATS)]
    prefixed = {
        b"\xd2\xfc": ("bthome", Advert(service_data={BTHOME_UUID: raw[2:]}), True),
        b"\x1a\x18": ("atc", Advert(service_data={ENVIRONMENTAL_SENSING_UUID: raw[2:]}), True),
        b"\x99\x04": ("ruuvi", Advert(manufacturer_data={RUUVI_COMPANY_ID: raw[2:]}), True),
    }
    bare = {
        "bthome": Advert(service_data={BTHOME_UUID: raw}),
        "atc": Advert(service_data={ENVIRONMENTAL_SENSING_UUID: raw}),
        "ruuvi": Advert(manufacturer_data={RUUVI_COMPANY_ID: raw}),
    }
    out: list[tuple[str, Advert, bool]] = []
    hit = prefixed.get(raw[:2])
    if hit is not None and (fmt is None or hit[0] == fmt):
        out.append(hit)
    out += [(name, advert, False) for name, advert in bare.items() if fmt in (None, name)]
    return out


def decode_hex(
    text: str,
    fmt: str | None = None,
    *,
    mac: str | None = None,
    rssi: int | None = None,
    options: DecoderOptions | None = None,
) -> Decoded:
    """Decode one advert payload given as hex: raw AD structures, service data with its 16-bit
    UUID in front (``d2fc...``, ``1a18...``), manufacturer data with its company id in front
    (``9904...``), or the bare payload. Without ``fmt`` the forms are tried in that order; a bare
    payload that two formats both read is refused as ambiguous rather than guessed."""
    raw = parse_hex(text)
    if not raw:
        raise UndecodableAdvert("empty payload")
    if fmt is not None and fmt not in FORMATS:
        raise UndecodableAdvert(f"unknown BLE format {fmt!r}; known: {', '.join(FORMATS)}")
    candidates = _candidates(raw, fmt)
    if not candidates:
        raise UndecodableAdvert(f"format {fmt} is read from raw AD structures only")
    decoded: list[Decoded] = []
    reasons: list[str] = []
    for name, advert, specific in candidates:
        try:
            result = create_decoder(name, options).decode(replace(advert, mac=mac, rssi=rssi))
        except UndecodableAdvert as exc:
            reasons.append(f"{name}: {exc.reason}")
            continue
        if specific:
            return result
        decoded.append(result)
    if len(decoded) == 1:
        return decoded[0]
    if len(decoded) > 1:
        names = ", ".join(d.format for d in decoded)
        raise UndecodableAdvert(f"ambiguous payload, it reads as {names}: give the format")
    raise UndecodableAdvert("; ".join(dict.fromkeys(reasons)) or "no decoder took it")
