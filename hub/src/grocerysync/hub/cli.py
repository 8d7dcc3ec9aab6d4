"""``grocerysync-hub``: serve the hub."""

from __future__ import annotations

import argparse
import asyncio
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

from grocerysync.hub.app import create_app
from grocerysync.hub.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``grocerysync-hub`` command."""
    parser = argparse.ArgumentParser(prog="grocerysync-hub", description="The GrocerySync hub.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="serve the hub with hypercorn")
    serve_cmd.add_argument("--bind", help="HOST:PORT (default: GROCERYSYNC_BIND or 127.0.0.1:8080)")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "serve":
        config = Config()
        config.bind = [args.bind or settings.bind]
        config.accesslog = "-"
        try:
            asyncio.run(serve(create_app(settings), config))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"grocerysync-hub: cannot serve on {config.bind[0]}: {exc.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
