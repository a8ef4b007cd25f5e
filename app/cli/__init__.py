"""The `groundwork` command: serve, ingest, search, ask, migrate, create-admin.

Every command runs against the parts named by the settings; with embedded parts it joins those
of a running `serve` (same DATA_DIR) or starts its own and stops them when it ends. Commands
call the same service functions as the web API. `--json` prints one JSON object on stdout;
logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from app.cli.admin import cmd_create_admin, cmd_migrate
from app.cli.common import CliError
from app.cli.ingest import cmd_ingest
from app.cli.query import add_filter_flags, cmd_ask, cmd_search
from app.cli.serve import cmd_serve
from app.config import SettingsError, get_settings
from app.errors import AppError
from app.infra.processes import EmbeddedError
from app.runtime import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundwork", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="web + worker (+ embedded parts) in the foreground")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run the web app only")
    serve.add_argument("--no-llm", action="store_true", help="do not start the embedded LLM")
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser(
        "ingest", help="send files (directories are walked) and web pages (URLs) for ingestion"
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH|URL")
    ingest.add_argument("--collection", default="default")
    ingest.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="LABEL",
        help="a label for every file (repeat for more; searches can filter on them)",
    )
    ingest.add_argument("--wait", action="store_true", help="wait until every file settles")
    ingest.add_argument(
        "--give-up-after",
        type=float,
        default=600,
        metavar="SECONDS",
        help="with --wait: stop waiting when nothing progressed for this long (default 600)",
    )
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(func=cmd_ingest)

    search = sub.add_parser("search", help="search the indexed passages")
    search.add_argument("query")
    search.add_argument("--collection", default=None)
    search.add_argument("--k", type=int, default=None, help="passages to return")
    search.add_argument("--mode", choices=["bm25", "dense", "hybrid"], default="hybrid")
    add_filter_flags(search)
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(func=cmd_search)

    ask = sub.add_parser("ask", help="answer a question from the documents, with citations")
    ask.add_argument("question")
    ask.add_argument("--collection", default=None)
    add_filter_flags(ask)
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.set_defaults(func=cmd_ask)

    admin = sub.add_parser("create-admin", help="make an admin account (asks for a password)")
    admin.add_argument("email")
    admin.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    admin.set_defaults(func=cmd_create_admin)

    migrate = sub.add_parser("migrate", help="upgrade the database schema to head")
    migrate.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as err:
        print(f"groundwork: {err}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        return int(args.func(args) or 0)
    except (CliError, AppError) as err:
        print(f"groundwork: {err}", file=sys.stderr)
        return 2
    except EmbeddedError as err:
        print(f"groundwork: {err}", file=sys.stderr)
        return 1
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as err:
        first = str(err.orig or err).strip().splitlines()[0][:200]
        print(
            f"groundwork: the database is not answering ({first}): check that it runs "
            "(DATABASE_URL, or `groundwork serve` for the embedded one) and try again",
            file=sys.stderr,
        )
        return 1
    except (redis.exceptions.RedisError, kombu.exceptions.OperationalError) as err:
        print(
            f"groundwork: Redis (the broker) is not answering ({err}): check that it runs "
            "(REDIS_URL, or `groundwork serve` for the embedded one) and try again",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
