"""The `groundwork` command: serve, ingest, search, ask, migrate, create-admin.

Every command runs against the parts named by the settings; with embedded parts it joins those
of a running `serve` (same DATA_DIR) or starts its own and stops them when it ends. Commands
call the same service functions as the web API. `--json` prints one JSON object on stdout;
logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from app.config import Settings, SettingsError, get_settings, use_settings
from app.runtime import configure_logging
from app.services.embedded import EmbeddedError

log = logging.getLogger("groundwork")


class CliError(Exception):
    """Printed as one line on stderr; exit status 2."""


@contextlib.contextmanager
def running_parts(*, worker: bool = False, llm: bool = False) -> Iterator[Settings]:
    """Settings whose URLs point at running parts (joined or started), the schema at head,
    Celery configured, and (with `worker`) a worker answering: ours if none does."""
    from app.db import migrate
    from app.services.embedded import EmbeddedParts
    from app.services.worker_process import WorkerProcess, workers_answering
    from worker.celery_app import configure

    settings = get_settings()
    with EmbeddedParts(settings) as parts:
        resolved = parts.start(llm=llm)
        use_settings(resolved)
        migrate(resolved)
        configure(resolved)
        own_worker = None
        if worker and not workers_answering():
            log.info("no worker answers; starting one")
            own_worker = WorkerProcess(resolved).start()
        try:
            yield resolved
        finally:
            if own_worker is not None:
                own_worker.stop()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            if err.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


class StopRequested(Exception):
    """Ctrl-C, SIGTERM or SIGHUP: stop everything we started, then exit 0."""


def _request_stop(signum: int, frame: object) -> None:
    # Further signals are ignored so that a second Ctrl-C cannot cut the clean-up short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested(signal.Signals(signum).name)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.services.worker_process import WorkerProcess

    if not port_free(args.host, args.port):
        raise CliError(f"port {args.port} on {args.host} is already in use (try --port)")
    # uvicorn handles SIGINT/SIGTERM itself (a graceful stop) and then re-raises them to
    # these handlers, whose exception unwinds through the finally blocks below.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _request_stop)
    try:
        with running_parts(llm=not args.no_llm) as settings:
            worker = None if args.no_worker else WorkerProcess(settings).start(wait=False)
            try:
                config = uvicorn.Config(
                    create_app(settings),
                    host=args.host,
                    port=args.port,
                    log_level=settings.log_level.lower(),
                )
                print(f"Groundwork is serving http://{args.host}:{args.port}", file=sys.stderr)
                uvicorn.Server(config).run()
            finally:
                if worker is not None:
                    worker.stop()
    except StopRequested as stop:
        log.info("stopped by %s", stop)
    return 0


def walk(paths: list[str]) -> list[Path]:
    """Files named, and every file under directories named (hidden ones skipped), in order."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise CliError(f"no such file or directory: {name}")
    return files


def cmd_ingest(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.ingest import service
    from app.models import SETTLED, Document

    files = walk(args.paths)
    if not files:
        raise CliError("no files to ingest")
    with running_parts(worker=args.wait) as settings:
        ids: list[int] = []
        queued: list[int] = []
        with session_scope() as session:
            collection = service.get_collection(session, args.collection, create=True)
            for path in files:
                size = path.stat().st_size
                if size > settings.max_upload_bytes:
                    added = service.add_rejected(
                        session, collection, path.name, size,
                        f"larger than the {settings.max_upload_mb} MB limit", 413,
                    )  # fmt: skip
                else:
                    added = service.add_document(
                        session, collection, path.name, path.read_bytes(), settings.max_upload_bytes
                    )
                ids.append(added.document.id)
                if added.enqueue:
                    queued.append(added.document.id)
        service.enqueue(queued)
        log.info("sent %d file(s) to %s (%d queued)", len(ids), args.collection, len(queued))
        while args.wait:
            with session_scope() as session:
                docs = {d.id: d for d in service.list_documents(session, ids=ids)}
            pending = [d for d in docs.values() if d.status not in SETTLED]
            if not pending:
                break
            log.info("waiting for %d document(s): %s", len(pending),
                     ", ".join(f"{d.filename} {d.status}" for d in pending[:3]))  # fmt: skip
            time.sleep(1.0)
        with session_scope() as session:
            docs = {d.id: d for d in service.list_documents(session, ids=ids)}
    rows: list[Document] = [docs[i] for i in dict.fromkeys(ids) if i in docs]
    out = [
        {
            "id": d.id,
            "filename": d.filename,
            "status": d.status,
            "chunks": d.chunks_total if d.status == "indexed" else 0,
            "error": d.error,
        }
        for d in rows
    ]
    if args.json:
        print(json.dumps({"documents": out}))
    else:
        for row in out:
            reason = f"  ({row['error']})" if row["error"] else ""
            status, chunks = row["status"], row["chunks"]
            print(f"{row['id']:>6}  {status:<9} {chunks:>5} chunks  {row['filename']}{reason}")
    bad = any(row["status"] in ("failed", "rejected") for row in out)
    if args.wait:
        return 0 if all(row["status"] == "indexed" for row in out) else 1
    return 1 if bad else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    with running_parts():
        print("database schema is at head", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundwork", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="web + worker (+ embedded parts) in the foreground")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="run the web app only")
    serve.add_argument("--no-llm", action="store_true", help="do not start the embedded LLM")
    serve.set_defaults(func=cmd_serve)

    ingest = sub.add_parser("ingest", help="send files (directories are walked) for ingestion")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--collection", default="default")
    ingest.add_argument("--wait", action="store_true", help="wait until every file settles")
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(func=cmd_ingest)

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
    except CliError as err:
        print(f"groundwork: {err}", file=sys.stderr)
        return 2
    except EmbeddedError as err:
        print(f"groundwork: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
