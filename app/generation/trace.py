"""The trace of one answer, for admins: what was searched for and how, every passage found
with every score, the fusion, why it declined or went on, the prompt exactly as sent, the
LLM's time to first token and speed, and each sentence's citation check. Built as the answer
runs, stored with its message (`app.models.MessageTrace`), deleted after
TRACE_RETENTION_DAYS; what the Quality page charts (outcome, relevance, timings) stays on the
message itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.config import Settings
from app.generation.citations import Citation
from app.generation.llm import StreamStats
from app.generation.prompts import Passage
from app.retrieval.search import SearchResult

VERSION = 1
OUTCOMES = ("answered", "abstained", "truncated", "error", "stopped")


class Trace:
    def __init__(self, question: str, settings: Settings):
        self.settings = settings
        self.data: dict[str, Any] = {
            "version": VERSION,
            "question": question,
            "query": question,
            "rewrite": None,
            "search": None,
            "decision": None,
            "passages": [],
            "prompt": None,
            "llm": None,
            "citations": None,
            "outcome": None,
            "error": None,
            "timings": {},
        }

    def rewrite(
        self,
        messages: list[dict[str, str]],
        query: str,
        stats: StreamStats | None,
        error: str | None,
    ) -> None:
        self.data["query"] = query
        self.data["rewrite"] = {
            "messages": messages,
            "query": query,
            "llm": stats.to_dict() if stats is not None else None,
            "error": error,
        }

    def search(self, result: SearchResult, given: Sequence[Passage]) -> None:
        s = self.settings
        self.data["search"] = {
            "mode": result.mode,
            "k": len(result.hits),
            "generation": result.generation_id,
            # the fusion this search used (the collection's calibration or the default)
            "fusion": {**(result.fusion or {}), "depth": s.fusion_depth},
            "reranked": result.reranked,
            "reranker": result.reranker,
            "timings": result.timings,
            "relevance": result.relevance,
        }
        numbered = {p.hit.chunk_id: p.n for p in given}
        self.data["passages"] = [
            {
                "rank": hit.rank,
                "n": numbered.get(hit.chunk_id),  # given to the LLM as [n]
                "chunk_id": hit.chunk_id,
                "document_id": hit.document_id,
                "document": hit.document,
                "title": hit.title,
                "page": hit.page_start,
                "heading_path": hit.heading_path,
                "scores": hit.scores,
                "text": hit.text,
            }
            for hit in result.hits
        ]

    def decision(self, score: float | None, reranked: bool, abstained: bool) -> None:
        s = self.settings
        self.data["decision"] = {
            "relevance": score,
            "on": "rerank" if reranked else "fused",
            "threshold": s.abstain_rerank_threshold if reranked else s.abstain_threshold,
            "abstained": abstained,
        }

    def prompt(self, body: dict[str, Any]) -> None:
        """The request body sent to the LLM: model, messages, max_tokens, temperature…"""
        self.data["prompt"] = body

    def llm(self, stats: StreamStats, finish_reason: str | None) -> None:
        self.data["llm"] = {**stats.to_dict(), "finish_reason": finish_reason}

    def citations(self, citations: Sequence[Citation], declined: bool) -> None:
        self.data["citations"] = {
            "threshold": self.settings.citation_support_threshold,
            "checked": not declined,  # a decline in the model's words is not checked
            "sentences": [
                {
                    "sentence": c.sentence,
                    "text": c.text,
                    "cited": list(c.cited),
                    "n": c.n,
                    "supported": c.supported,
                    "score": round(c.score, 4),
                }
                for c in citations
            ],
        }

    def finish(self, outcome: str, timings: dict[str, float], error: str | None = None) -> dict:
        assert outcome in OUTCOMES, outcome
        self.data["outcome"] = outcome
        self.data["error"] = error
        self.data["timings"] = dict(timings)
        return self.data
