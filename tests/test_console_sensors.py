"""The console's probes and calibration pages: which probes no certificate covers, QA filing
a certificate and logistics placing a sensor, each refused as the API refuses it."""

from __future__ import annotations

from typing import Any

import httpx2
import psycopg

from tests.conftest import QA_PASSWORD
from tests.test_console import Site, _signed_in, site  # noqa: F401 - the fixture
from tests.test_record import shipped  # noqa: F401 - the fixture site needs

# The site's day (Asia/Shanghai) at the fixture's clock: 2026-11-22 22:00 there.
TODAY = "2026-11-22"
ISSUER = "上海市计量测试技术研究院"
EN = {"Accept-Language": "en"}


def _rows(page: str) -> dict[str, str]:
    """The probes table's rows by sensor id, as text without tags."""
    import re

    rows: dict[str, str] = {}
    for row in re.findall(r"<tr><th scope=\"row\">(.*?)</tr>", page, flags=re.S):
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip()
        text = re.sub(r" ([,)])", r"\1", text)
        rows[text.split(" ")[0]] = text
    return rows


def test_the_probes_page_shows_which_probes_no_certificate_covers_today(
    site: Site,  # noqa: F811
) -> None:
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        _signed_in(http, "audi1", QA_PASSWORD)  # an auditor reads it too
        every = _rows(http.get("/sensors").text)
        # S1 claims a due date in 2027 with nothing on file: a claim, not evidence.
        assert "no certificate on file" in every["S1"]
        assert "valid until 2027-10-23 (335 days left)" in every["S2"]
        assert "overdue, last valid until 2025-01-10" in every["S3"]
        assert "rear door" in every["S3"]
        attention = _rows(http.get("/sensors?show=attention").text)
        assert sorted(attention) == ["S1", "S3"]
        assert "to calibrate (2)" in http.get("/sensors").text
        zh = http.get("/sensors", headers={"Accept-Language": "zh-CN"}).text
        assert "无校准证书" in zh


def test_qa_files_a_certificate_and_the_probe_counts_as_calibrated_until_it_runs_out(
    site: Site,  # noqa: F811
) -> None:
    cert = {"certificate_no": "JJG-2026-88", "issuer": ISSUER, "calibrated_on": "2026-11-10",
            "valid_until": "2026-12-10", "passed": "true", "max_error_c": "0.15"}  # fmt: skip
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        form = http.get("/sensors/S1").text
        assert 'action="/sensors/S1/calibrations"' in form
        done = http.post("/sensors/S1/calibrations", data={**cert, "csrf": csrf})
        assert done.status_code == 303, done.text
        page = http.get("/sensors/S1").text
        assert ISSUER in page
        assert "valid until 2026-12-10" in page
        # Eighteen days left: covered, and still on the list of what to calibrate.
        row = _rows(http.get("/sensors?show=attention").text)["S1"]
        assert "valid until 2026-12-10 (18 days left)" in row
        again = http.post("/sensors/S1/calibrations", data={**cert, "csrf": csrf})
        assert again.status_code == 409
        assert "JJG-2026-88 is on file for S1 already" in again.text
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute(
            "SELECT issuer, max_error_c, recorded_by FROM calibration_certificates"
            " WHERE certificate_no = 'JJG-2026-88'"
        ).fetchall() == [(ISSUER, 0.15, "qa1")]
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE record_type = 'calibration_certificates'"
            " AND actor = 'qa1'"
        ).fetchone() == (1,)


