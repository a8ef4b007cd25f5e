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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from app.config import SEARCH_K_MAX, Settings, SettingsError, get_settings, use_settings
from app.errors import AppError
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
    from app.ingest.bulk import ingest_files, wait_settled
    from app.models import Document

    files = walk(args.paths)
    if not files:
        raise CliError("no files to ingest")
    names = Counter(p.name for p in files)
    same_name = [p for p in files if names[p.name] > 1]
    if same_name:  # one would replace the other: a document is known by its file name
        listed = ", ".join(str(p) for p in same_name[:6])
        raise CliError(
            f"{len(same_name)} files share a name ({listed}); a document is named by its file "
            "name, so one would replace another: ingest them into separate collections"
        )
    with running_parts(worker=args.wait) as settings:
        sources = [(p.name, p.stat().st_size, p.read_bytes) for p in files]
        ids = ingest_files(args.collection, sources, settings)
        log.info("sent %d file(s) to %s", len(ids), args.collection)
        if args.wait:
            wait_settled(ids, on_wait=lambda n: log.info("waiting for %d document(s)", n))
        with session_scope() as session:
            docs = {d.id: d for d in service.list_documents(session, ids=ids, limit=None)}
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


def pages(first: int | None, last: int | None) -> str:
    """ ", p. 3" or ", pp. 3-4" (a passage can cross a page break), or nothing."""
    if not first:
        return ""
    return f", pp. {first}-{last}" if last and last != first else f", p. {first}"


def cmd_search(args: argparse.Namespace) -> int:
    from app.db import session_scope
    from app.web.search import run_search

    if args.k is not None and not 1 <= args.k <= SEARCH_K_MAX:
        raise CliError(f"--k must be from 1 to {SEARCH_K_MAX} (got {args.k})")
    with running_parts(), session_scope() as session:
        result = run_search(session, args.query, args.collection, args.k, args.mode, readable=None)
        if args.json:
            print(json.dumps(result.to_dict()))
            return 0
        timings = ", ".join(f"{k[:-3]} {v:.0f} ms" for k, v in result.timings.items())
        print(f"{len(result.hits)} passage(s) ({timings}; reranker {result.reranker['status']})")
        for hit in result.hits:
            scores = " ".join(f"{k}={v:.3f}" for k, v in hit.scores.items() if v is not None)
            page = pages(hit.page_start, hit.page_end)
            print(
                f"\n{hit.rank:>2}. {hit.title or hit.document}{page} [{hit.collection}]  {scores}"
            )
            print("    " + " ".join(hit.text.split())[:300])
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    import asyncio

    from app.db import session_scope
    from app.generation.answer import answer, check_question
    from app.ingest import service

    question = check_question(args.question)
    with running_parts(llm=True) as settings:
        collections = None
        if args.collection:
            with session_scope() as session:
                collections = [service.get_collection(session, args.collection).id]

        async def run() -> dict:
            result: dict = {}
            async for event in answer(
                question, settings=settings, collections=collections, source="cli"
            ):
                if event.kind == "token" and not args.json:
                    print(event.data["text"], end="", flush=True)
                elif event.kind == "error":
                    result["error"] = event.data["message"]
                else:
                    result.update(event.data)
            return result

        result = asyncio.run(run())
    citations = [
        {
            k: c.get(k)
            for k in ("n", "document", "page", "page_end", "chunk_id", "text", "supported", "score")
        }
        for c in result.get("citations", [])
    ]
    timings = result.get("timings", {})
    out = {
        "answer": result.get("answer", ""),
        "abstained": result.get("abstained", False),
        "citations": citations,
        "query": result.get("query", question),
        "timings": {k: timings.get(k) for k in ("retrieval_ms", "ttft_ms", "total_ms")},
    }
    if "error" in result:
        out["error"] = result["error"]
    if args.json:
        print(json.dumps(out))
    else:
        if out["abstained"] or "error" in result:
            print(result.get("error") or out["answer"])
            print("\nClosest passages:" if out["abstained"] else "\nPassages found:")
            for p in result.get("passages", []):
                page = pages(p.get("page"), p.get("page_end"))
                print(f"  [{p['n']}] {p['title'] or p['document']}{page}: {p['text'][:160]}")
        else:
            print()
            for c in citations:
                state = "supported" if c["supported"] else "UNSUPPORTED"
                where = f"[{c['n']}] {c['document']}" if c["n"] else "no passage"
                page = pages(c["page"], c["page_end"])
                print(f"  {state} ({c['score']:.2f}) {where}{page}: {c['text'][:120]}")
    return 1 if "error" in result else 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    import getpass

    from app import accounts
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

    search = sub.add_parser("search", help="search the indexed passages")
    search.add_argument("query")
    search.add_argument("--collection", default=None)
    search.add_argument("--k", type=int, default=None, help="passages to return")
    search.add_argument("--mode", choices=["bm25", "dense", "hybrid"], default="hybrid")
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(func=cmd_search)

    ask = sub.add_parser("ask", help="answer a question from the documents, with citations")
    ask.add_argument("question")
    ask.add_argument("--collection", default=None)
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
