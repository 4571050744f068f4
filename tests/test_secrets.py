"""Secrets at start-up and in messages: the example file's placeholders and weak keys are
refused, `coldtrail env-init` makes real ones, and no error echoes a secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import psycopg
import pytest

from coldtrail import cli
from coldtrail.errors import ConfigError
from coldtrail.redact import redact_text, redact_url
from coldtrail.settings import MqttEndpoint, load_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy" / "env.example"


def _example_values() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("COLDTRAIL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


@pytest.mark.parametrize("key", sorted(k for k in _example_values() if k.startswith("COLDTRAIL_")))
def test_every_placeholder_of_the_example_is_refused_without_echoing_it(
    clean_env: pytest.MonkeyPatch, key: str
) -> None:
    value = _example_values()[key]
    clean_env.setenv(key, value)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert f"{key}: still holds the example's placeholder" in message
    assert "coldtrail env-init" in message
    assert value not in message


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("COLDTRAIL_SECRET_KEY", "short-but-secret", "at least 32 characters"),
        ("COLDTRAIL_SECRET_KEY", "ab" * 20, "fewer than 12 different characters"),
        ("COLDTRAIL_ADMIN_PASSWORD", "admin123", "at least 12 characters"),
        ("COLDTRAIL_ADMIN_PASSWORD", "Administrator2026", "too easy to guess"),
        ("COLDTRAIL_ADMIN_PASSWORD", "password1234", "very common password"),
        ("COLDTRAIL_MQTT_ADMIN_PASSWORD", "ChangeMe-2026-broker", "placeholder"),
    ],
)
def test_weak_secrets_are_refused_and_not_echoed(
    clean_env: pytest.MonkeyPatch, key: str, value: str, reason: str
) -> None:
    clean_env.setenv(key, value)
    with pytest.raises(ConfigError, match=reason) as refused:
        load_settings()
    assert value not in str(refused.value)


def test_env_init_replaces_every_placeholder_and_the_result_passes(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deploy.env"
    assert cli.main(["env-init", "--out", str(out), "--example", str(EXAMPLE)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = dict(
        line.split("=", 1)
        for line in out.read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert set(printed["generated"]) == {
        k for k, v in _example_values().items() if "change-me" in v
    }
    assert not any("change-me" in v for v in written.values())
    assert all(v not in capsys.readouterr().out for v in written.values())
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(set(written.values())) == len(written)  # each one its own
    for key, value in written.items():
        if key.startswith("COLDTRAIL_"):
            clean_env.setenv(key, value)
    settings = load_settings()
    assert settings.secret_key is not None
    assert len(settings.secret_key.get_secret_value()) >= 48
    # Written once: an existing file keeps the secrets that may be in use.
    before = out.read_text()
    assert cli.main(["env-init", "--out", str(out), "--example", str(EXAMPLE)]) == 2
    assert out.read_text() == before


def test_env_init_runs_where_an_unedited_env_file_would_stop_every_other_command(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(EXAMPLE.read_text())
    assert cli.main(["db", "upgrade"]) == 2
    assert cli.main(["env-init", "--out", "fresh.env", "--example", str(EXAMPLE)]) == 0


@pytest.mark.parametrize(
    "url",
    ["mqtt://u:topsecret@host:99999", "http://u:topsecret@host", "mqtt://u:topsecret@:1883"],
)
def test_a_bad_mqtt_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        MqttEndpoint.parse(url)
    assert "topsecret" not in str(refused.value)
    assert "u:***@" in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mqtt://coldtrail-outbox:PASS@broker:1883/fleet", "mqtt://coldtrail-outbox:***@broker:1883/fleet"),
        ("https://hooks.example.com/x?apikey=abc&site=wh1", "https://hooks.example.com/x?apikey=***&site=wh1"),
        ("https://h/x?token=t&Signature=s&q=1", "https://h/x?token=***&Signature=***&q=1"),
        ("smtp://user:pw@mail:25", "smtp://user:***@mail:25"),
        ("https://plain.example.com/hook", "https://plain.example.com/hook"),
        ("mqtt://u:p@[bad", "mqtt://u:***@[bad"),
    ],
)  # fmt: skip
def test_urls_lose_their_credentials_before_they_are_shown(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert (
        redact_text(f"could not reach {url}: refused", url) == f"could not reach {shown}: refused"
    )


# -------------------------------------------------------------- credentials in stored URLs


def test_an_mqtt_destinations_password_goes_to_its_secret_never_to_the_trail_or_the_api(
    db_url: str, clock: Any
) -> None:
    """The review's high finding: an auditor read the outbox's broker password from the
    audit trail, then published forged events. The URL is kept without it now."""
    from tests.conftest import api_client, token

    url = "mqtt://coldtrail-outbox:S3cret-Pass-42@broker:1883/fleet?protocol=3.1.1"
    with api_client(db_url, clock) as c:
        admin = token(c, "admin", "admin-password-123")
        put = c.put("/api/v1/outbox/destinations/bus", json={"kind": "mqtt", "url": url},
                    headers=admin)  # fmt: skip
        assert put.status_code == 200, put.text
        listed = c.get("/api/v1/outbox/destinations", headers=admin).text
        trail = c.get("/api/v1/audit", params={"record_type": "outbox_destinations"},
                      headers=admin).text  # fmt: skip
    assert "S3cret-Pass-42" not in listed + trail
    assert "coldtrail-outbox@broker:1883/fleet" in listed
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT url, secret FROM outbox_destinations").fetchone()
    assert row == ("mqtt://coldtrail-outbox@broker:1883/fleet?protocol=3.1.1", "S3cret-Pass-42")


def test_a_webhook_key_in_its_url_is_shown_as_stars_in_the_trail_the_api_and_its_errors(
    db_url: str, clock: Any
) -> None:
    from coldtrail.erp.outbox import DeliveryError, Destination, WebhookSink
    from tests.conftest import api_client, token

    url = "http://127.0.0.1:9/hook?apikey=K3y-Of-The-Receiver&site=wh1"
    with api_client(db_url, clock) as c:
        admin = token(c, "admin", "admin-password-123")
        put = c.put("/api/v1/outbox/destinations/erp", json={"kind": "webhook", "url": url},
                    headers=admin)  # fmt: skip
        assert put.status_code == 200, put.text
        shown = c.get("/api/v1/outbox/destinations", headers=admin).text
        trail = c.get("/api/v1/audit", params={"record_type": "outbox_destinations"},
                      headers=admin).text  # fmt: skip
        contact = c.post("/api/v1/alarm-contacts", headers=admin, json={
            "name": "Pager", "channel": "webhook", "target": url})  # fmt: skip
        assert contact.status_code == 201, contact.text
        contacts = c.get("/api/v1/audit", params={"record_type": "alarm_contacts"},
                         headers=admin).text  # fmt: skip
    for text in (shown, trail, contacts):
        assert "K3y-Of-The-Receiver" not in text
        assert "apikey=***&site=wh1" in text
    # Nothing listens on port 9: the error names the receiver without its key.
    sink = WebhookSink(Destination("erp", "webhook", url), clock)
    with pytest.raises(DeliveryError) as failed:
        sink.deliver([_event()])
    assert "K3y-Of-The-Receiver" not in str(failed.value)
    assert "apikey=***" in str(failed.value)


def test_a_receivers_answer_is_not_kept_in_the_error(clock: Any) -> None:
    """A receiver's error page may echo what it was sent, or its own secrets: the stored
    error keeps its status only."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from coldtrail.erp.outbox import DeliveryError, Destination, WebhookSink

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error; db password=hunter22")

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=T0ken-9"
        sink = WebhookSink(Destination("erp", "webhook", url), clock)
        with pytest.raises(DeliveryError) as failed:
            sink.deliver([_event()])
    finally:
        server.shutdown()
        server.server_close()
    assert str(failed.value) == f"HTTP 500 from {url.replace('T0ken-9', '***')}"


