"""Pushing the data source, the folder and the dashboards to Grafana, keyed by uid.

Idempotent: what Grafana already holds as we would write it is left alone (no new dashboard
version on every run); only what differs is created or updated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from niquests.exceptions import RequestException

from coldtrail.dashboards.grafana import (
    DATASOURCE_TYPE,
    DATASOURCE_UID,
    FOLDER,
    Dashboard,
    Folder,
    to_json,
)
from coldtrail.errors import TransportError

MESSAGE = "coldtrail dashboards provision"


@dataclass(frozen=True)
class DataSource:
    """The PostgreSQL/TimescaleDB data source Grafana queries, as a read-only role."""

    host: str  # host:port as Grafana's server reaches the database
    database: str
    user: str
    password: str
    sslmode: str = "require"
    timescaledb: bool = False
    name: str = "ColdTrail"
    uid: str = DATASOURCE_UID

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "name": self.name,
            "type": DATASOURCE_TYPE,
            "access": "proxy",
            "url": self.host,
            "user": self.user,
            "isDefault": False,
            "jsonData": {
                "database": self.database,
                "sslmode": self.sslmode,
                "timescaledb": self.timescaledb,
                "postgresVersion": 1500,
                "maxOpenConns": 10,
                "connMaxLifetime": 14400,
            },
            "secureJsonData": {"password": self.password},
        }


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _contains(have: Any, want: Any) -> bool:
    """Whether ``have`` holds everything of ``want`` (Grafana adds keys of its own)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and _contains(have[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(_contains(h, w) for h, w in zip(have, want, strict=True))
        )
    return bool(have == want)


def _get(call: Any, *args: Any) -> Any | None:
    """A GET that may find nothing: 404 is None, other errors pass on."""
    try:
        return call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def provision(
    api: GrafanaApi,
    datasource: DataSource,
    boards: Sequence[Dashboard],
    *,
    folder: Folder = FOLDER,
    update_password: bool = False,
) -> Report:
    """Create or update; raises TransportError with Grafana's answer if it refuses."""
    report = Report()
    try:
        _datasource(api, datasource, report, update_password)
        _folder(api, folder, report)
        for board in boards:
            _dashboard(api, board, folder, datasource.uid, report)
    except GrafanaException as exc:
        raise TransportError(f"Grafana refused: {exc}") from exc
    except RequestException as exc:
        raise TransportError(f"cannot reach Grafana: {exc}") from exc
    return report


def _datasource(api: GrafanaApi, ds: DataSource, report: Report, update_password: bool) -> None:
    want = ds.to_json()
    have = _get(api.datasource.get_datasource_by_uid, ds.uid)
    label = f"datasource:{ds.uid}"
    if have is None:
        api.datasource.create_datasource(want)
        report.created.append(label)
        return
    plain = {k: v for k, v in want.items() if k != "secureJsonData"}
    password_set = bool((have.get("secureJsonFields") or {}).get("password"))
    if _contains(have, plain) and password_set and not update_password:
        report.unchanged.append(label)
        return
    api.datasource.update_datasource_by_uid(ds.uid, want)
    report.updated.append(label)


def _folder(api: GrafanaApi, folder: Folder, report: Report) -> None:
    have = _get(api.folder.get_folder, folder.uid)
    label = f"folder:{folder.uid}"
    if have is None:
        api.folder.create_folder(folder.title, uid=folder.uid)
        report.created.append(label)
    elif have.get("title") != folder.title:
        api.folder.update_folder(folder.uid, title=folder.title, overwrite=True)
        report.updated.append(label)
    else:
        report.unchanged.append(label)


def _dashboard(
    api: GrafanaApi, board: Dashboard, folder: Folder, ds_uid: str, report: Report
) -> None:
    want = to_json(board, ds_uid)
    have = _get(api.dashboard.get_dashboard, board.uid)
    label = f"dashboard:{board.uid}"
    if have is not None:
        same_folder = (have.get("meta") or {}).get("folderUid") == folder.uid
        if same_folder and _contains(have.get("dashboard"), want):
            report.unchanged.append(label)
            return
    api.dashboard.update_dashboard(
        {"dashboard": want, "folderUid": folder.uid, "overwrite": True, "message": MESSAGE}
    )
    (report.created if have is None else report.updated).append(label)
