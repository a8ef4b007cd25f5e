"""The offline evaluation runner.

    python -m evals retrieval (--beir DIR | --squad FILE) [--limit N] [--json]
    python -m evals answers --squad FILE [--limit N] [--json]
    python -m evals tune-fusion (--beir DIR | --squad FILE) [--limit N] [--json]
    python -m evals tune-thresholds --squad FILE [--limit N] [--json]

Each ingests its corpus through the real pipeline (a worker of its own starts when none
answers), runs through the real search and answer paths, stores the run in Postgres and prints
one table, or one JSON object with --json (logs go to stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.cli.common import CliError, running_parts
from app.config import SettingsError, get_settings
from app.infra.processes import EmbeddedError
from app.runtime import configure_logging


def table(header: list[str], rows: list[list[object]]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def retrieval_set(args: argparse.Namespace):
    """A BEIR directory, or a SQuAD file read as question -> paragraph retrieval."""
    from evals.datasets import load_beir, load_squad, squad_as_retrieval

    if (args.beir is None) == (args.squad is None):
        raise CliError("give one of --beir DIR or --squad FILE")
    return load_beir(args.beir) if args.beir else squad_as_retrieval(load_squad(args.squad))


def cmd_retrieval(args: argparse.Namespace) -> dict:
    from evals.retrieval import run_retrieval

    data = retrieval_set(args)
    with running_parts(worker=True) as settings:
        report = run_retrieval(data, settings, args.limit)
    if not args.json:
        rows = [
            [mode, m["ndcg@10"], m["recall@100"], m["mrr@10"], m.get("p50_ms"), m.get("p95_ms")]
            for mode, m in report["modes"].items()
        ]
        print(
            f"{report['dataset']}: {report['queries']} queries (run {report['run_id']}); "
            f"hybrid uses the collection's fusion: {report['default_fusion']}"
        )
        print(table(["mode", "nDCG@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms"], rows))
    return report


def cmd_answers(args: argparse.Namespace) -> dict:
    from evals.answers import run_answers
    from evals.datasets import load_squad

    qa = load_squad(args.squad)
    with running_parts(worker=True, llm=True) as settings:
        report = run_answers(qa, settings, args.limit)
    if not args.json:
        print(
            f"{report['dataset']}: {report['questions']} questions ({report['answerable']} "
            f"answerable, {report['unanswerable']} not), LLM {report['llm']} "
            f"(run {report['run_id']})"
        )
        print(table(["metric", "value"], [[k, v] for k, v in report["metrics"].items()]))
    return report


def cmd_tune_fusion(args: argparse.Namespace) -> dict:
    from evals.retrieval import tune_fusion

    data = retrieval_set(args)
    with running_parts(worker=True) as settings:
        results = tune_fusion(data, settings, args.limit)
    report = {
        "dataset": data.name,
        "queries": min(len(data.queries), args.limit or 10**9),
        "settings": results,
    }
    if not args.json:
        rows = [[name, m["ndcg@10"], m["recall@100"], m["mrr@10"]] for name, m in results.items()]
        print(f"fusion settings on {data.name}: {report['queries']} questions")
        print(table(["fusion", "nDCG@10", "Recall@100", "MRR@10"], rows))
    return report


def cmd_tune_thresholds(args: argparse.Namespace) -> dict:
    from evals.datasets import load_squad
    from evals.thresholds import abstention, citation_support

    qa = load_squad(args.squad)
    with running_parts(worker=True) as settings:
        report: dict[str, Any] = {
            "dataset": qa.name,
            "abstention": abstention(qa, settings, args.limit),
            "citation_support": citation_support(qa, settings, args.limit),
        }
    if not args.json:
        for name in ("abstention", "citation_support"):
            print(f"{name} on {qa.name}:")
            print(table(["", "value"], [[k, v] for k, v in report[name].items()]))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    retrieval = sub.add_parser("retrieval", help="nDCG@10, Recall@100, MRR@10, latency per mode")
    retrieval.set_defaults(func=cmd_retrieval)
    answers = sub.add_parser("answers", help="EM, F1, declines, citations, hit@5, TTFT")
    answers.add_argument("--squad", type=Path, required=True, help="a SQuAD 2.0 JSON file")
    answers.set_defaults(func=cmd_answers)
    tune = sub.add_parser("tune-fusion", help="every fusion method and weight on a data set")
    tune.set_defaults(func=cmd_tune_fusion)
    for p in (retrieval, tune):
        p.add_argument("--beir", type=Path, help="a BEIR data set directory")
        p.add_argument("--squad", type=Path, help="a SQuAD 2.0 file (question -> paragraph)")
    thresholds = sub.add_parser("tune-thresholds", help="abstention and citation thresholds")
    thresholds.add_argument("--squad", type=Path, required=True, help="a SQuAD 2.0 JSON file")
    thresholds.set_defaults(func=cmd_tune_thresholds)
    for p in (retrieval, answers, tune, thresholds):
        p.add_argument("--limit", type=int, default=None, help="only the first N queries")
        p.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        configure_logging(get_settings())
        report = args.func(args)
    except (SettingsError, CliError, EmbeddedError, FileNotFoundError) as err:
        print(f"evals: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
