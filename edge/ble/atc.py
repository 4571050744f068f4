"""ATC/pvvx custom firmware for Xiaomi LYWSD03MMC and kin (github.com/pvvx/ATC_MiThermometer).

No maintained Home Assistant parser reads these two forms (HA reaches pvvx devices through
their BTHome mode), so they are decoded here. Service data under UUID 0x181A, told apart by
length:

- atc1441, 13 bytes, big-endian: MAC, temperature s16 x0.1 degC, humidity u8 %, battery u8 %,
  battery u16 mV, frame counter u8;
- pvvx, 15 bytes, little-endian: MAC reversed, temperature s16 x0.01 degC, humidity u16 x0.01 %,
  battery u16 mV, battery u8 %, counter u8, flags u8.
"""

from __future__ import annotations

import struct

from coldtrail.edge.ble.advert import (
    ENVIRONMENTAL_SENSING_UUID,
    Advert,
    Decoded,
    UndecodableAdvert,
    mac_from_bytes,
)

ATC1441_LEN = 13
PVVX_LEN = 15


def decode_atc_payload(data: bytes, rssi: int | None = None) -> Decoded:
    values: dict[str, float | int | None]
    if len(data) == ATC1441_LEN:
        mac = mac_from_bytes(data[:6])
        temp, hum, batt_pct, batt_mv, counter = struct.unpack(">hBBHB", data[6:])
        values = {
            "temperature_c": round(temp * 0.1, 1),
            "humidity_pct": float(hum),
            "battery_pct": float(batt_pct),
            "battery_v": batt_mv / 1000,
            "packet_id": counter,
        }
        fmt = "atc1441"
    elif len(data) == PVVX_LEN:
        mac = mac_from_bytes(data[5::-1])
        temp, hum, batt_mv, batt_pct, counter, _flags = struct.unpack("<hHHBBB", data[6:])
        values = {
            "temperature_c": round(temp * 0.01, 2),
            "humidity_pct": round(hum * 0.01, 2),
            "battery_pct": float(batt_pct),
            "battery_v": batt_mv / 1000,
            "packet_id": counter,
        }
        fmt = "pvvx"
    else:
        raise UndecodableAdvert(
            f"ATC/pvvx service data is {ATC1441_LEN} (atc1441) or {PVVX_LEN} (pvvx) bytes, "
            f"not {len(data)}"
        )
    if values["battery_pct"] is not None and values["battery_pct"] > 100:
        raise UndecodableAdvert(f"{fmt}: battery {values['battery_pct']} % is not a percentage")
    if rssi is not None:
        values["rssi_dbm"] = rssi
    return Decoded(format=fmt, values=values, mac=mac)


class AtcDecoder:
    """Both ATC forms; the pvvx form's flags and the atc1441 form carry no not-available code."""

    name = "atc"

    def matches(self, advert: Advert) -> bool:
        return ENVIRONMENTAL_SENSING_UUID in advert.service_data

    def decode(self, advert: Advert) -> Decoded:
        data = advert.service_data.get(ENVIRONMENTAL_SENSING_UUID)
        if data is None:
            raise UndecodableAdvert("no service data under UUID 0x181A (ATC/pvvx)")
        return decode_atc_payload(data, advert.rssi)
