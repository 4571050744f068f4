"""Auth and roles of the API, on a real database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.routing import APIRoute

from coldtrail.clock import ManualClock
from coldtrail.erp.people import Role, create_user
from tests.conftest import T0, api_client, make_site, token

Conn = psycopg.Connection[tuple[Any, ...]]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def client(conn: Conn, db_url: str, clock: ManualClock) -> Any:
    make_site(conn, {"S1": "CR"})
    for role in Role:
        if role is not Role.ADMIN:
            create_user(conn, f"{role.value}1", f"{role.value.title()} User", role, PASSWORD)
    conn.execute(
        "INSERT INTO excursions (sensor_id, location_id, started_at, start_seq, limit_min_c, "
        "limit_max_c, min_c, max_c) VALUES ('S1', 'CR', %s, 1, 2, 8, 9, 9)",
        (T0,),
    )
    with api_client(db_url, clock) as c:
        yield c


def _headers(client: Any, role: Role) -> dict[str, str]:
    if role is Role.ADMIN:
        return token(client, "admin", "admin-password-123")
    return token(client, f"{role.value}1", PASSWORD)


# Every route, with the roles that may call it. A route added without a line here fails
# test_every_route_is_in_the_matrix.
MATRIX: dict[tuple[str, str], tuple[frozenset[Role], dict[str, Any]]] = {
    ("GET", "/api/v1/users/me"): (frozenset(Role), {}),
    ("GET", "/api/v1/live"): (frozenset(Role), {}),
    ("GET", "/api/v1/excursions"): (frozenset(Role), {}),
    ("POST", "/api/v1/excursions/{excursion_id}/acknowledge"): (
        frozenset({Role.ADMIN, Role.LOGISTICS, Role.QA}),
        {"json": {"comment": "door shut"}},
    ),
    ("POST", "/api/v1/users"): (
        frozenset({Role.ADMIN}),
        {
            "json": {
                "username": "new.user",
                "full_name": "New User",
                "role": "auditor",
                "password": "a-long-enough-password",
            }
        },
    ),
}
PUBLIC = {("GET", "/api/v1/health"), ("POST", "/api/v1/auth/token")}


def test_every_route_is_in_the_matrix(client: Any) -> None:
    routes = {
        (m, r.path) for r in client.app.routes if isinstance(r, APIRoute) for m in r.methods or ()
    }
    assert routes == set(MATRIX) | PUBLIC


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_role_gets_exactly_what_it_should(
    client: Any, role: Role, route: tuple[str, str]
) -> None:
    method, path = route
    allowed, kwargs = MATRIX[route]
    url = path.replace("{excursion_id}", "1")
    anonymous = client.request(method, url, **kwargs)
    assert anonymous.status_code == 401
    resp = client.request(method, url, headers=_headers(client, role), **kwargs)
    if role in allowed:
        assert resp.status_code in (200, 201), resp.text
    else:
        assert resp.status_code == 403
        assert role.value in resp.json()["detail"]


def test_health_needs_no_token(client: Any) -> None:
    body = client.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["schema_version"] >= 1


def test_wrong_password_and_unknown_user_get_the_same_401(client: Any) -> None:
    for user, pw in (("qa1", "wrong-password-here"), ("nobody", PASSWORD)):
        resp = client.post("/api/v1/auth/token", data={"username": user, "password": pw})
        assert resp.status_code == 401
        assert resp.json() == {"detail": "incorrect username or password"}


def test_token_expires_on_the_clock(client: Any, clock: ManualClock) -> None:
    headers = _headers(client, Role.QA)
    assert client.get("/api/v1/live", headers=headers).status_code == 200
    clock.advance(901)
    assert client.get("/api/v1/live", headers=headers).status_code == 401


@pytest.mark.parametrize("bad", ["Bearer nonsense", "Bearer ", "Basic cWE6cXE="])
def test_garbage_tokens_get_401_not_500(client: Any, bad: str) -> None:
    assert client.get("/api/v1/live", headers={"Authorization": bad}).status_code == 401


def test_acknowledge_errors_are_4xx_with_a_reason(client: Any, conn: Conn) -> None:
    qa = _headers(client, Role.QA)
    short = client.post("/api/v1/excursions/1/acknowledge", json={"comment": "x"}, headers=qa)
    assert short.status_code == 422
    missing = client.post(
        "/api/v1/excursions/999/acknowledge", json={"comment": "checked"}, headers=qa
    )
    assert (missing.status_code, missing.json()) == (404, {"detail": "no excursion 999"})
    assert (
        client.post(
            "/api/v1/excursions/1/acknowledge", json={"comment": "door shut"}, headers=qa
        ).status_code
        == 200
    )
    again = client.post("/api/v1/excursions/1/acknowledge", json={"comment": "again"}, headers=qa)
    assert again.status_code == 409
    row = conn.execute("SELECT acknowledged_by, ack_comment FROM excursions").fetchone()
    assert row == ("qa1", "door shut")


def test_duplicate_user_and_weak_password_are_refused(client: Any) -> None:
    admin = _headers(client, Role.ADMIN)
    body = {
        "username": "qa1",
        "full_name": "Dup",
        "role": "qa",
        "password": "a-long-enough-password",
    }
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    weak = {**body, "username": "weak", "password": "short"}
    assert client.post("/api/v1/users", json=weak, headers=admin).status_code == 422
