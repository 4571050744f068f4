"""Accounts: the password policy, changing one's password, disabling, revoking tokens, and
lock-outs per name and address, on a real database through the API."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from coldtrail.api.app import create_app
from coldtrail.clock import ManualClock
from coldtrail.erp import people
from coldtrail.erp.people import Role, create_user
from coldtrail.errors import AccountLocked, RuleViolation
from coldtrail.passwords import password_problem
from tests.conftest import T0, api_config, cli_json, database_from, template_from, token

Conn = psycopg.Connection[tuple[Any, ...]]
PASSWORD = "correct-horse-battery"
ADMIN_PASSWORD = "admin-password-123"
NEW_PASSWORD = "七月冷库-blue-lantern"
OUTSIDE = ("203.0.113.9", 40000)
INSIDE = ("10.1.2.3", 40000)


@pytest.fixture(scope="module")
def accounts_template(template_db: str) -> Iterator[str]:
    with template_from(template_db, "ct_acc") as (name, url):
        with psycopg.connect(url, autocommit=True) as conn:
            create_user(conn, "admin", "Administrator", Role.ADMIN, ADMIN_PASSWORD)
            create_user(conn, "qa1", "Quinn Auditt", Role.QA, PASSWORD)
            create_user(conn, "logi1", "Lou Gistics", Role.LOGISTICS, PASSWORD)
        yield name


@pytest.fixture
def db_url(accounts_template: str) -> Iterator[str]:
    with database_from(accounts_template) as url:
        yield url


@pytest.fixture
def app(db_url: str, clock: ManualClock) -> Any:
    return create_app(api_config(db_url), clock)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def _login(client: TestClient, user: str, password: str) -> Any:
    return client.post("/api/v1/auth/token", data={"username": user, "password": password})


def _actions(conn: Conn, user: str) -> list[str]:
    rows = conn.execute(
        "SELECT action FROM audit_log WHERE record_id = %s ORDER BY id", (user,)
    ).fetchall()
    return [r[0] for r in rows]


# ------------------------------------------------------------------------ password policy


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("aaaaaaaaaaaa", "Repeats"),
        ("password1234", "very common password"),
        ("qwertyuiop123", "very common password"),
        ("iloveyou2024", "similar to a commonly used password"),
        ("coldtrail2026", "too easy to guess"),
        ("short", "at least 12 characters"),
        ("x" * 1025, "at most 1024 characters"),
    ],
)
def test_common_guessable_short_and_huge_passwords_are_refused_with_the_reason(
    password: str, why: str
) -> None:
    problem = password_problem(password, "qa1", "Quinn Auditt")
    assert problem is not None
    assert why in problem


@pytest.mark.parametrize(
    "password",
    [
        "correct-horse-battery",
        "七月冷库-blue-lantern",
        "冷链温度记录系统安全可靠吗",
        "wG7#kq2Lz9pX",
    ],
)
def test_long_uncommon_passwords_chinese_ones_too_pass(password: str) -> None:
    assert password_problem(password) is None


def test_a_password_made_of_the_users_own_name_is_refused() -> None:
    assert password_problem("quinnauditt1", "qa1", "Quinn Auditt") is not None
    assert password_problem("quinnauditt1") is None  # the same, for someone else


def test_the_api_refuses_a_weak_new_users_password_with_a_422_that_says_why(
    client: TestClient,
) -> None:
    admin = token(client, "admin", ADMIN_PASSWORD)
    body = {"username": "new1", "full_name": "New One", "role": "qa", "password": "password1234"}
    resp = client.post("/api/v1/users", json=body, headers=admin)
    assert resp.status_code == 422
    assert "very common password" in resp.json()["detail"][0]["msg"]
    assert client.post("/api/v1/users", json={**body, "password": NEW_PASSWORD}, headers=admin)


# --------------------------------------------------------------------- change and revoke


def test_changing_ones_password_ends_every_earlier_token_and_returns_a_new_one(
    client: TestClient, db_url: str
) -> None:
    laptop = token(client, "logi1", PASSWORD)
    phone = token(client, "logi1", PASSWORD)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    resp = client.put("/api/v1/auth/password", json=body, headers=laptop)
    assert resp.status_code == 200, resp.text
    fresh = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    for old in (laptop, phone):
        assert client.get("/api/v1/users/me", headers=old).status_code == 401
    assert client.get("/api/v1/users/me", headers=fresh).json()["username"] == "logi1"
    assert _login(client, "logi1", PASSWORD).status_code == 401
    assert _login(client, "logi1", NEW_PASSWORD).status_code == 200
    with psycopg.connect(db_url) as conn:
        assert "password_changed" in _actions(conn, "logi1")
        # The trail shows the change (its generation) but never the hash.
        hashes = conn.execute(
            "SELECT count(*) FROM audit_log WHERE (old_value ? 'password_hash') "
            "OR (new_value ? 'password_hash')"
        ).fetchone()
        assert hashes == (0,)


def test_a_wrong_current_password_is_refused_counted_and_changes_nothing(
    client: TestClient, db_url: str
) -> None:
    headers = token(client, "logi1", PASSWORD)
    body = {"current_password": "not-the-password", "new_password": NEW_PASSWORD}
    resp = client.put("/api/v1/auth/password", json=body, headers=headers)
    assert resp.status_code == 403
    assert resp.json() == {"detail": "the current password is wrong"}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    with psycopg.connect(db_url) as conn:
        assert conn.execute(
            "SELECT failures FROM login_failures WHERE username = 'logi1'"
        ).fetchone() == (1,)
        assert "password_change_failed" in _actions(conn, "logi1")
    weak = client.put(
        "/api/v1/auth/password",
        json={"current_password": PASSWORD, "new_password": "aaaaaaaaaaaa"},
        headers=headers,
    )
    assert weak.status_code == 422
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200


def test_signing_out_everywhere_ends_every_token_of_that_user_only(client: TestClient) -> None:
    mine, other_device = token(client, "qa1", PASSWORD), token(client, "qa1", PASSWORD)
    someone_else = token(client, "logi1", PASSWORD)
    assert client.post("/api/v1/auth/revoke", headers=mine).status_code == 200
    assert client.get("/api/v1/users/me", headers=mine).status_code == 401
    assert client.get("/api/v1/users/me", headers=other_device).status_code == 401
    assert client.get("/api/v1/users/me", headers=someone_else).status_code == 200
    assert client.get("/api/v1/users/me", headers=token(client, "qa1", PASSWORD)).status_code == 200


def test_an_admin_resets_a_forgotten_password_and_revokes_a_lost_laptops_tokens(
    client: TestClient, db_url: str
) -> None:
    admin = token(client, "admin", ADMIN_PASSWORD)
    lost = token(client, "qa1", PASSWORD)
    assert client.post("/api/v1/users/qa1/revoke", headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=lost).status_code == 401
    reset = client.post(
        "/api/v1/users/qa1/password", json={"password": "1234567890ab"}, headers=admin
    )
    assert reset.status_code == 422
    reset = client.post(
        "/api/v1/users/qa1/password", json={"password": NEW_PASSWORD}, headers=admin
    )
    assert reset.status_code == 200
    assert _login(client, "qa1", NEW_PASSWORD).status_code == 200
    assert client.post("/api/v1/users/nobody/revoke", headers=admin).status_code == 404
    with psycopg.connect(db_url) as conn:
        assert _actions(conn, "qa1")[-3:] == ["update", "password_reset", "login"]


# ----------------------------------------------------------------------- disable, enable


def test_a_disabled_user_is_out_at_once_and_an_enabled_one_signs_in_again(
    client: TestClient,
) -> None:
    admin = token(client, "admin", ADMIN_PASSWORD)
    held = token(client, "logi1", PASSWORD)
    assert client.post("/api/v1/users/logi1/disable", headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=held).status_code == 401
    assert _login(client, "logi1", PASSWORD).status_code == 401
    listed = {u["username"]: u for u in client.get("/api/v1/users", headers=admin).json()}
    assert listed["logi1"]["disabled"] is True
    again = client.post("/api/v1/users/logi1/disable", headers=admin)
    assert again.status_code == 409
    assert "already disabled" in again.json()["detail"]
    assert client.post("/api/v1/users/logi1/enable", headers=admin).status_code == 200
    assert client.get("/api/v1/users/me", headers=held).status_code == 401  # still the old one
    assert _login(client, "logi1", PASSWORD).status_code == 200


def test_nobody_disables_themselves_or_the_last_administrator(
    client: TestClient, db_url: str
) -> None:
    admin = token(client, "admin", ADMIN_PASSWORD)
    own = client.post("/api/v1/users/admin/disable", headers=admin)
    assert own.status_code == 409
    assert "your own account" in own.json()["detail"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_user(conn, "admin2", "Second Admin", Role.ADMIN, NEW_PASSWORD)
    second = token(client, "admin2", NEW_PASSWORD)
    assert client.post("/api/v1/users/admin/disable", headers=second).status_code == 200
    # Through the API an administrator can only disable another while two are enabled; an
    # operator at the database (the CLI) could disable the last one.
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(RuleViolation) as no:
        people.set_disabled(conn, "admin2", True, by="operator")
    assert "'admin2' is the last enabled administrator" in str(no.value)


# ---------------------------------------------------------------------- lock-outs


def test_an_outsider_guessing_cannot_lock_the_administrator_out(app: Any) -> None:
    with TestClient(app, client=OUTSIDE) as outside, TestClient(app, client=INSIDE) as inside:
        for _ in range(5):
            assert _login(outside, "admin", "not-the-password").status_code == 401
        locked = _login(outside, "admin", ADMIN_PASSWORD)
        assert locked.status_code == 401
        assert "locked for this address" in locked.json()["detail"]
        assert _login(inside, "admin", ADMIN_PASSWORD).status_code == 200


def test_each_lock_out_in_a_row_lasts_twice_as_long_and_a_quiet_day_forgets(db_url: str) -> None:
    def guess_until_locked(conn: Conn, at: Any) -> Any:
        for _ in range(5):
            assert people.authenticate(conn, "qa1", "not-the-password", at, "203.0.113.9") is None
        with pytest.raises(AccountLocked):
            people.authenticate(conn, "qa1", PASSWORD, at, "203.0.113.9")
        row = conn.execute(
            "SELECT locked_until FROM login_failures WHERE client = '203.0.113.9'"
        ).fetchone()
        assert row is not None
        return row[0] - at

    with psycopg.connect(db_url, autocommit=True) as conn:
        at = T0
        lengths = []
        for _ in range(8):
            length = guess_until_locked(conn, at)
            lengths.append(length)
            at += length
        minutes = [int(x / timedelta(minutes=1)) for x in lengths]
        assert minutes == [15, 30, 60, 120, 240, 480, 960, 960]
        # Meanwhile the right password works from anywhere else.
        assert people.authenticate(conn, "qa1", PASSWORD, at, "10.1.2.3") is not None
        at += timedelta(days=1, seconds=1)
        assert guess_until_locked(conn, at) == timedelta(minutes=15)


def test_an_admin_unlocks_a_name_for_every_address(client: TestClient, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for client_ip in ("203.0.113.9", "198.51.100.7"):
            for _ in range(6):
                with contextlib.suppress(AccountLocked):
                    people.authenticate(conn, "qa1", "not-the-password", T0, client_ip)
    admin = token(client, "admin", ADMIN_PASSWORD)
    listed = {u["username"]: u for u in client.get("/api/v1/users", headers=admin).json()}
    assert listed["qa1"]["locked_clients"] == 2
    assert client.post("/api/v1/users/qa1/unlock", headers=admin).status_code == 200
    listed = {u["username"]: u for u in client.get("/api/v1/users", headers=admin).json()}
    assert listed["qa1"]["locked_clients"] == 0


def test_an_operator_gives_a_locked_out_admin_a_new_password_from_the_command_line(
    app: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(app) as client:
        held = token(client, "admin", ADMIN_PASSWORD)
        for _ in range(6):
            _login(client, "admin", "forgotten-it-again")
        env = {"COLDTRAIL_DATABASE_URL": db_url}
        monkeypatch.setattr("sys.stdin", io.StringIO("password1234\n"))
        from coldtrail import cli

        weak = ["users", "set-password", "admin", "--password-stdin", "--by", "ops"]
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert cli.main(weak) == 2
        monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
        done = cli_json(weak, monkeypatch, **env)
        assert done == {"username": "admin", "status": "password set; earlier tokens revoked"}
        assert cli_json(["users", "unlock", "admin", "--by", "ops"], monkeypatch, **env) == {
            "username": "admin",
            "status": "unlocked",
        }
        assert client.get("/api/v1/users/me", headers=held).status_code == 401
        assert _login(client, "admin", NEW_PASSWORD).status_code == 200
        listed = cli_json(["users", "list"], monkeypatch, **env)
        assert [u["username"] for u in listed] == ["admin", "logi1", "qa1"]
    with psycopg.connect(db_url) as conn:
        actors = conn.execute(
            "SELECT actor FROM audit_log WHERE action IN ('password_reset', 'unlock')"
        ).fetchall()
    assert actors == [("cli:ops",), ("cli:ops",)]
