"""``coldtrail dashboards provision`` against a local server that checks each request
against Grafana's documented HTTP API (no Grafana server runs on these machines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from grafana_client.api import GrafanaApi

from coldtrail.dashboards import boards
from coldtrail.dashboards.grafana import DATASOURCE_UID, FOLDER, Dashboard, to_json
from coldtrail.dashboards.provision import DataSource, provision
from coldtrail.errors import TransportError
from tests.conftest import cli_json
from tests.grafana_server import GrafanaServer

DS = DataSource("timescaledb:5432", "coldtrail", "grafana", "ro-secret", sslmode="disable")


@pytest.fixture
def grafana() -> Iterator[GrafanaServer]:
    with GrafanaServer() as server:
        yield server


def _api(server: GrafanaServer) -> GrafanaApi:
    api: GrafanaApi = GrafanaApi.from_url(server.url, credential=server.state.token)
    return api


def test_a_first_run_creates_the_data_source_folder_and_every_dashboard(
    grafana: GrafanaServer,
) -> None:
    report = provision(_api(grafana), DS, boards.ALL)
    assert report.created == [
        f"datasource:{DATASOURCE_UID}",
        f"folder:{FOLDER.uid}",
        *(f"dashboard:{b.uid}" for b in boards.ALL),
    ]
    s = grafana.state
    assert s.unexpected == []
    ds = s.datasources[DATASOURCE_UID]
    assert (ds["type"], ds["url"], ds["user"]) == ("grafana-postgresql-datasource",
                                                   "timescaledb:5432", "grafana")  # fmt: skip
    assert ds["jsonData"]["database"] == "coldtrail"
    assert ds["secureJsonData"] == {"password": "ro-secret"}
    for b in boards.ALL:
        stored = s.dashboards[b.uid]
        assert stored["meta"]["folderUid"] == FOLDER.uid
        panels = stored["dashboard"]["panels"]
        assert [p["targets"][0]["rawSql"] for p in panels] == [p.sql.strip() for p in b.panels]


def test_a_second_run_changes_nothing(grafana: GrafanaServer) -> None:
    provision(_api(grafana), DS, boards.ALL)
    before = len(grafana.state.writes())
    report = provision(_api(grafana), DS, boards.ALL)
    assert report.created == report.updated == []
    assert len(report.unchanged) == 2 + len(boards.ALL)
    assert len(grafana.state.writes()) == before, "no new versions on an idempotent run"
    assert all(d["dashboard"]["version"] == 1 for d in grafana.state.dashboards.values())


def test_a_changed_dashboard_or_data_source_is_updated_in_place(grafana: GrafanaServer) -> None:
    provision(_api(grafana), DS, boards.ALL)
    renamed = Dashboard(**{**boards.HEALTH.__dict__, "title": "Platform health (night shift)"})
    moved = DataSource(**{**DS.__dict__, "host": "db-replica:5432"})
    report = provision(_api(grafana), moved, [*boards.ALL[:-1], renamed])
    assert report.updated == [f"datasource:{DATASOURCE_UID}", f"dashboard:{renamed.uid}"]
    stored = grafana.state.dashboards[renamed.uid]["dashboard"]
    assert (stored["title"], stored["version"]) == ("Platform health (night shift)", 2)
    assert grafana.state.datasources[DATASOURCE_UID]["url"] == "db-replica:5432"
    assert grafana.state.datasources[DATASOURCE_UID]["secureJsonData"]["password"] == "ro-secret"


def test_a_dashboard_edited_in_grafana_is_put_back(grafana: GrafanaServer) -> None:
    provision(_api(grafana), DS, boards.ALL)
    grafana.state.dashboards[boards.FLEET.uid]["dashboard"]["panels"].pop()
    report = provision(_api(grafana), DS, boards.ALL)
    assert report.updated == [f"dashboard:{boards.FLEET.uid}"]
    stored = grafana.state.dashboards[boards.FLEET.uid]["dashboard"]
    assert len(stored["panels"]) == len(boards.FLEET.panels)


def test_wrong_credentials_are_a_clear_error(grafana: GrafanaServer) -> None:
    api = GrafanaApi.from_url(grafana.url, credential="not-the-token")
    with pytest.raises(TransportError, match=r"Grafana refused.*Unauthorized"):
        provision(api, DS, boards.ALL)


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    from coldtrail.net import free_port

    api = GrafanaApi.from_url(f"http://127.0.0.1:{free_port()}", credential="t", timeout=2.0)
    with pytest.raises(TransportError, match="cannot reach Grafana"):
        provision(api, DS, boards.ALL)


def test_the_server_double_refuses_what_grafana_refuses(grafana: GrafanaServer) -> None:
    """The checks the double makes, so the tests above can fail for the right reasons."""
    api = _api(grafana)
    with pytest.raises(Exception, match="folder not found"):
        api.dashboard.update_dashboard({"dashboard": to_json(boards.FLEET), "folderUid": "nope"})
    api.folder.create_folder("X", uid="x")
    doc = to_json(boards.FLEET)
    api.dashboard.update_dashboard({"dashboard": doc, "folderUid": "x"})
    with pytest.raises(Exception, match="version-mismatch"):
        api.dashboard.update_dashboard({"dashboard": doc, "folderUid": "x"})
    with pytest.raises(Exception, match="required"):
        api.datasource.create_datasource({"name": "x"})


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    out: dict[str, Any] = cli_json(argv, monkeypatch, **env)
    return out


def test_the_command_line_provisions_with_basic_auth_in_the_url(
    grafana: GrafanaServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    user, pw = grafana.state.basic
    url = grafana.url.replace("http://", f"http://{user}:{pw}@")
    db = "postgresql://grafana:p%40ss@timescaledb:5432/coldtrail?sslmode=disable"
    report = _cli(["dashboards", "provision", "--grafana-url", url, "--timescaledb"],
                  monkeypatch, COLDTRAIL_GRAFANA_DB_URL=db)  # fmt: skip
    assert len(report["created"]) == 2 + len(boards.ALL)
    ds = grafana.state.datasources[DATASOURCE_UID]
    assert ds["secureJsonData"]["password"] == "p@ss"
    assert ds["jsonData"]["timescaledb"] is True
    assert ds["jsonData"]["sslmode"] == "disable"


def test_the_command_line_takes_grafanas_password_from_the_environment(
    grafana: GrafanaServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    user, pw = grafana.state.basic
    db = "postgresql://grafana:pw@timescaledb:5432/coldtrail"
    argv = ["dashboards", "provision", "--grafana-url", grafana.url]
    report = _cli(argv, monkeypatch, COLDTRAIL_GRAFANA_DB_URL=db, COLDTRAIL_GRAFANA_USER=user,
                  COLDTRAIL_GRAFANA_PASSWORD=pw)  # fmt: skip
    assert len(report["created"]) == 2 + len(boards.ALL)


def test_export_writes_one_json_file_per_dashboard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    out = _cli(["dashboards", "export", "--out", str(tmp_path / "json")], monkeypatch)
    assert len(out["written"]) == len(boards.ALL)
    doc = json.loads((tmp_path / "json" / "coldtrail-fleet.json").read_text())
    assert doc == to_json(boards.FLEET)