def test_an_alarm_webhooks_error_names_it_without_its_key() -> None:
    from coldtrail.rules.notifiers import NotifierSettings, NotifyError, WebhookNotifier

    notifier = WebhookNotifier(NotifierSettings(timeout_s=2))
    with pytest.raises(NotifyError) as failed:
        notifier.send("http://127.0.0.1:9/page?api_key=Pag3r-K3y", _notice())
    assert "Pag3r-K3y" not in str(failed.value)
    assert "api_key=***" in str(failed.value)


def _event() -> Any:
    import uuid
    from datetime import UTC, datetime

    from coldtrail.erp.outbox import Event

    return Event(1, uuid.uuid4(), "alarm.raised", "alarm/1", {"n": 1}, datetime.now(UTC))


def _notice() -> Any:
    from datetime import UTC, datetime

    from coldtrail.rules.notifiers import Notice

    now = datetime.now(UTC)
    return Notice(1, "offline", 0, "S1 offline", "S1", "CR", now, None, now)


def test_upgrading_moves_an_mqtt_password_out_of_its_url_without_auditing_it(
    empty_db_url: str,
) -> None:
    from coldtrail import db

    db.upgrade(empty_db_url, target=12)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO outbox_destinations (name, kind, url) VALUES"
            " ('bus', 'mqtt', 'mqtt://coldtrail-outbox:Old-Pass-7@broker:1883'),"
            " ('erp', 'webhook', 'https://erp.example.com/in?key=abc')"
        )
        before = conn.execute("SELECT max(id) FROM audit_log").fetchone()
    db.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        rows = conn.execute(
            "SELECT name, url, secret, url_shown FROM outbox_destinations ORDER BY name"
        ).fetchall()
        new_trail = conn.execute(
            "SELECT old_value::text || new_value::text FROM audit_log WHERE id > %s",
            (before[0] if before else 0,),
        ).fetchall()
    assert rows == [
        ("bus", "mqtt://coldtrail-outbox@broker:1883", "Old-Pass-7",
         "mqtt://coldtrail-outbox@broker:1883"),
        ("erp", "https://erp.example.com/in?key=abc", None, "https://erp.example.com/in?key=***"),
    ]  # fmt: skip
    assert new_trail  # the move is on record ...
    assert all("Old-Pass-7" not in r[0] for r in new_trail)  # ... without the password
