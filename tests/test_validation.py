"""Validation: the OQ cases run as the project's integration tests (the same definitions
``coldtrail validate oq`` runs at a site), a broken system turned into listed deviations,
IQ, the pack kept, signed and drawn in both languages; on real PostgreSQL and Mosquitto."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import psycopg
import pypdf
import pytest
from pydantic import SecretStr

from coldtrail import db
from coldtrail.compliance import profiles
from coldtrail.erp.changes import change
from coldtrail.erp.people import Role, create_user
from coldtrail.erp.signatures import Credentials
from coldtrail.rules.alarms import Contact, add_contact
from coldtrail.rules.notifiers import NotifierSettings, build_notifiers
from coldtrail.settings import Settings
from coldtrail.validation import iq, oq, pack
from coldtrail.validation.harness import Receiver, Target
from tests.conftest import (
    PG_URL,
    QA_PASSWORD,
    T0,
    api_client,
    as_superuser,
    make_erp,
    token,
)

Conn = psycopg.Connection[tuple[Any, ...]]
QUICK = ["OQ-01", "OQ-08"]


def _target(tmp_path: Path, mqtt_options: Any, topic_root: str, **kw: Any) -> Target:
    args: dict[str, Any] = {
        "database_url": PG_URL, "mqtt": mqtt_options, "topic_root": topic_root, "site": "oq",
        "profile": profiles()["cn-drug-gsp"], "notifiers": build_notifiers(NotifierSettings()),
        "workdir": tmp_path, "scratch": True, "admin_url": PG_URL,
    }  # fmt: skip
    args.update(kw)
    return Target(**args)


@pytest.mark.parametrize("case_id", list(oq.CASES))
def test_each_oq_case_passes_on_a_fresh_install(
    case_id: str, template_db: str, tmp_path: Path, mqtt_options: Any, topic_root: str
) -> None:
    target = _target(tmp_path, mqtt_options, topic_root)
    [result] = oq.run_cases(target, [case_id], template_db)
    assert result.passed, (result.error, [c for c in result.checks if not c["passed"]])
    assert result.checks
    assert result.evidence
    assert all(c["observed"] for c in result.checks)


def test_every_oq_case_of_compliance_md_is_defined_with_its_requirement_and_source() -> None:
    assert list(oq.CASES) == [f"OQ-{n:02d}" for n in range(1, 11)]
    for case in oq.CASES.values():
        for text in (case.title, case.title_zh, case.requirement, case.source, case.procedure,
                     case.acceptance):  # fmt: skip
            assert text.strip(), case.id
        # And in Chinese, as the pack prints them.
        assert sorted(case.zh) == ["acceptance", "procedure", "requirement"], case.id
        assert all(len(v) > 20 for v in case.zh.values()), case.id


def test_a_broken_system_turns_its_cases_into_listed_deviations(
    conn: Conn, db_url: str, tmp_path: Path, mqtt_options: Any, topic_root: str
) -> None:
    """On a database the operator names: one of the three alarm contacts removed, and the
    application's role given the right to rewrite readings, their guard trigger dropped."""
    make_erp(conn)
    create_user(conn, "boss", "Site Admin", Role.ADMIN, QA_PASSWORD)  # as the operator's has
    with Receiver() as receiver:
        for n in (1, 2):  # the drug GSP profile wants 3
            add_contact(conn, "admin", Contact(f"Duty {n}", "webhook", receiver.url(f"d{n}"),
                                               site_id="s1"), {"webhook"})  # fmt: skip
        as_superuser(conn, "GRANT UPDATE, DELETE ON readings TO coldtrail_app")
        as_superuser(conn, "DROP TRIGGER readings_no_update_delete ON readings")
        target = _target(tmp_path, mqtt_options, topic_root, database_url=db_url, site="s1",
                         scratch=False)  # fmt: skip
        results = {r.id: r for r in oq.run_cases(target, ["OQ-04", "OQ-07", "OQ-01", "OQ-08"])}
    assert results["OQ-01"].passed  # unbroken cases still pass beside them
    assert results["OQ-08"].passed
    # The people a case made can not sign in on the operator's database once it ended.
    assert conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE disabled) FROM users WHERE username LIKE 'oq08-%%'"
    ).fetchone() == (3, 3)
    four, seven = results["OQ-04"], results["OQ-07"]
    assert not four.passed
    assert any("at least 3 named contacts" in d and "2: Duty 1, Duty 2" in d
               for d in four.deviations), four.deviations  # fmt: skip
    assert not seven.passed
    assert any("UPDATE readings" in d and "it went through" in d for d in seven.deviations)
    # The cases' probes stop being expected on the operator's database once they end.
    open_places = conn.execute(
        "SELECT count(*) FROM sensor_assignments WHERE sensor_id LIKE 'OQ%%' AND upper_inf(valid)"
    ).fetchone()
    assert open_places == (0,)
    installed = iq.record(conn, Settings.model_construct(), mqtt_options, profiles(), "s1",
                          T0.date())  # fmt: skip
    doc = pack.document(
        iq=installed, oq=list(results.values()), target=oq.target_summary(target), started=T0,
        finished=T0, run_by="admin", changes_since=None, changed=[],
    )  # fmt: skip
    assert not doc["passed"]
    listed = {(d["id"], d["test"]) for d in doc["deviations"]}
    assert {"OQ-04", "OQ-07"} <= {test for _, test in listed}
    assert [d["id"] for d in doc["deviations"]] == [
        f"DEV-{n:02d}" for n in range(1, len(doc["deviations"]) + 1)
    ]
    text = _pdf_text(pack.render(doc, "0" * 64, [], None))
    assert "DEV-01" in text
    assert "存在偏差" in text
    assert "at least 3 named contacts" in text


