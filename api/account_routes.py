"""Accounts: who may sign in, with what password, and which tokens still count.

Every token carries the generation of its user's tokens it was issued under; each request and
each push stream checks it against the user's row. Changing a password, disabling an account
or revoking tokens moves the generation, so every token issued before stops working at once
(and open streams end with `revoked`).

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from coldtrail.api import models, web
from coldtrail.api.erp_routes import ADMIN, PREFIX, Deps
from coldtrail.erp import audit, people
from coldtrail.erp.people import Role, User
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import AccountLocked, Conflict, NotFound
from coldtrail.passwords import MAX_PASSWORD_LENGTH

Username = Annotated[str, Path(pattern=r"^[a-z0-9_.-]{1,64}$")]
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
POLICY = (
    "At least 12 characters, and not common or guessable: zxcvbn's estimate must reach 10^8 "
    "guesses (its list of the 30 000 most common passwords, words, names, keyboard walks, "
    "repeats, dates, and the user's own names)."
)


class PasswordChange(models.RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"current_password": "the one you have", "new_password": "七月冷库-blue-lantern"}
            ]
        }
    )
    current_password: Password
    new_password: Password = Field(description=POLICY)


class NewPassword(models.RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "amber-tiger-桥-57"}]})
    password: Password = Field(description=POLICY)


class Account(BaseModel):
    username: str
    full_name: str
    role: Role
    disabled: bool
    locked_clients: int = Field(description="addresses the name is locked out for now")
    created_at: datetime


class AccountChanged(BaseModel):
    username: str
    status: str


def register(
    app: FastAPI,
    deps: Deps,
    *,
    issue: Callable[[User], models.Token],
    guard: Callable[[Request], None],
) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Anyone = Annotated[User, Depends(deps.allow(frozenset(Role)))]
    Admin = Annotated[User, Depends(deps.allow(ADMIN))]
    no_user: dict[int | str, dict[str, Any]] = {404: {"description": "no such user"}}

    def refused(problem: ValueError) -> HTTPException:
        detail = [{"loc": ["body", "password"], "msg": str(problem), "type": "value_error"}]
        return HTTPException(422, detail)

    @app.get(f"{PREFIX}/users/me", tags=["auth"])
    def me(user: Anyone) -> models.UserOut:
        return models.UserOut(username=user.username, full_name=user.full_name, role=user.role)

    @app.get(f"{PREFIX}/users", tags=["auth"])
    def list_users(conn: Db, _: Admin) -> list[Account]:
        """Every account, disabled ones too, with the addresses it is locked out for."""
        return [Account(**vars(a)) for a in people.accounts(conn, deps.clock.now())]

    @app.post(
        f"{PREFIX}/users",
        tags=["auth"],
        status_code=status.HTTP_201_CREATED,
        responses={409: {"description": "the user name is taken"}},
    )
    def add_user(body: models.NewUser, conn: Db, admin: Admin) -> models.UserOut:
        try:
            with acting(conn, admin.username):
                people.create_user(conn, body.username, body.full_name, body.role, body.password)
        except Conflict as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} exists") from exc
        except ValueError as exc:
            raise refused(exc) from exc
        return models.UserOut(username=body.username, full_name=body.full_name, role=body.role)

    @app.put(
        f"{PREFIX}/auth/password",
        tags=["auth"],
        responses={
            403: {"description": "the current password is wrong, or the name is locked out"},
            422: {"description": "the new password breaks the policy"},
            429: {"description": "too many password attempts from this address"},
        },
    )
    def change_password(
        request: Request, body: PasswordChange, conn: Db, user: Anyone
    ) -> models.Token:
        """Change your own password. Every token issued to you before (on any device) stops
        working; the answer is a new one for this client."""
        guard(request)
        locked: str | None = None
        try:
            checked = people.authenticate(
                conn, user.username, body.current_password, deps.clock.now(), web.client(request)
            )
        except AccountLocked as exc:
            checked, locked = None, str(exc)
        if checked is None:
            with acting(conn, user.username):
                audit.record(
                    conn, user.username, "password_change_failed", "user", user.username,
                    {"reason": "locked" if locked else "wrong current password"},
                )  # fmt: skip
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, locked or "the current password is wrong"
            )
        try:
            with acting(conn, user.username):
                changed = people.set_password(conn, user.username, body.new_password)
                audit.record(conn, user.username, "password_changed", "user", user.username)
        except ValueError as exc:
            raise refused(exc) from exc
        return issue(changed)

    @app.post(f"{PREFIX}/auth/revoke", tags=["auth"])
    def revoke_mine(conn: Db, user: Anyone) -> AccountChanged:
        """Sign out everywhere: every token issued to you, this one too, stops working and
        your open push streams end."""
        with acting(conn, user.username):
            people.revoke_tokens(conn, user.username)
            audit.record(conn, user.username, "tokens_revoked", "user", user.username)
        return AccountChanged(username=user.username, status="tokens revoked")

    @app.post(f"{PREFIX}/users/{{username}}/password", tags=["auth"], responses=no_user)
    def reset_password(
        username: Username, body: NewPassword, conn: Db, admin: Admin
    ) -> AccountChanged:
        """Give a user a new password (one who forgot theirs); their tokens stop working."""
        try:
            with acting(conn, admin.username):
                people.set_password(conn, username, body.password)
                audit.record(conn, admin.username, "password_reset", "user", username)
        except ValueError as exc:
            raise refused(exc) from exc
        return AccountChanged(username=username, status="password set; earlier tokens revoked")

    @app.post(f"{PREFIX}/users/{{username}}/revoke", tags=["auth"], responses=no_user)
    def revoke(username: Username, conn: Db, admin: Admin) -> AccountChanged:
        """End every token and push stream of a user (a lost laptop, say)."""
        with acting(conn, admin.username):
            people.revoke_tokens(conn, username)
            audit.record(conn, admin.username, "tokens_revoked", "user", username)
        return AccountChanged(username=username, status="tokens revoked")

    @app.post(
        f"{PREFIX}/users/{{username}}/disable",
        tags=["auth"],
        responses={
            **no_user,
            409: {"description": "already disabled, yourself, or the last administrator"},
        },
    )
    def disable(username: Username, conn: Db, admin: Admin) -> AccountChanged:
        """The user can't sign in or sign; their tokens and streams end at once. Their
        records, signatures and trail entries stay."""
        with acting(conn, admin.username):
            people.set_disabled(conn, username, True, admin.username)
        return AccountChanged(username=username, status="disabled")

    @app.post(
        f"{PREFIX}/users/{{username}}/enable",
        tags=["auth"],
        responses={**no_user, 409: {"description": "already enabled"}},
    )
    def enable(username: Username, conn: Db, admin: Admin) -> AccountChanged:
        with acting(conn, admin.username):
            people.set_disabled(conn, username, False, admin.username)
        return AccountChanged(username=username, status="enabled")

    @app.post(
        f"{PREFIX}/users/{{username}}/unlock",
        tags=["auth"],
        responses={404: {"description": "the account is not locked"}},
    )
    def unlock(username: Username, conn: Db, admin: Admin) -> AccountChanged:
        """Lift the lock-outs that failed logins or signatures put on an account, from every
        address."""
        with acting(conn, admin.username):
            if not people.unlock(conn, username):
                raise NotFound(f"account {username!r} is not locked")
            audit.record(conn, admin.username, "unlock", "user", username)
        return AccountChanged(username=username, status="unlocked")
