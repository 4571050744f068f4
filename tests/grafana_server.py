"""A local HTTP server speaking the part of Grafana's HTTP API that provisioning uses, and
checking each request against Grafana's documentation: authentication, JSON bodies, required
fields, uid rules, and the answers (404, 409, 412) a real server gives.

Documented endpoints: /api/datasources (POST, GET/PUT /uid/:uid), /api/folders (POST,
GET/PUT /:uid), /api/dashboards/db (POST), /api/dashboards/uid/:uid (GET), /api/health.
Anything else is recorded as unexpected and answered 404.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")


class Refused(Exception):
    """An HTTP error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GrafanaState:
    token: str = "glsa_test_token"
    basic: tuple[str, str] = ("admin", "admin-password")
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    next_id: int = 1

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id


def _need(body: dict[str, Any], *keys: str) -> None:
    for k in keys:
        if not isinstance(body.get(k), str) or not body[k]:
            raise Refused(400, f"{k} is required")


class _Handler(BaseHTTPRequestHandler):
    state: GrafanaState

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass

    def _auth_ok(self) -> bool:
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {self.state.token}":
            return True
        if header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return (user, pw) == self.state.basic
        return False

    def _body(self) -> dict[str, Any]:
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            raise Refused(415, "Content-Type must be application/json")
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise Refused(400, "bad request data") from exc
        if not isinstance(body, dict):
            raise Refused(400, "bad request data")
        return body

    def _answer(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        path = self.path.split("?")[0]
        self.state.requests.append((method, path))
        if path == "/api/health" and method == "GET":
            self._answer(200, {"database": "ok", "version": "11.3.0"})
            return
        if not self._auth_ok():
            self._answer(401, {"message": "Unauthorized"})
            return
        try:
            status, doc = self._route(method, path)
        except Refused as exc:
            status, doc = exc.status, {"message": str(exc)}
        self._answer(status, doc)

    def _route(self, method: str, path: str) -> tuple[int, Any]:
        s = self.state
        if m := re.fullmatch(r"/api/datasources/uid/([^/]+)", path):
            uid = m.group(1)
            if uid not in s.datasources:
                raise Refused(404, "Data source not found")
            if method == "GET":
                return 200, _public_datasource(s.datasources[uid])
            if method == "PUT":
                body = self._body()
                _need(body, "name", "type", "access")
                if body["access"] not in ("proxy", "direct"):
                    raise Refused(400, "access must be proxy or direct")
                stored = s.datasources[uid]
                keep_password = stored.get("secureJsonData", {}).get("password")
                stored.update(body, uid=uid, version=stored["version"] + 1)
                if "password" not in body.get("secureJsonData", {}) and keep_password:
                    stored.setdefault("secureJsonData", {})["password"] = keep_password
                return 200, {"message": "Datasource updated", "id": stored["id"]}
        if path == "/api/datasources" and method == "POST":
            body = self._body()
            _need(body, "name", "type", "access")
            uid = body.get("uid") or f"auto{s.next_id}"
            if not UID.match(uid):
                raise Refused(400, "invalid uid")
            if uid in s.datasources or any(
                d["name"] == body["name"] for d in s.datasources.values()
            ):
                raise Refused(409, "data source with the same name already exists")
            s.datasources[uid] = {**body, "uid": uid, "id": s._id(), "version": 1}
            return 200, {"message": "Datasource added", "id": s.datasources[uid]["id"]}
        if m := re.fullmatch(r"/api/folders/([^/]+)", path):
            uid = m.group(1)
            if uid not in s.folders:
                raise Refused(404, "folder not found")
            if method == "GET":
                return 200, s.folders[uid]
            if method == "PUT":
                body = self._body()
                _need(body, "title")
                folder = s.folders[uid]
                if not body.get("overwrite") and body.get("version") != folder["version"]:
                    raise Refused(412, "the folder has been changed by someone else")
                folder.update(title=body["title"], version=folder["version"] + 1)
                return 200, folder
        if path == "/api/folders" and method == "POST":
            body = self._body()
            _need(body, "title")
            uid = body.get("uid") or f"f{s.next_id}"
            if not UID.match(uid):
                raise Refused(400, "invalid uid")
            if uid in s.folders:
                raise Refused(409, "a folder with the same uid already exists")
            s.folders[uid] = {"uid": uid, "title": body["title"], "id": s._id(), "version": 1}
            return 200, s.folders[uid]
        if path == "/api/dashboards/db" and method == "POST":
            return self._save_dashboard(self._body())
        m = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if m and method == "GET":
            if m.group(1) not in s.dashboards:
                raise Refused(404, "Dashboard not found")
            return 200, s.dashboards[m.group(1)]
        s.unexpected.append(f"{method} {path}")
        raise Refused(404, "Not found")

    def _save_dashboard(self, body: dict[str, Any]) -> tuple[int, Any]:
        s = self.state
        dash = body.get("dashboard")
        if not isinstance(dash, dict) or not isinstance(dash.get("title"), str):
            raise Refused(400, "Dashboard title cannot be empty")
        uid = dash.get("uid")
        if not isinstance(uid, str) or not UID.match(uid):
            raise Refused(400, "Dashboard uid is invalid")
        folder = body.get("folderUid")
        if folder is not None and folder not in s.folders:
            raise Refused(400, "folder not found")
        if "panels" in dash and not all(isinstance(p.get("gridPos"), dict) for p in dash["panels"]):
            raise Refused(400, "every panel needs a gridPos")
        old = s.dashboards.get(uid)
        stale = old is not None and dash.get("version") != old["dashboard"]["version"]
        if stale and not body.get("overwrite"):
            raise Refused(412, "version-mismatch")
        version = 1 if old is None else old["dashboard"]["version"] + 1
        ident = s._id() if old is None else old["dashboard"]["id"]
        stored = {**dash, "id": ident, "version": version}
        # Grafana keeps what it was sent and adds fields of its own to each panel.
        for p in stored.get("panels", []):
            p.setdefault("pluginVersion", "11.3.0")
        s.dashboards[uid] = {
            "dashboard": stored,
            "meta": {"folderUid": folder, "version": version, "slug": uid},
        }
        return 200, {"id": ident, "uid": uid, "status": "success", "version": version,
                     "url": f"/d/{uid}/{uid}"}  # fmt: skip


def _public_datasource(ds: dict[str, Any]) -> dict[str, Any]:
    """Grafana never returns secrets: only which secure fields are set."""
    out = {k: v for k, v in ds.items() if k != "secureJsonData"}
    out["secureJsonFields"] = {k: True for k in ds.get("secureJsonData", {})}
    return out


class GrafanaServer:
    def __init__(self) -> None:
        self.state = GrafanaState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GrafanaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