def test_iq_names_a_changed_migration_and_a_probe_without_a_certificate_and_hides_secrets(
    conn: Conn,
) -> None:
    make_erp(conn)
    as_superuser(conn, "UPDATE schema_migrations SET sha256 = repeat('0', 64) WHERE version = 7")
    settings = Settings(
        database_url="postgresql://app:Pa55-w0rd@db.example:5432/coldtrail",
        secret_key=SecretStr("a-secret-key-of-the-site-0123456789"),
        smtp_url=SecretStr("smtp://alarms:M4il-pw@mail.example"),
    )
    found = iq.record(conn, settings, None, profiles(), "s1", T0.date())
    failed = {c["text"]: c["observed"] for c in found["checks"] if not c["passed"]}
    assert failed["every applied migration's checksum is the shipped file's"] == "0007"
    assert "S1" in failed["every placed probe has a passed calibration certificate valid today"]
    assert "the MQTT broker answers" in failed
    shown = json.dumps(found, default=str)
    assert "Pa55-w0rd" not in shown
    assert "a-secret-key-of-the-site" not in shown
    assert "M4il-pw" not in shown
    assert found["installed"]["configuration"]["secret_key"] == "(set)"
    assert len(found["installed"]["migrations"]) == len(db.migrations())
    assert (
        found["installed"]["profiles"]["cn-drug-gsp"]["sha256"]
        == hashlib.sha256(profiles()["cn-drug-gsp"].path.read_bytes()).hexdigest()
    )


