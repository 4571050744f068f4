"""``coldtrail demo`` on its embedded defaults, started and stopped as a newcomer would."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from coldtrail.demo import BLE_LOGGERS, DEMO_SHIPMENT, LOCATIONS, LOGGERS, POLL_S, TRUCK_UNITS
from coldtrail.net import free_port
from tests.conftest import wait_for
from tests.test_cli import COLDTRAIL


def test_demo_excursion_starts_within_two_minutes() -> None:
    """The promise made to newcomers, checked on the scenario itself rather than by waiting."""
    limits = {loc.id: (loc.temp_min_c, loc.temp_max_c) for loc in LOCATIONS}
    publish_s = 2.0
    first_out = []
    for _, _, location, _, _, scenario in LOGGERS:
        lo, hi = limits[location]
        assert lo is not None
        assert hi is not None
        polls = [i * POLL_S for i in range(int(120 / POLL_S))]
        out = [t for t in polls if not lo <= scenario.sample(t).temperature_c <= hi]
        if out:
            first_out.append(out[0])
    assert first_out, "no demo logger ever leaves its range"
    assert min(first_out) + publish_s < 120


def test_demo_serves_live_readings_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """As the README runs it: no --data-dir (the default, a relative folder)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    env |= {
        "COLDTRAIL_API_BIND": f"127.0.0.1:{port}",
        "COLDTRAIL_ADMIN_PASSWORD": "demo-admin-password",
    }
    proc = subprocess.Popen(
        [COLDTRAIL, "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:

        def healthy() -> bool:
            try:
                return bool(httpx.get(f"{base}/health", timeout=1).status_code == 200)
            except httpx.TransportError:
                return proc.poll() is not None  # it died: stop waiting, the assert says so

        wait_for(healthy, timeout=60, what="the demo API")
        assert proc.poll() is None
        tok = httpx.post(
            f"{base}/auth/token", data={"username": "admin", "password": "demo-admin-password"}
        )
        headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}

        def all_reporting() -> dict[str, Any] | None:
            live: dict[str, Any] = httpx.get(f"{base}/live", headers=headers).json()
            return live if all(s["latest"] for s in live["sensors"]) else None

        live = wait_for(all_reporting, timeout=60, what="every demo device in /live")
        sensors = live["sensors"]
        devices = {lg[1] for lg in [*LOGGERS, *BLE_LOGGERS]} | {u[0] for u in TRUCK_UNITS}
        assert {s["sensor"] for s in sensors} == devices
        assert all(s["state"] in ("ok", "excursion") for s in sensors)
        (truck,) = live["vehicles"]
        assert truck["position"]["latitude"] == pytest.approx(52.52, abs=0.05)
        assert [len(c["doors"]) for c in truck["compartments"]] == [1, 1]
        assert [s["id"] for s in truck["shipments"]] == [DEMO_SHIPMENT]
        lots = httpx.get(f"{base}/lots", headers=headers).json()
        assert {lot["lot_number"] for lot in lots} == {"INS-2611A", "INS-2612B", "GTS-0042"}
        shipment = httpx.get(f"{base}/shipments/{DEMO_SHIPMENT}", headers=headers).json()
        assert shipment["shipment"]["state"] == "in_transit"
        assert [lot["aboard"] for lot in shipment["lots"]] == ["40", "40"]
        assert httpx.get(f"{base}/audit/verify", headers=headers).json()["ok"] is True
        # The shipment leaves as the demo starts: its record has no gap at the start (loaded
        # 30 min before, the first record an auditor saw was 25 % complete).
        record = httpx.get(
            f"{base}/shipments/{DEMO_SHIPMENT}/record", params={"format": "json"}, headers=headers
        ).json()
        assert record["summary"]["gaps"] == 0, record["gaps"]
        # Its events go to its own broker, which has no MQTT 5 (tests/test_outbox.py shows
        # the sink delivering to it so).
        (dest,) = httpx.get(f"{base}/outbox/destinations", headers=headers).json()
        assert dest["url"].endswith("/coldtrail?protocol=3.1.1")
        assert httpx.get(f"{base}/outbox/dead", headers=headers).json() == []
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "demo stopped" in output
    assert (tmp_path / ".coldtrail" / "demo" / "edge-gw-trk01.toml").is_file()
    # Its database, for `coldtrail audit verify`, `report` and `kpi`: whole, so the command
    # works as printed (its own database; a redacted password made it useless).
    [printed] = [ln for ln in output.splitlines() if "COLDTRAIL_DATABASE_URL='" in ln]
    assert "postgresql://" in printed
    assert "***" not in printed


def test_demo_with_its_port_taken_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """It once printed 18 tracebacks and never ended."""
    import socket

    env = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [COLDTRAIL, "demo", "--data-dir", str(tmp_path / "demo")],
            env={**env, "COLDTRAIL_API_BIND": f"127.0.0.1:{port}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{port} is taken" in result.stderr


def test_demo_data_loads_again_after_a_sensor_was_moved(conn: Any, db_url: str) -> None:
    """A restart after someone moved a sensor crashed: placing it again from yesterday
    made a placement end before it began."""
    from datetime import UTC, datetime

    from coldtrail.demo import load_demo_data
    from coldtrail.erp.masterdata import assign_sensor
    from coldtrail.errors import RuleViolation

    load_demo_data(db_url)
    _, sensor, home, *_ = LOGGERS[0]
    other = (
        next(loc.id for loc in LOCATIONS if loc.id != home and loc.kind == "cold_room")
        if (any(loc.id != home and loc.kind == "cold_room" for loc in LOCATIONS))
        else next(loc.id for loc in LOCATIONS if loc.id != home and loc.kind == "compartment")
    )
    with conn.transaction():
        assign_sensor(conn, sensor, other, datetime.now(UTC), "moved by QA")
    load_demo_data(db_url)  # the restart
    where = conn.execute(
        "SELECT location_id FROM sensor_assignments WHERE sensor_id = %s AND upper_inf(valid)",
        (sensor,),
    ).fetchone()
    assert where == (other,)
    # Placing it anywhere from before its placement began is refused with a reason.
    with pytest.raises(RuleViolation, match="a new placement starts after that"):
        assign_sensor(conn, sensor, home, datetime(2020, 1, 1, tzinfo=UTC))
