"""Time to first token through Groundwork against the LLM server's own time to first token
for the same prompt, measured directly in the same run. Groundwork's overhead (the
difference) should be no more than its retrieval time plus 50 ms.

Questions and paragraphs come from SQuAD part 1; the LLM is the embedded llama.cpp server
(SmolLM2-135M) unless LLM_BASE_URL names another. All questions run through Groundwork first,
then the same prompts go straight to the server in the same order, so that neither side
profits from the server's cache of the previous prompt.

    .venv/bin/python benchmarks/answer.py [--questions N] [--paragraphs N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from app.generation.answer import answer
from app.generation.llm import LLMClient
from app.generation.prompts import Passage, answer_messages
from app.infra.parts import EmbeddedParts
from app.infra.worker_process import WorkerProcess
from app.retrieval.search import Hit
from benchmarks.common import ROOT, fresh_parts, machine, table
from evals.corpus import ensure_corpus
from evals.datasets import load_squad

SQUAD = ROOT.parent / "shared" / "datasets" / "squad-v2-dev-part1" / "dev-v2.0-part1.json"


def as_passages(shown: list[dict]) -> list[Passage]:
    return [
        Passage(
            p["n"],
            Hit(
                rank=p["n"],
                chunk_id=p["chunk_id"],
                document_id=p["document_id"],
                document=p["document"],
                title=p["title"],
                collection="",
                page_start=p["page"],
                page_end=p["page"],
                char_start=p["char_start"],
                char_end=p["char_end"],
                heading_path=p["heading_path"],
                text=p["text"],
                scores={},
            ),
        )
        for p in shown
    ]


async def through_groundwork(settings, question: str, collection_id: int) -> dict:
    started = time.perf_counter()
    first = None
    result: dict = {}
    async for event in answer(
        question, settings=settings, collections=[collection_id], source="eval"
    ):
        if event.kind == "token" and first is None:
            first = (time.perf_counter() - started) * 1000
        elif event.kind in ("retrieval", "done"):
            result.update(event.data)
    result["ttft"] = first
    return result


async def direct(settings, question: str, passages: list[Passage]) -> float:
    client = LLMClient(settings)
    messages = answer_messages(question, passages)
    started = time.perf_counter()
    async for _ in client.stream(messages, max_tokens=settings.answer_max_tokens):
        return (time.perf_counter() - started) * 1000
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--paragraphs", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    qa = load_squad(SQUAD)
    keep = dict(list(qa.corpus.items())[: args.paragraphs])
    questions = [q for q in qa.questions if q.doc_id in keep and not q.impossible]
    questions = questions[:: max(1, len(questions) // args.questions)][: args.questions]

    with fresh_parts() as settings:
        llm = EmbeddedParts(settings)
        settings = llm.start(llm=True)
        try:
            with WorkerProcess(settings):
                collection_id, _ = ensure_corpus("bench-squad", keep, b"bench", settings)

            async def run() -> list[dict]:
                rows = []
                for q in questions[:2]:  # warm up models and caches
                    await through_groundwork(settings, q.text, collection_id)
                for q in questions:
                    rows.append(await through_groundwork(settings, q.text, collection_id))
                for q, row in zip(questions, rows, strict=True):
                    if not row.get("abstained") and row.get("ttft") is not None:
                        row["direct"] = await direct(settings, q.text, as_passages(row["passages"]))
                return rows

            rows = [r for r in asyncio.run(run()) if "direct" in r]
        finally:
            llm.stop()

    ttft = np.array([r["ttft"] for r in rows])
    direct_ttft = np.array([r["direct"] for r in rows])
    retrieval = np.array([r["timings"]["retrieval_ms"] for r in rows])
    overhead = ttft - direct_ttft
    allowed = retrieval + 50
    print(f"machine: {machine()}")
    print(
        f"LLM: {settings.llm_model} at {settings.llm_base_url}; {len(rows)} answered SQuAD "
        f"questions over {len(keep)} paragraphs; {len(questions) - len(rows)} declined"
    )
    stats = [
        ["TTFT through Groundwork", *fmt(ttft)],
        ["TTFT of the LLM server, same prompt", *fmt(direct_ttft)],
        ["Groundwork overhead (difference)", *fmt(overhead)],
        ["retrieval time", *fmt(retrieval)],
        ["allowed: retrieval + 50 ms", *fmt(allowed)],
    ]
    print(table("Time to first token (ms)", ["", "p50", "p95", "mean"], stats))
    within = float(np.mean(overhead <= allowed))
    print(
        f"\noverhead within retrieval + 50 ms for {within:.0%} of questions; "
        f"median overhead minus retrieval: {np.median(overhead - retrieval):.1f} ms"
    )


def fmt(values: np.ndarray) -> list[str]:
    return [
        f"{np.percentile(values, 50):.1f}",
        f"{np.percentile(values, 95):.1f}",
        f"{values.mean():.1f}",
    ]


if __name__ == "__main__":
    main()
