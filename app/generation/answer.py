"""Answering a question: rewrite a follow-up, retrieve, decline when nothing is relevant
enough, stream the LLM's answer, check its citations, store it all.

`answer()` is an async generator of events, used by the chat page (server-sent events), the
API (SSE or JSON), the CLI and the answer evals alike:

    retrieval  {conversation_id, message_id, query, passages}
    token      {text}
    done       {answer, abstained, citations, query, timings, truncated, ...}
    error      {message, kind}                  (the passages were already sent)

An answer the LLM cut at ANSWER_MAX_TOKENS (finish_reason "length") ends with TRUNCATED,
stored with it (a message has no column for it), and its done event says `truncated`. An
answer with no text at all is an LLM failure ("bad_response"), not an answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.conversations import store
from app.db import session_scope
from app.errors import Invalid
from app.generation import prompts
from app.generation.citations import Citation, check_citations
from app.generation.llm import LLMClient, LLMError
from app.generation.prompts import NOT_COVERED
from app.generation.trace import Trace
from app.ingest.embed import get_embedder
from app.monitoring.metrics import record_answer
from app.retrieval.filters import Filters
from app.retrieval.search import Hit, SearchResult, search

log = logging.getLogger(__name__)
MAX_QUESTION_CHARS = 2000
CLOSEST_SHOWN = 3
_DECLINE = re.compile(
    r"\b(can(not|'t)|could ?n[o']t|unable to) (find|answer|determine)|"
    r"\b(do|does) not (contain|mention|say|provide)|\bno (information|mention)\b",
    re.I,
)
TRUNCATED = " …[cut at the ANSWER_MAX_TOKENS limit]"


@dataclass
class Event:
    kind: str
    data: dict[str, Any]


def check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise Invalid("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise Invalid(
            f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}"
        )
    return question


def relevance(result: SearchResult) -> float | None:
    """How relevant the best passage is, for abstention: the cross-encoder's score when it
    reranked, else the absolute fused score (with the default fusion, the top hit's fused
    score itself)."""
    if not result.hits:
        return None
    return result.hits[0].scores["rerank"] if result.reranked else result.relevance


def should_abstain(result: SearchResult, settings: Settings) -> bool:
    score = relevance(result)
    if score is None:
        return True
    threshold = settings.abstain_rerank_threshold if result.reranked else settings.abstain_threshold
    return score < threshold


def is_decline(answer: str) -> bool:
    return answer.strip().startswith(prompts.NOT_FOUND[:20]) or (
        len(answer) < 200 and bool(_DECLINE.search(answer))
    )


def passage_json(n: int, hit: Hit) -> dict[str, Any]:
    return {
        "n": n,
        "chunk_id": hit.chunk_id,
        "document_id": hit.document_id,
        "document": hit.document,
        "url": hit.url,  # a web page's address, shown as the source
        "title": hit.title,
        "page": hit.page_start,
        "page_end": hit.page_end,  # a passage can cross a page break
        "char_start": hit.char_start,
        "char_end": hit.char_end,
        "heading_path": hit.heading_path,
        "text": hit.text,
        "scores": hit.scores,
    }


def citation_json(c: Citation, passages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    passage = next((p for p in passages if p["n"] == c.n), None)
    evidence = None
    if passage is not None and c.evidence is not None:
        evidence = passage["text"][c.evidence[0] : c.evidence[1]]
    return {
        "sentence": c.sentence,
        "n": c.n,
        "cited": c.cited,
        "document": passage["document"] if passage else None,
        "document_id": passage["document_id"] if passage else None,
        "url": passage.get("url") if passage else None,
        "page": passage["page"] if passage else None,
        "page_end": passage.get("page_end") if passage else None,
        "chunk_id": c.chunk_id,
        "text": c.text,
        "evidence": evidence,
        "supported": c.supported,
        "score": c.score,
    }


def _search(
    query: str, collections: list[int] | None, settings: Settings, filters: Filters | None
) -> SearchResult:
    with session_scope() as session:
        return search(session, query, collections=collections, settings=settings, filters=filters)


# -- the answer ------------------------------------------------------------------------------


async def answer(
    question: str,
    *,
    settings: Settings,
    collections: list[int] | None = None,
    conversation_id: int | None = None,
    collection_id: int | None = None,
    source: str = "web",
    user_id: int | None = None,
    filters: Filters | None = None,
    history: list[tuple[str, str]] | None = None,
) -> AsyncIterator[Event]:
    """`collections`: what may be searched (collection ids; None: all). `user_id`: whose
    conversation this is (None for the CLI and the evals). `filters`: metadata filters the
    passages must pass. `history`: the earlier (question, answer) pairs, when the caller
    holds the conversation itself (the OpenAI-compatible API); else the stored
    conversation's."""
    started = time.perf_counter()
    question = check_question(question)
    turn = await asyncio.to_thread(
        store.start_turn,
        question,
        conversation_id,
        collection_id,
        source,
        settings.llm_model,
        user_id,
    )
    timings: dict[str, float] = {}
    content: list[str] = []
    trace = Trace(question, settings)
    best: float | None = None  # the best passage's relevance, kept with the message
    finished = False
    past = turn.history if history is None else history
    try:
        query = question
        if past:
            t = time.perf_counter()
            rewrite = prompts.rewrite_messages(past, question)
            rewriter, error = None, None
            try:
                rewriter = LLMClient(settings)
                rewritten = await rewriter.complete(rewrite)
                query = rewritten.splitlines()[0].strip() if rewritten.strip() else question
            except LLMError as err:
                query, error = question, str(err)  # search with the question as asked
            timings["rewrite_ms"] = _ms(t)
            trace.rewrite(rewrite, query, rewriter.stats if rewriter else None, error)
        t = time.perf_counter()
        result = await asyncio.to_thread(_search, query, collections, settings, filters)
        timings["retrieval_ms"] = _ms(t)
        best = result.relevance
        embedder = get_embedder(settings.embedding_model)
        passages = prompts.fit_passages(
            result.hits,
            question,
            embedder.count_tokens,
            context_tokens=settings.llm_context_tokens,
            answer_tokens=settings.answer_max_tokens,
            limit=settings.answer_passages,
        )
        shown = [passage_json(p.n, p.hit) for p in passages]
        base = {
            "conversation_id": turn.conversation_id,
            "message_id": turn.message_id,
            "query": query,
            "filters": result.filters,
        }
        abstain = should_abstain(result, settings)
        trace.search(result, [] if abstain else passages)
        trace.decision(relevance(result), result.reranked, abstain)

        def done(
            answer: str,
            abstained: bool,
            shown: list[dict],
            cited: list[Citation],
            truncated: bool = False,
        ) -> Event:
            """Store the finished message, its citations and its trace; the event that ends
            the stream."""
            timings["total_ms"] = _ms(started)
            outcome = "abstained" if abstained else "truncated" if truncated else "answered"
            store.finish(
                turn.message_id,
                status="done",
                content=answer,
                abstained=abstained,
                outcome=outcome,
                relevance=best,
                query=query,
                retrieved=shown,
                timings=timings,
                citations=cited,
                trace=trace.finish(outcome, timings),
            )
            record_answer(outcome)
            return Event(
                "done",
                {
                    **base,
                    "answer": answer,
                    "abstained": abstained,
                    "citations": [citation_json(c, shown) for c in cited],
                    "passages": shown,
                    "timings": timings,
                    "truncated": truncated,
                },
            )

        if abstain:
            closest = [passage_json(i, h) for i, h in enumerate(result.hits[:CLOSEST_SHOWN], 1)]
            yield Event("retrieval", {**base, "passages": closest})
            event = done(NOT_COVERED, True, closest, [])
            finished = True
            yield event
            return
        yield Event("retrieval", {**base, "passages": shown})

        messages = prompts.answer_messages(question, passages)
        t = time.perf_counter()
        llm = LLMClient(settings)
        trace.prompt(llm.request_body(messages, settings.answer_max_tokens, stream=True))
        try:
            async with aclosing(
                llm.stream(messages, max_tokens=settings.answer_max_tokens)
            ) as tokens:
                async for text in tokens:
                    if not content:
                        timings["ttft_ms"] = _ms(started)
                    content.append(text)
                    yield Event("token", {"text": text})
        finally:
            trace.llm(llm.stats, llm.finish_reason)
        timings["llm_ms"] = _ms(t)
        raw = "".join(content).strip()
        if not raw:
            raise LLMError("the LLM returned an empty answer", "bad_response")
        truncated = llm.finish_reason == "length"
        declined = is_decline(raw)
        citations: list[Citation] = []
        cleaned = raw
        if not declined:
            cleaned, citations = await asyncio.to_thread(
                check_citations, raw, passages, embedder, settings.citation_support_threshold
            )
        trace.citations(citations, declined)
        if truncated:
            cleaned += TRUNCATED
        event = done(cleaned, declined, shown, citations, truncated)
        finished = True
        yield event
    except LLMError as err:
        timings["total_ms"] = _ms(started)
        store.finish(
            turn.message_id,
            status="error",
            content="".join(content),
            error=str(err),
            outcome="error",
            relevance=best,
            timings=timings,
            trace=trace.finish("error", timings, str(err)),
        )
        record_answer("error")
        finished = True
        yield Event("error", {"message": str(err), "kind": err.kind})
    finally:
        if not finished:  # stopped: the reader went away, or stop was pressed
            log.info("answer %s stopped after %d tokens", turn.message_id, len(content))
            timings["total_ms"] = _ms(started)
            store.finish(
                turn.message_id,
                status="stopped",
                content="".join(content),
                outcome="stopped",
                relevance=best,
                timings=timings,
                trace=trace.finish("stopped", timings),
            )
            record_answer("stopped")


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


async def collect(events: AsyncIterator[Event]) -> dict[str, Any]:
    """The final result of an answer stream (for the JSON API, the CLI and the evals)."""
    result: dict[str, Any] = {}
    async for event in events:
        if event.kind == "retrieval" or event.kind == "done":
            result.update(event.data)
        elif event.kind == "error":
            result.update({"error": event.data["message"], "error_kind": event.data["kind"]})
    return result
