"""The installed ``coldtrail`` command, run as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from coldtrail import db
from tests.conftest import TIMESCALEDB

COLDTRAIL = shutil.which("coldtrail", path=str(Path(sys.executable).parent)) or "coldtrail"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLDTRAIL_")}
    return subprocess.run(
        [COLDTRAIL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        check=False,
    )


def test_db_upgrade_is_idempotent_from_the_command_line(empty_db_url: str) -> None:
    first = _run("db", "upgrade", COLDTRAIL_DATABASE_URL=empty_db_url)
    second = _run("db", "upgrade", COLDTRAIL_DATABASE_URL=empty_db_url)
    assert first.returncode == 0, first.stderr
    shipped = db.migrations()
    steps = [name for name, _ in db.TIMESCALE_STEPS] if TIMESCALEDB else []
    applied = json.loads(first.stdout)["applied"]
    assert applied == [f"{m.version:04d}_{m.name}" for m in shipped] + steps
    assert json.loads(second.stdout) == {
        "applied": [],
        "schema_version": shipped[-1].version,
        "timescaledb": TIMESCALEDB,
    }


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("db", "upgrade"), {}, "COLDTRAIL_DATABASE_URL is not set"),
        (
            ("ingest",),
            {"COLDTRAIL_DATABASE_URL": "postgresql:///x", "COLDTRAIL_MQTT_URL": "http://broker"},
            "mqtt:// or mqtts://",
        ),
        (
            ("api",),
            {"COLDTRAIL_DATABASE_URL": "postgresql:///x", "COLDTRAIL_SECRET_KEY": "short"},
            "at least 32 characters",
        ),
        (("sim", "modbus", "--device", "1:meltdown"), {}, "unknown scenario"),
    ],
)
def test_bad_settings_exit_2_with_one_clear_line(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = _run(*args, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_edge_config_names_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'site = "s1"\ngateway = "gw-1"\n[[devices]]\nsensor = "S 1"\nmodel = "xy-md02"\n'
    )
    result = _run("edge", "--config", str(cfg), COLDTRAIL_MQTT_URL="mqtt://127.0.0.1:1")
    assert result.returncode == 2
    assert "devices.0.sensor" in result.stderr
    assert "Traceback" not in result.stderr
    # One line: no link, no input echoed, no second error that only repeats the first.
    assert result.stderr.count("\n") == 1, result.stderr
    assert "pydantic.dev" not in result.stderr
    assert "at least 1 item" not in result.stderr


def test_audit_verify_and_kpi_from_the_command_line(db_url: str) -> None:
    import psycopg

    from tests.conftest import make_erp

    with psycopg.connect(db_url, autocommit=True) as conn:
        make_erp(conn)
    ok = _run("audit", "verify", COLDTRAIL_DATABASE_URL=db_url)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    kpi = _run(
        "kpi", "--since", "2026-11-01T00:00:00Z", "--until", "2026-11-22T00:00:00Z",
        COLDTRAIL_DATABASE_URL=db_url,
    )  # fmt: skip
    assert kpi.returncode == 0, kpi.stderr
    assert json.loads(kpi.stdout)["traceability"]["lots"] == 0
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE id = 3")
    broken = _run("audit", "verify", COLDTRAIL_DATABASE_URL=db_url)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["first_broken_id"] == 3
    naive = _run("kpi", "--since", "2026-11-01", COLDTRAIL_DATABASE_URL=db_url)
    assert naive.returncode == 2
    assert "UTC offset" in naive.stderr


def test_replay_and_alarm_contacts_from_the_command_line(db_url: str) -> None:
    import psycopg

    from tests.conftest import make_erp
    from tests.test_rules_event_time import _store

    with psycopg.connect(db_url, autocommit=True) as conn:
        make_erp(conn)
        _store(conn, "S1", [(m, 8.5 if 30 <= m < 50 else 5.0) for m in range(0, 120)])
    period = ("--since", "2026-11-22T10:00:00Z", "--until", "2026-11-22T12:00:00Z")
    asis = _run("replay", *period, COLDTRAIL_DATABASE_URL=db_url)
    assert asis.returncode == 0, asis.stderr
    [found] = json.loads(asis.stdout)["excursions"]
    assert (found["location_id"], found["recorded_id"]) == ("CR", None)  # never judged live
    wider = _run("replay", *period, "--profile", "2-8=..9", "--location", "CR=2..9/600",
                 COLDTRAIL_DATABASE_URL=db_url)  # fmt: skip
    assert wider.returncode == 0, wider.stderr
    assert json.loads(wider.stdout)["excursions"] == []
    bad = _run("replay", *period, "--profile", "2-8:9", COLDTRAIL_DATABASE_URL=db_url)
    assert bad.returncode == 2
    assert "ID=MIN..MAX" in bad.stderr
    added = _run("alarm", "contact", "Night shift", "webhook", "http://127.0.0.1:9/sms",
                 "--kind", "excursion", COLDTRAIL_DATABASE_URL=db_url)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["kinds"] == ["excursion"]
    unknown = _run("alarm", "contact", "x", "pager", "1", COLDTRAIL_DATABASE_URL=db_url)
    assert unknown.returncode == 2
    assert "unknown channel 'pager'" in unknown.stderr


def test_audit_verify_exits_1_naming_a_reading_or_row_changed_behind_the_triggers(
    db_url: str,
) -> None:
    import psycopg

    from tests.conftest import T0, make_erp, store_readings

    with psycopg.connect(db_url, autocommit=True) as conn:
        make_erp(conn)
        store_readings(conn, [("S1", n, T0 + timedelta(minutes=n), 5.0) for n in range(1, 6)])
    assert _run("audit", "verify", COLDTRAIL_DATABASE_URL=db_url).returncode == 0
    for stmt, undo, where, named in (
        (
            "UPDATE readings SET temperature_c = 3.3 WHERE seq = 3",
            "UPDATE readings SET temperature_c = 5.0 WHERE seq = 3",
            "readings",
            "S1 seq 3 at 2026-11-22 10:03:00+00 was changed",
        ),
        (
            "UPDATE locations SET temp_max_c = 25 WHERE id = 'CR'",
            "UPDATE locations SET temp_max_c = 8 WHERE id = 'CR'",
            "state",
            "locations CR: temp_max_c differ from the trail",
        ),
        (
            "DELETE FROM readings WHERE seq = 4",
            "",  # last: not put back
            "readings",
            "1 reading(s) removed, between S1 seq 3",
        ),
    ):
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(stmt)
        broken = _run("audit", "verify", COLDTRAIL_DATABASE_URL=db_url)
        assert broken.returncode == 1, broken.stderr
        out = json.loads(broken.stdout)
        assert out["ok"] is False
        assert named in out[where]["reason"], out[where]
        if undo:  # put back: it passes again
            with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute(undo)
            assert _run("audit", "verify", COLDTRAIL_DATABASE_URL=db_url).returncode == 0


@pytest.mark.parametrize(
    "url",
    ["postgresql://ct:hunter2@[db:5432/x", "postgresql://ct:hunter2@db:54x2/x", "host=db port"],
)
def test_a_malformed_database_url_is_one_line_and_exit_2_without_its_password(url: str) -> None:
    result = _run("audit", "verify", COLDTRAIL_DATABASE_URL=url)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "COLDTRAIL_DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