def test_a_certificate_form_is_refused_as_the_api_refuses_it(site: Site) -> None:  # noqa: F811
    good = {"certificate_no": "C-1", "issuer": "NIM", "calibrated_on": "2026-11-10",
            "valid_until": "2027-11-10", "passed": "true"}  # fmt: skip
    refused = [
        ({"valid_until": "2026-11-01"}, "valid_until must come after calibrated_on"),
        ({"max_error_c": "nan"}, "max_error_c"),
        ({"max_error_c": "1e400"}, "max_error_c"),
        ({"max_error_c": "-1"}, "greater than or equal to 0"),
        ({"calibrated_on": "0000-01-01"}, "calibrated_on"),
        ({"valid_until": "2026-13-40"}, "valid_until"),
        ({"certificate_no": "   "}, "certificate_no"),
        ({"issuer": "x" * 201}, "issuer"),
    ]
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "qa1", QA_PASSWORD)
        for change, message in refused:
            resp = http.post("/sensors/S1/calibrations", data={**good, **change, "csrf": csrf})
            assert resp.status_code == 409, (change, resp.status_code)
            assert message in resp.text, (change, resp.text)
            assert "pydantic" not in resp.text
        assert http.post("/sensors/NOPE/calibrations",
                         data={**good, "csrf": csrf}).status_code == 404  # fmt: skip
        assert http.get("/sensors/NOPE").status_code == 404
    with psycopg.connect(site.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM calibration_certificates "
                            "WHERE sensor_id = 'S1'").fetchone() == (0,)  # fmt: skip


def test_logistics_places_a_sensor_in_the_sites_time_and_qa_and_auditors_can_not(
    site: Site,  # noqa: F811
) -> None:
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "logi1", QA_PASSWORD)
        page = http.get("/sensors/S3").text
        assert 'action="/sensors/S3/placements"' in page
        assert 'action="/sensors/S3/calibrations"' not in page  # logistics files none
        move = {"location_id": "CR", "position": "货架3上层", "csrf": csrf}
        for since, message in (
            ("9999-12-31T23:59", "at most 1 day ahead"),
            ("0001-01-01T00:00", "1970 or later"),
            ("yesterday", "not a time"),
            ("2026-11-22T09:00", "a new placement starts after that"),  # before its last
        ):
            resp = http.post("/sensors/S3/placements", data={**move, "since": since})
            assert resp.status_code == 409, (since, resp.text)
            assert message in resp.text, (since, resp.text)
        assert http.post("/sensors/S3/placements",
                         data={**move, "location_id": "NOWHERE",
                               "since": "2026-11-22T21:30"}).status_code == 404  # fmt: skip
        done = http.post("/sensors/S3/placements", data={**move, "since": "2026-11-22T21:30"})
        assert done.status_code == 303, done.text
        assert "2026-11-22 21:30:00 +08:00" in http.get("/sensors/S3").text
    for user, password in (("qa1", QA_PASSWORD), ("audi1", QA_PASSWORD)):
        with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
            csrf = _signed_in(http, user, password)
            assert 'action="/sensors/S3/placements"' not in http.get("/sensors/S3").text
            resp = http.post("/sensors/S3/placements",
                             data={"location_id": "TC", "since": "2026-11-22T21:45",
                                   "csrf": csrf})  # fmt: skip
            assert resp.status_code == 403
    with httpx2.Client(base_url=site.url, follow_redirects=False, headers=EN) as http:
        csrf = _signed_in(http, "audi1", QA_PASSWORD)
        cert = {"certificate_no": "X", "issuer": "X", "calibrated_on": "2026-11-01",
                "valid_until": "2027-11-01", "passed": "true", "csrf": csrf}  # fmt: skip
        resp = http.post("/sensors/S1/calibrations", data=cert)
        assert resp.status_code == 403
    with psycopg.connect(site.db_url) as conn:
        rows: list[Any] = conn.execute(
            "SELECT location_id, position, lower(valid) AT TIME ZONE 'Asia/Shanghai', "
            "upper_inf(valid) FROM sensor_assignments WHERE sensor_id = 'S3' ORDER BY lower(valid)"
        ).fetchall()
    assert [(r[0], r[1], f"{r[2]:%H:%M}", r[3]) for r in rows] == [
        ("TC", "rear door", "17:00", False),
        ("CR", "货架3上层", "21:30", True),
    ]