def test_a_pack_is_kept_signed_for_execution_then_review_and_lists_changes_since_the_last(
    conn: Conn, db_url: str, clock: Any, tmp_path: Path, mqtt_options: Any, topic_root: str,
    template_db: str,
) -> None:  # fmt: skip
    erp = make_erp(conn)
    results = oq.run_cases(_target(tmp_path, mqtt_options, topic_root), QUICK, template_db)
    installed = iq.record(conn, Settings.model_construct(), mqtt_options, profiles(), "s1",
                          T0.date())  # fmt: skip

    def keep() -> tuple[int, dict[str, Any]]:
        since = pack.last_validated(conn, "s1")
        from coldtrail.erp.changes import list_changes

        doc = pack.document(
            iq=installed, oq=results, target={"site": "s1", "profile": "cn-drug-gsp"},
            started=clock.now(), finished=clock.now(), run_by="admin", changes_since=since,
            changed=list_changes(conn, since, "s1"),
        )  # fmt: skip
        return pack.store(conn, doc, "admin")[0], doc

    first, doc = keep()
    assert doc["changes_since_last_validation"]["since"] is None
    clock.advance(3600)
    qa = Credentials(erp.qa.username, QA_PASSWORD)
    change(conn, qa.username, "location", "CR", {"temp_max_c": 7.5}, credentials=qa,
           meaning="approval", reason="warm spot by the door", at=clock.now())  # fmt: skip
    clock.advance(3600)
    second, doc = keep()
    changed = doc["changes_since_last_validation"]["changes"]
    assert [(c["subject_id"], c["changed"], c["signed_by"]) for c in changed] == [
        ("CR", {"temp_max_c": [8.0, 7.5]}, ["Quinn Auditt"])
    ]
    with api_client(db_url, clock) as client:
        admin = token(client, "admin", "admin-password-123")
        qa1, qa2 = token(client, "qa1", QA_PASSWORD), token(client, "qa2", QA_PASSWORD)
        url = f"/api/v1/validation/{second}/signatures"
        sign = {"username": "qa1", "password": QA_PASSWORD, "reason": "ran it on the QA bench"}
        assert client.post(url, json={**sign, "role": "execution"}, headers=qa1).status_code == 201
        again = client.post(url, json={**sign, "role": "execution"}, headers=qa1)
        assert again.status_code == 409
        own = client.post(url, json={**sign, "role": "review"}, headers=qa1)
        assert own.status_code == 409
        assert "someone other" in own.json()["detail"]
        by_admin = client.post(url, json={"role": "review", "username": "admin",
                                          "password": "admin-password-123", "reason": "ok"},
                               headers=admin)  # fmt: skip
        assert by_admin.status_code == 403
        review = {"role": "review", "username": "qa2", "password": QA_PASSWORD,
                  "reason": "reviewed: every case passed"}  # fmt: skip
        assert client.post(url, json=review, headers=qa2).status_code == 201
        kept = client.get(f"/api/v1/validation/{second}", headers=qa2).json()
        listed = client.get("/api/v1/validation", headers=qa2).json()
        pdf = client.get(f"/api/v1/validation/{second}", params={"format": "pdf"}, headers=qa2)
    assert [r["id"] for r in listed] == [second, first]
    assert kept["sha256"] == hashlib.sha256(pack.canonical(kept["document"])).hexdigest()
    assert [(s["action"], s["signer"], s["meaning"]) for s in kept["signatures"]] == [
        ("validation execution", "qa1", "responsibility"),
        ("validation review", "qa2", "approval"),
    ]
    text = _pdf_text(pdf.content)
    for words in ("验证文件", "Traceability matrix 4 追溯矩阵", "OQ-01", "OQ-08", "Quinn Auditt",
                  "每个探头至少每分钟读取一次",
                  "Mara Manager", "warm spot by the door", "temp_max_c: 8.0 → 7.5",
                  kept["sha256"]):  # fmt: skip
        assert words in text, words


def _pdf_text(content: bytes) -> str:
    pages = pypdf.PdfReader(io.BytesIO(content)).pages
    return " ".join(" ".join(page.extract_text().split()) for page in pages)


@pytest.mark.parametrize(
    ("argv", "env", "said"),
    [
        (["validate", "oq", "--case", "OQ-99"], {"COLDTRAIL_MQTT_URL": "mqtt://127.0.0.1:1883"},
         "no OQ case OQ-99; known: OQ-01"),
        (["validate", "oq", "--profile", "mars"], {"COLDTRAIL_MQTT_URL": "mqtt://127.0.0.1:1883"},
         "no compliance profile mars; known: cn-device-gsp"),
        (["validate", "oq"], {}, "COLDTRAIL_MQTT_URL is not set"),
        (["validate", "show", "999"], {}, "no validation run 999"),
    ],
)  # fmt: skip
def test_validate_refuses_in_one_line_with_exit_2(
    argv: list[str], env: dict[str, str], said: str, db_url: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import os

    from coldtrail import cli

    for key in list(os.environ):
        if key.startswith("COLDTRAIL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("COLDTRAIL_DATABASE_URL", db_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert said in err[0]


def test_a_case_on_a_database_without_another_administrator_leaves_its_admin_enabled(
    conn: Conn, db_url: str, tmp_path: Path, mqtt_options: Any, topic_root: str
) -> None:
    make_erp(conn)  # no administrator of its own: the case's is the only one
    target = _target(tmp_path, mqtt_options, topic_root, database_url=db_url, site="s1",
                     scratch=False)  # fmt: skip
    [result] = oq.run_cases(target, ["OQ-08"])
    assert result.passed
    assert conn.execute(
        "SELECT role::text, disabled FROM users WHERE username LIKE 'oq08-%%' ORDER BY 1"
    ).fetchall() == [("admin", False), ("logistics", True), ("qa", True)]
