"""The production compose file, its image and its configuration, checked without Docker:
the files it mounts exist, every service command is one ``coldtrail`` accepts, secrets come
from the env file, nothing listens publicly that needn't; and ``docker compose config``
(or docker-compose) validates it against the Compose schema where the client is installed
(``.ci/run`` installs it). The init script of the database runs on the real PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from coldtrail import cli
from tests.conftest import PG_URL, TIMESCALEDB, cli_json

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
ONE_SHOT = {"migrate", "mosquitto-auth", "dashboards"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _env_names() -> set[str]:
    return {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }


def test_every_mounted_file_and_build_context_exists(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        if "build" in svc:
            assert (ROOT / svc["build"] / "Dockerfile").is_file()


def test_every_service_command_is_a_coldtrail_command(compose: dict[str, Any]) -> None:
    parser = cli.build_parser()
    for svc in compose["services"].values():
        if svc.get("image", "").startswith("coldtrail"):
            args = [re.sub(r"\$\{[^}]+\}", "x", a) for a in svc["command"]]
            parser.parse_args(args)  # exits (a test error) on anything coldtrail refuses
        test = (svc.get("healthcheck") or {}).get("test", [])
        if test[:2] == ["CMD", "coldtrail"]:
            parser.parse_args(test[2:])


def test_long_running_services_restart_and_report_health(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            assert svc["restart"] in ("no", "on-failure"), name
            continue
        assert svc["restart"] == "unless-stopped", name
        assert "healthcheck" in svc, f"{name} has no health check"
    assert compose["services"]["ingest"]["deploy"]["replicas"] == 2


def test_dependencies_exist_and_wait_for_readiness(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert how["condition"] == want, f"{name} -> {dep}"


def test_only_the_gateways_tls_port_is_public(compose: dict[str, Any]) -> None:
    public = []
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                public.append((name, str(port)))
    assert public == [("mosquitto", "8883:8883")]


def test_secrets_come_from_the_env_file_and_are_required(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used == _env_names(), "docker-compose.yml and deploy/env.example disagree"
    assert not re.search(r"\$\{\w+(:-|-)", text), "a secret must not fall back to a default"
    # No literal password in the file itself.
    for svc in compose["services"].values():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if "PASSWORD" in key or "SECRET" in key:
                assert "${" in str(value), key


def test_no_secret_is_passed_on_a_command_line(compose: dict[str, Any]) -> None:
    """`ps` on the host and `docker inspect` show every process's arguments: secrets go in
    the environment (the Grafana password was in the dashboards command's URL)."""
    for name, svc in compose["services"].items():
        command = svc.get("command") or []
        args = command if isinstance(command, list) else [command]
        assert not [a for a in args if "${" in str(a) or re.search(r"//[^/@]+:[^/@]+@", a)], name


def test_the_api_runs_with_a_memory_limit(compose: dict[str, Any]) -> None:
    limit = str(compose["services"]["api"].get("mem_limit", ""))
    assert re.fullmatch(r"\d+[mg]", limit), "the API container needs a memory limit"


def test_the_cas_key_stays_out_of_the_folder_the_broker_mounts(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = tmp_path / "deploy" / "certs"
    argv = ["tls", "self-signed", "--out", str(certs), "--host", "mqtt.example.com"]
    files = cli_json(argv, monkeypatch)
    assert sorted(p.name for p in certs.iterdir()) == ["ca.crt", "server.crt", "server.key"]
    ca_key = Path(files["ca_key"])
    assert ca_key == tmp_path / "deploy" / "certs-ca" / "ca.key"
    assert (ca_key.stat().st_mode & 0o777, ca_key.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    mounted = [
        v.split(":")[0] for svc in compose["services"].values() for v in svc.get("volumes", [])
    ]
    assert "./deploy/certs" in mounted
    assert not [m for m in mounted if "certs-ca" in m]
    same = ["tls", "self-signed", "--out", str(certs), "--ca-out", str(certs), "--host", "x"]
    assert cli.main(same) == 2


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:  # fmt: skip
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_the_compose_client_validates_the_file(tmp_path: Path) -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no docker compose client here (.ci/run installs docker-compose)")
    (tmp_path / "with").mkdir()
    (tmp_path / "bare").mkdir()
    env = tmp_path / "with" / ".env"
    env.write_text(ENV_EXAMPLE.read_text())
    run = subprocess.run(
        [*client, "--project-directory", str(ROOT), "--env-file", str(env), "-f", str(COMPOSE),
         "config", "-q"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # Without the env file, the required secrets stop it with a message naming them.
    bare = subprocess.run(
        [*client, "--project-directory", str(tmp_path / "bare"), "-f", str(COMPOSE), "config",
         "-q"],
        capture_output=True, text=True, check=False, timeout=60,
        env={k: v for k, v in os.environ.items() if "PASSWORD" not in k},
    )  # fmt: skip
    assert bare.returncode != 0
    assert "set in .env" in bare.stderr


def test_the_database_init_script_creates_the_login_roles(tmp_path: Path) -> None:
    """Run as the official image runs it (psql as POSTGRES_USER), on the real server."""
    suffix = uuid.uuid4().hex[:8]
    app, reader = f"ct_app_{suffix}", f"ct_ro_{suffix}"
    dbname = f"ct_init_{suffix}"
    server = psycopg.conninfo.conninfo_to_dict(PG_URL)
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        env = {
            **os.environ, "PGHOST": str(server.get("host", "127.0.0.1")),
            "PGPORT": str(server.get("port", "5432")),
            "POSTGRES_USER": "postgres", "POSTGRES_DB": dbname,
            "APP_DB_USER": app, "APP_DB_PASSWORD": "app-pw",
            "GRAFANA_DB_USER": reader, "GRAFANA_DB_PASSWORD": "ro-pw",
        }  # fmt: skip
        script = ROOT / "deploy" / "postgres" / "init-roles.sh"
        run = subprocess.run(["/bin/sh", str(script)], env=env, capture_output=True, text=True,
                             check=False, timeout=60)  # fmt: skip
        assert run.returncode == 0, run.stderr
        with psycopg.connect(PG_URL, autocommit=True) as c:
            members: dict[str, str] = dict(
                c.execute(
                    "SELECT m.rolname, r.rolname FROM pg_auth_members a "
                    "JOIN pg_roles m ON m.oid = a.member JOIN pg_roles r ON r.oid = a.roleid "
                    "WHERE m.rolname = ANY(%s)",
                    ([app, reader],),
                ).fetchall()
            )
            assert members == {app: "coldtrail_app", reader: "coldtrail_readonly"}
            [[settings]] = c.execute(
                "SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                "WHERE r.rolname = %s",
                (reader,),
            ).fetchall()
            assert "default_transaction_read_only=on" in settings
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
            for role in (app, reader):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_image_runs_coldtrail_as_a_user_not_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert 'ENTRYPOINT ["coldtrail"]' in text
    stages = ("edge", "ingest", "rules", "api", "console", "erp", "dashboards", "firmware-sim")
    for folder in stages:
        assert f"COPY {folder} ./{folder}" in text, f"the image lacks {folder}/"


def test_compose_runs_the_timescaledb_and_postgresql_the_tests_run(
    compose: dict[str, Any],
) -> None:
    """The image is pinned to the pairing tested: compose ran 2.17.2 on PostgreSQL 16 while
    the tests never ran TimescaleDB at all. On the TimescaleDB run the versions must match
    the server's; on the plain run, PostgreSQL's major version."""
    image = compose["services"]["timescaledb"]["image"]
    found = re.fullmatch(r"timescale/timescaledb:(\d+\.\d+\.\d+)-pg(\d+)", image)
    assert found, image
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        major = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
        assert major == (int(found[2]),)
        if TIMESCALEDB:
            version = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            assert version == (found[1],)
