"""``grocerysync-hub``: set up the database, manage users and tokens, serve the hub."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from hypercorn.asyncio import serve
from hypercorn.config import Config
from tortoise import Tortoise

from grocerysync.core.errors import ConfigError, GrocerySyncError
from grocerysync.hub.app import create_app
from grocerysync.hub.backup import backup_file, restore_file
from grocerysync.hub.crypto import SecretBox
from grocerysync.hub.db import migrate, tortoise_config
from grocerysync.hub.domain import retention, users
from grocerysync.hub.models import Role
from grocerysync.hub.rls import apply_policies, is_postgres
from grocerysync.hub.rotation import rotate_secrets
from grocerysync.hub.sessions import is_loopback
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
    backup_cmd = sub.add_parser("backup", help="write every tenant's configuration to FILE (secrets stay encrypted)")
    backup_cmd.add_argument("file", type=Path)
    restore_cmd = sub.add_parser("restore", help="load a backup FILE into an empty database (SQLite or PostgreSQL)")
    restore_cmd.add_argument("file", type=Path)
    restore_cmd.add_argument("--force", action="store_true", help="replace everything in a database that has data")
    rotate = sub.add_parser(
        "rotate-keys", help="re-encrypt every stored secret under the first key of the key ring, while serving"
    )
    rotate.add_argument("--dry-run", action="store_true", help="only count the secrets under older keys")
    rotate.add_argument("--batch-size", type=int, default=100, help="rows rewritten per transaction")
    purge_cmd = sub.add_parser(
        "purge", help="delete log entries and finished runs older than each retailer's retention (log_retention_days)"
    )
    purge_cmd.add_argument("--batch-size", type=int, default=1000, help="rows deleted per statement")
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
        if args.command in _MAINTENANCE:
            return _MAINTENANCE[args.command](settings, args)
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
    if is_postgres(settings.db_url()):
        _with_db(settings, lambda: _apply_policies(settings))
        role = settings.database_app_role
        then = f"serve as {role}" if role else "set GROCERYSYNC_DATABASE_APP_ROLE to grant the role the hub serves as"
        print(f"row-level security is on for every tenant-owned table; {then}")
    return 0


async def _apply_policies(settings: Settings) -> None:
    await apply_policies(Tortoise.get_connection("postgres"), settings.database_app_role)


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


def _tune_gc() -> None:
    """Collect garbage less often while serving.

    Each request allocates thousands of short-lived objects (a log batch: 1,000 records as dicts, models and
    rows), and with the default thresholds the cyclic collector ran every 700 allocations and took about 40 % of
    the hub's CPU when ingesting logs. Everything imported so far lives as long as the process, so it is frozen
    out of the collector's sight.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    config = Config()
    config.bind = [args.bind or settings.bind]
    host = config.bind[0].rsplit(":", 1)[0]
    if not settings.cookie_secure and not is_loopback(host):
        raise ConfigError(
            f"GROCERYSYNC_COOKIE_SECURE=false is only for development on loopback, not for {config.bind[0]}; "
            "remove it and serve over TLS (--certfile/--keyfile, or behind a TLS proxy)"
        )
    config.accesslog = "-"
    if args.certfile or args.keyfile:
        config.certfile, config.keyfile = args.certfile, args.keyfile
    app = create_app(settings)
    _tune_gc()
    try:
        asyncio.run(serve(app, config))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"grocerysync-hub: cannot serve on {config.bind[0]}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


def _backup(settings: Settings, args: argparse.Namespace) -> int:
    counts = _with_db(settings, lambda: backup_file(args.file))
    print(f"wrote {sum(counts.values())} rows of {len(counts)} tables to {args.file}")
    print("stored secrets stay encrypted: keep the key file (or GROCERYSYNC_SECRET_KEY) with the backup, separately")
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise GrocerySyncError(f"{args.file} is not a file; name the backup written by 'grocerysync-hub backup'")
    keys = SecretBox.from_keys(settings.encryption_keys())
    asyncio.run(migrate(settings))
    report = _with_db(settings, lambda: restore_file(args.file, force=args.force))
    print(f"restored {sum(report.rows.values())} rows of {len(report.rows)} tables from {args.file}")
    missing = sorted(set(report.key_ids) - set(keys.key_ids))
    if missing:
        print(
            f"warning: stored secrets were encrypted with key(s) {', '.join(missing)}, which this hub's key ring "
            "lacks; add the old key to GROCERYSYNC_SECRET_KEY / GROCERYSYNC_SECRET_KEY_FILE",
            file=sys.stderr,
        )
    if is_postgres(settings.db_url()):
        _with_db(settings, lambda: _apply_policies(settings))
    return 0


def _rotate_keys(settings: Settings, args: argparse.Namespace) -> int:
    box = SecretBox.from_keys(settings.encryption_keys())
    report = _with_db(settings, lambda: rotate_secrets(box, batch_size=max(1, args.batch_size), dry_run=args.dry_run))
    if args.dry_run:
        print(f"{report.rewritten} stored secrets would be re-encrypted under key {box.key_id}; {report.current} are")
    else:
        print(
            f"re-encrypted {report.rewritten} stored secrets under key {box.key_id}; {report.current} already were"
            + (f"; {report.changed_meanwhile} were saved anew meanwhile" if report.changed_meanwhile else "")
        )
    for line in report.failed:
        print(f"cannot re-encrypt {line}", file=sys.stderr)
    if report.failed:
        print("keep the old keys in the ring and run rotate-keys again once the key ring is complete", file=sys.stderr)
        return 1
    if not args.dry_run and len(box.key_ids) > 1:
        print(f"no stored secret needs the older keys ({', '.join(box.key_ids[1:])}) now: remove them from the ring")
    return 0


def _purge(settings: Settings, args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise GrocerySyncError("--batch-size must be at least 1")
    report = _with_db(settings, lambda: retention.purge(batch_size=args.batch_size))
    print(f"deleted {report}")
    return 0


_MAINTENANCE: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "purge": _purge,
    "backup": _backup,
    "restore": _restore,
    "rotate-keys": _rotate_keys,
}


if __name__ == "__main__":
    raise SystemExit(main())
