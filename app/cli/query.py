"""`groundwork search` and `groundwork ask`: the same search and answer paths as the API,
over everything (the command line runs with the database's own credentials)."""

from __future__ import annotations

import argparse
import json

from app.cli.common import CliError, running_parts
from app.config import SEARCH_K_MAX


def add_filter_flags(parser: argparse.ArgumentParser) -> None:
    """The metadata filters (`app.retrieval.filters`), as flags."""
    group = parser.add_argument_group("filters (a document must match every one given)")
    group.add_argument(
        "--file-type",
        action="append",
        dest="file_types",
        metavar="TYPE",
        help="pdf, docx, html, markdown or text (repeat for any of several)",
    )
    group.add_argument("--document", metavar="GLOB", help="file name, * and ? as wildcards")
    group.add_argument("--uploaded-from", metavar="YYYY-MM-DD", help="uploaded on or after")
    group.add_argument("--uploaded-to", metavar="YYYY-MM-DD", help="uploaded on or before")
    group.add_argument(
        "--label", action="append", dest="labels", metavar="LABEL", help="any of these labels"
    )


def filters_of(args: argparse.Namespace):
    from app.retrieval.filters import Filters

    return Filters.parse(
        file_types=args.file_types,
        document=args.document,
        uploaded_from=args.uploaded_from,
        uploaded_to=args.uploaded_to,
        labels=args.labels,
    )


def pages(first: int | None, last: int | None) -> str:
    """ ", p. 3" or ", pp. 3-4" (a passage can cross a page break), or nothing."""
    if not first:
        return ""
    return f", pp. {first}-{last}" if last and last != first else f", p. {first}"


def cmd_search(args: argparse.Namespace) -> int:
    from app.collections.access import search_scope
    from app.db import session_scope
    from app.retrieval.search import search

    if args.k is not None and not 1 <= args.k <= SEARCH_K_MAX:
        raise CliError(f"--k must be from 1 to {SEARCH_K_MAX} (got {args.k})")
    filters = filters_of(args)
    with running_parts(), session_scope() as session:
        allowed = search_scope(session, None, args.collection)
        result = search(
            session, args.query, mode=args.mode, k=args.k, collections=allowed, filters=filters
        )
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

    from app.collections.access import search_scope
    from app.db import session_scope
    from app.generation.answer import answer, check_question

    question = check_question(args.question)
    filters = filters_of(args)
    with running_parts(llm=True) as settings:
        with session_scope() as session:
            collections = search_scope(session, None, args.collection)

        async def run() -> dict:
            result: dict = {}
            async for event in answer(
                question,
                settings=settings,
                collections=collections,
                source="cli",
                filters=filters,
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
        "filters": result.get("filters", {}),
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
