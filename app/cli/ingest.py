"""`groundwork ingest`: files and folders, and web pages by URL (a sitemap.xml brings its
pages), through the same Celery path as the upload page."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from app.cli.common import CliError, log, running_parts
from app.cli.progress import ProgressLine


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
    from app import jobs
    from app.db import session_scope
    from app.documents import service
    from app.documents.bulk import Stalled, ingest_files, ingest_urls, wait_settled
    from app.models import Document
    from app.retrieval.filters import check_labels
    from app.web_pages.service import is_url

    labels = check_labels(args.label)
    urls = [p for p in args.paths if is_url(p)]
    files = walk([p for p in args.paths if not is_url(p)])
    if not files and not urls:
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
        ids = ingest_files(args.collection, sources, settings, labels) if files else []
        if urls:
            ids += ingest_urls(args.collection, urls, settings)
        log.info("sent %d document(s) to %s", len(ids), args.collection)
        with session_scope() as session:
            if jobs.unsent_due(session):
                log.warning(
                    "the broker did not take every job: they wait in the database and are "
                    "sent when it answers again (by a running `groundwork serve`, or this "
                    "command with --wait)"
                )
        if args.wait:
            try:
                wait_settled(ids, on_wait=ProgressLine(), stall_s=args.give_up_after)
            except Stalled as err:
                raise CliError(str(err)) from None
        with session_scope() as session:
            ids += service.brought_by(session, ids)  # the pages of sitemaps
            docs = {d.id: d for d in service.list_documents(session, ids=ids, limit=None)}
    rows: list[Document] = [docs[i] for i in dict.fromkeys(ids) if i in docs]
    out = [
        {
            "id": d.id,
            "filename": d.filename,
            "status": d.status,
            "chunks": d.chunks_total if d.status == "indexed" else 0,
            "labels": list(d.labels or []),
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
