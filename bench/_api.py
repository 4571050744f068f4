"""The API as benchmarks run it: ``coldtrail api`` in a process of its own, on a scratch
database, reached over real HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2

from coldtrail.net import free_port

ADMIN_PW = "bench-admin-password"


@dataclass(frozen=True)
class Api:
    port: int
    token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def running_api(
    database_url: str,
    mqtt_url: str | None = None,
    topic_root: str = "coldtrail",
    settings: dict[str, str] | None = None,
) -> Iterator[Api]:
    """Starts the API (with ``settings``, more COLDTRAIL_* variables), waits until it answers
    (and its push stream is live, given a broker), signs in as admin."""
    port = free_port()
    env = {
        **os.environ,
        "COLDTRAIL_DATABASE_URL": database_url,
        "COLDTRAIL_MQTT_TOPIC_ROOT": topic_root,
        "COLDTRAIL_SECRET_KEY": uuid.uuid4().hex * 2,
        "COLDTRAIL_ADMIN_PASSWORD": ADMIN_PW,
        "COLDTRAIL_API_BIND": f"127.0.0.1:{port}",
        **(settings or {}),
    }
    env.pop("COLDTRAIL_MQTT_URL", None)
    if mqtt_url:
        env["COLDTRAIL_MQTT_URL"] = mqtt_url
    proc = subprocess.Popen([sys.executable, "-m", "coldtrail", "api"], env=env)
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 60
            want = "live" if mqtt_url else "off"
            while True:
                with contextlib.suppress(httpx2.TransportError):
                    health = http.get("/api/v1/health")
                    if health.status_code == 200 and health.json()["stream"] == want:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the API did not come up")
                time.sleep(0.1)
            resp = http.post("/api/v1/auth/token", data={"username": "admin", "password": ADMIN_PW})
            resp.raise_for_status()
            token = str(resp.json()["access_token"])
        yield Api(port, token)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
