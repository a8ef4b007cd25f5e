"""`groundwork create-admin` and `groundwork migrate`."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import CliError, running_parts


def cmd_create_admin(args: argparse.Namespace) -> int:
    import getpass

    from app.accounts import service as accounts
    from app.db import session_scope

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"Password for {args.email}: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the passwords differ")
    with running_parts(), session_scope() as session:
        user = accounts.create_user(session, args.email, password, role="admin")
        accounts.audit(session, None, "user.create", user.email, {"role": "admin", "via": "cli"})
    print(f"{user.email} is an admin; sign in at /signin", file=sys.stderr)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with running_parts():
        print("database schema is at head", file=sys.stderr)
    return 0
