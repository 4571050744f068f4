"""``coldtrail users ...``: accounts from the command line, for whoever runs the database
(an administrator who forgot the password, or is locked out, or the last one gone). Each change
is in the audit trail with the acting operator's name (``--by``)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from coldtrail.errors import ConfigError
from coldtrail.settings import Settings


def _print(doc: object) -> None:
    print(json.dumps(doc, default=str, ensure_ascii=False))


def _new_password(args: argparse.Namespace) -> str:
    # Read, never taken as an argument: a command line is readable by every user (`ps`).
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ")
    return first


def cmd_users(settings: Settings, args: argparse.Namespace) -> None:
    from coldtrail import db
    from coldtrail.clock import SystemClock
    from coldtrail.erp import audit, people
    from coldtrail.erp.tx import acting

    with db.connect(settings.require_database_url(), autocommit=True) as conn:
        if args.users_command == "list":
            _print([vars(a) for a in people.accounts(conn, SystemClock().now())])
            return
        name, actor = args.username, f"cli:{args.by}"
        if args.users_command == "set-password":
            password = _new_password(args)
            try:
                with acting(conn, actor):
                    people.set_password(conn, name, password)
                    audit.record(conn, actor, "password_reset", "user", name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            status = "password set; earlier tokens revoked"
        elif args.users_command in ("disable", "enable"):
            with acting(conn, actor):
                people.set_disabled(conn, name, args.users_command == "disable", actor)
            status = f"{args.users_command}d"
        elif args.users_command == "revoke":
            with acting(conn, actor):
                people.revoke_tokens(conn, name)
                audit.record(conn, actor, "tokens_revoked", "user", name)
            status = "tokens revoked"
        else:
            with acting(conn, actor):
                unlocked = people.unlock(conn, name)
                audit.record(conn, actor, "unlock", "user", name)
            status = "unlocked" if unlocked else "was not locked"
    _print({"username": name, "status": status})


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("users", help="people's accounts: passwords, disable, revoke, unlock")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    users_sub.add_parser("list", help="every account, as JSON").set_defaults(func=cmd_users)
    helps = {
        "set-password": "a new password (asked twice, or one line on stdin); tokens revoked",
        "disable": "the user can't sign in; their tokens and streams end",
        "enable": "the user may sign in again",
        "revoke": "every token the user holds stops working",
        "unlock": "lift lock-outs from failed passwords, from every address",
    }
    for name, text in helps.items():
        p = users_sub.add_parser(name, help=text)
        p.add_argument("username")
        p.add_argument(
            "--by",
            default=getpass.getuser(),
            help="who does this, for the audit trail (default: the system user)",
        )
        if name == "set-password":
            p.add_argument("--password-stdin", action="store_true")
        p.set_defaults(func=cmd_users)
