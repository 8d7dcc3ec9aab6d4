"""``grocerysync-hub``: set up the database, manage users and tokens, serve the hub."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hypercorn.asyncio import serve
from hypercorn.config import Config
from tortoise import Tortoise

from grocerysync.core.errors import GrocerySyncError
from grocerysync.hub.app import create_app
from grocerysync.hub.db import migrate, tortoise_config
from grocerysync.hub.domain import users
from grocerysync.hub.models import Role
from grocerysync.hub.settings import Settings, ensure_key_file

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grocerysync-hub", description="The GrocerySync hub.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create or migrate the database (and the secret key file if none is configured)")
    user = sub.add_parser("create-user", help="add a user who can sign in or get API tokens")
    user.add_argument("email")
    user.add_argument("--role", required=True, choices=[r.value for r in Role])
    user.add_argument("--all-retailers", action="store_true", help="see every retailer (technicians, viewers)")
    user.add_argument("--retailer", type=int, action="append", default=[], help="assign to this retailer id")
    user.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    token = sub.add_parser("create-token", help="print a new API token for a user (shown once)")
    token.add_argument("email")
    token.add_argument("--name", default="", help="what the token is for")
    serve_cmd = sub.add_parser("serve", help="serve the hub with hypercorn")
    serve_cmd.add_argument("--bind", help="HOST:PORT (default: GROCERYSYNC_BIND or 127.0.0.1:8080)")
    serve_cmd.add_argument("--certfile", help="TLS certificate (PEM)")
    serve_cmd.add_argument("--keyfile", help="TLS private key (PEM)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grocerysync-hub`` command."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        if args.command == "init":
            return _init(settings)
        if args.command == "create-user":
            return _create_user(settings, args)
        if args.command == "create-token":
            token = _with_db(settings, lambda: users.create_token(args.email, args.name))
            print(token)
            return 0
        return _serve(settings, args)
    except GrocerySyncError as exc:
        print(f"grocerysync-hub {args.command}: {exc}", file=sys.stderr)
        return 2


def _with_db(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        await Tortoise.init(config=tortoise_config(settings.db_url()))
        try:
            return await work()
        finally:
            await Tortoise.close_connections()

    return asyncio.run(run())


def _init(settings: Settings) -> int:
    created = ensure_key_file(settings)
    if created is not None:
        print(f"created the secret key file {created}: back it up, stored secrets cannot be read without it")
    settings.encryption_key()  # fail now, not at first use, if the configured key is unusable
    asyncio.run(migrate(settings))
    print("the database is up to date")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise GrocerySyncError("the passwords differ; run the command again")
    return first


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)
    user = _with_db(
        settings,
        lambda: users.create_user(
            args.email, Role(args.role), password, all_retailers=args.all_retailers, retailer_ids=args.retailer
        ),
    )
    print(f"created {user.role} {user.email}")
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    config = Config()
    config.bind = [args.bind or settings.bind]
    config.accesslog = "-"
    if args.certfile or args.keyfile:
        config.certfile, config.keyfile = args.certfile, args.keyfile
    app = create_app(settings)
    try:
        asyncio.run(serve(app, config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"grocerysync-hub: cannot serve on {config.bind[0]}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
