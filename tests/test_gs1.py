"""GS1 element strings and UDI, as scanners deliver them, read into lots.

The GTIN 09501101530003 is the example the GS1 General Specifications use throughout; the
dates check the rules of AIs (11) and (17): YYMMDD, day 00 meaning the month's last day.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import psycopg
import pytest

from coldtrail.cli import main
from coldtrail.erp.gs1 import decode_gs1
from coldtrail.erp.products import register_scan
from coldtrail.errors import Conflict, PayloadError
from tests.conftest import GTIN, make_erp

GS = "\x1d"


@pytest.mark.parametrize(
    ("text", "lot", "serial", "expiry", "production"),
    [
        ("(01)09501101530003(17)140704(10)AB-123", "AB-123", None, date(2014, 7, 4), None),
        # Day 00: the last day of the month, leap years included.
        ("(01)09501101530003(17)250200(10)AB-123", "AB-123", None, date(2025, 2, 28), None),
        ("(01)09501101530003(17)240200(11)241015(10)X", "X", None, date(2024, 2, 29),
         date(2024, 10, 15)),
        # Raw, as a scanner sends it: GS ends the variable-length lot before the serial.
        (f"0109501101530003" f"10AB-123{GS}21SN0001", "AB-123", "SN0001", None, None),
        ("]d2010950110153000310AB-123<GS>21SN0001", "AB-123", "SN0001", None, None),
        ("]C1010950110153000317251231" "10AB-123", "AB-123", None, date(2025, 12, 31), None),
        ("https://id.gs1.org/01/09501101530003/10/AB-123/21/7?17=251231", "AB-123", "7",
         date(2025, 12, 31), None),
    ],
)  # fmt: skip
def test_gs1_strings_decode(
    text: str, lot: str, serial: str | None, expiry: date | None, production: date | None
) -> None:
    data = decode_gs1(text)
    assert (data.gtin, data.lot, data.serial, data.expiry, data.production_date) == (
        GTIN, lot, serial, expiry, production,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(01)09501101530004", "not a valid GTIN"),
        ("(01)09501101530003(10)ABCDEFGHIJKLMNOPQRSTUVWXYZ", "(10)"),
        ("hello", "Application Identifier"),
        ("   ", "empty"),
    ],
)
def test_bad_gs1_strings_say_why(text: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_gs1(text)


def test_decode_gs1_prints_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "gs1", "(01)09501101530003(17)250200(10)AB-123(21)42"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("gtin", "lot", "serial", "expiry", "production_date")} == {
        "gtin": GTIN,
        "lot": "AB-123",
        "serial": "42",
        "expiry": "2025-02-28",
        "production_date": None,
    }


def test_decode_gs1_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "gs1", "(01)09501101530004"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a valid GTIN" in err


def test_a_scan_registers_the_lot_once_and_refuses_a_disagreeing_one(
    conn: psycopg.Connection[tuple[Any, ...]],
) -> None:
    make_erp(conn)
    conn.execute("UPDATE products SET serialised = true")
    first = register_scan(conn, "logi1", "(01)09501101530003(17)270131(10)L77(21)1001")
    again = register_scan(conn, "logi1", "(01)09501101530003(17)270131(10)L77(21)1002")

    assert again.id == first.id
    assert (again.lot_number, again.expiry, again.serials) == ("L77", date(2027, 1, 31),
                                                             ("1001", "1002"))  # fmt: skip
    with pytest.raises(Conflict, match="registered with expiry 2027-01-31, not 2027-02-28"):
        register_scan(conn, "logi1", "(01)09501101530003(17)270228(10)L77")
    with pytest.raises(PayloadError, match=r"needs both \(01\) GTIN and \(10\) lot"):
        register_scan(conn, "logi1", "(01)09501101530003(17)270228")
