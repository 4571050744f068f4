"""Secrets at start-up and in messages: the example file's placeholders and weak keys are
refused, `coldtrail env-init` makes real ones, and no error echoes a secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

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
