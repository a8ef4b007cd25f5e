"""Prompts: the numbered passages with their titles and pages, the instruction to answer only
from them and cite [n] after each claim, fitted to the LLM's context window by tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.retrieval.search import Hit

NOT_FOUND = "I cannot find the answer in the documents."
NOT_COVERED = "The documents do not cover this."

SYSTEM = (
    "You answer questions using only the numbered passages you are given. "
    "Answer briefly. After each claim, cite the passage it comes from with its number in "
    "square brackets, like [1]. If the passages do not contain the answer, reply exactly: "
    f"{NOT_FOUND}"
)

REWRITE = (
    "Rewrite the last question of this conversation as one standalone question that can be "
    "understood without the conversation. Reply with the question only."
)


@dataclass(frozen=True)
class Passage:
    n: int  # the number the model cites
    hit: Hit

    def header(self) -> str:
        label = self.hit.title or self.hit.document
        return f"[{self.n}] {label}" + (
            f", page {self.hit.page_start}" if self.hit.page_start else ""
        )


def fit_passages(
    hits: Sequence[Hit],
    question: str,
    count_tokens: Callable[[list[str]], list[int]],
    *,
    context_tokens: int,
    answer_tokens: int,
    limit: int,
) -> list[Passage]:
    """The best passages, in rank order, that fit the window beside the instructions, the
    question and room for the answer. Counted with the embedding model's tokenizer plus a
    quarter for safety, since the LLM's own tokenizer is on the server."""
    fixed = count_tokens([SYSTEM, question])
    budget = context_tokens - answer_tokens - int(sum(fixed) * 1.25) - 64
    passages: list[Passage] = []
    texts = [h.text for h in hits[:limit]]
    for hit, n in zip(hits[:limit], count_tokens(texts), strict=True):
        cost = int(n * 1.25) + 16
        if cost > budget:
            break
        budget -= cost
        passages.append(Passage(len(passages) + 1, hit))
    return passages


def answer_messages(question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
    blocks = "\n\n".join(f"{p.header()}\n{p.hit.text}" for p in passages)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Passages:\n\n{blocks}\n\nQuestion: {question}"},
    ]


def rewrite_messages(history: Sequence[tuple[str, str]], question: str) -> list[dict[str, str]]:
    turns = "\n".join(f"Q: {q}\nA: {a}" for q, a in history[-3:])
    return [
        {"role": "system", "content": REWRITE},
        {"role": "user", "content": f"{turns}\nQ: {question}\n\nStandalone question:"},
    ]
