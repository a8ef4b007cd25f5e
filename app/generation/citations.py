"""Citations that are checked, not trusted.

The model's `[n]` markers are parsed and numbers that point at no passage are dropped. Then
every sentence of the answer is compared, with the embedding model, against the sentences of
the passages (each sentence, and each pair of adjacent ones): the passage it cites first, then
all of them. A sentence is supported when its
best match reaches the support threshold (CITATION_SUPPORT_THRESHOLD); it is then linked to
that passage, and to the sentence inside it that supports it, whether or not the model cited
it. A small model often cites nothing or cites wrongly; attribution still links what is
supported, and what is not is marked unsupported."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from app.generation.prompts import Passage
from app.ingest.chunk import sentence_spans
from app.ingest.embed import Embedder

MARKER = re.compile(r"\s*\[(\d+(?:\s*[,;]\s*\d+)*)\]")


@dataclass
class Citation:
    sentence: int  # the answer's sentence number, from 0
    text: str  # the sentence, without markers
    cited: list[int]  # the valid numbers the model wrote after it
    n: int | None  # the passage that supports it (None when unsupported)
    chunk_id: int | None
    score: float  # similarity of its best passage sentence
    supported: bool
    evidence: tuple[int, int] | None = field(default=None)  # span in that passage's text

    def to_dict(self) -> dict:
        return asdict(self)


def split_answer(answer: str, passages: int) -> tuple[str, list[tuple[str, list[int]]]]:
    """The answer with invalid markers dropped, and its sentences (markers removed) with the
    valid numbers cited in each. A marker opening a sentence belongs to the one before."""

    def keep_valid(m: re.Match[str]) -> str:
        numbers = [int(x) for x in re.split(r"[,;]", m.group(1))]
        valid = [x for x in numbers if 1 <= x <= passages]
        return f" [{', '.join(map(str, valid))}]" if valid else ""

    cleaned = MARKER.sub(keep_valid, answer).strip()
    sentences: list[tuple[str, list[int]]] = []
    for start, end in sentence_spans(cleaned):
        piece = cleaned[start:end]
        leading = re.match(r"^(\s*\[[\d,;\s]+\])+", piece)
        if leading and sentences:
            sentences[-1][1].extend(_numbers(leading.group(0)))
            piece = piece[leading.end() :]
        text = MARKER.sub("", piece).strip()
        if text:
            sentences.append((text, _numbers(piece)))
    return cleaned, sentences


def _numbers(text: str) -> list[int]:
    found = [int(x) for m in MARKER.finditer(text) for x in re.split(r"[,;]", m.group(1))]
    return list(dict.fromkeys(found))


def support_units(text: str) -> list[tuple[int, int]]:
    """Each sentence, and each pair of adjacent sentences (a claim often needs the sentence
    before, which names what "it" is)."""
    sentences = sentence_spans(text) or [(0, len(text))]
    pairs = [(a[0], b[1]) for a, b in itertools.pairwise(sentences)]
    return sentences + pairs


def check_citations(
    answer: str, passages: Sequence[Passage], embedder: Embedder, threshold: float
) -> tuple[str, list[Citation]]:
    cleaned, sentences = split_answer(answer, len(passages))
    if not sentences or not passages:
        return cleaned, [
            Citation(i, text, cited, None, None, 0.0, False)
            for i, (text, cited) in enumerate(sentences)
        ]
    spans = [support_units(p.hit.text) for p in passages]
    passage_sentences = [
        p.hit.text[a:b] for p, s in zip(passages, spans, strict=True) for a, b in s
    ]
    owner = np.repeat(np.arange(len(passages)), [len(s) for s in spans])
    vectors = embedder.encode([t for t, _ in sentences] + passage_sentences, kind="sentences")
    answer_vectors, passage_vectors = vectors[: len(sentences)], vectors[len(sentences) :]
    similarity = answer_vectors @ passage_vectors.T  # unit vectors: cosine
    flat_spans = [span for s in spans for span in s]
    citations = []
    for i, (text, cited) in enumerate(sentences):
        # Best sentence of each passage; the cited passage wins when it supports the claim.
        best_per_passage = {
            p: int(np.flatnonzero(owner == p)[np.argmax(similarity[i, owner == p])])
            for p in range(len(passages))
        }
        choice = None
        for n in cited:
            j = best_per_passage[n - 1]
            if similarity[i, j] >= threshold:
                choice = (n - 1, j)
                break
        if choice is None:
            j = int(np.argmax(similarity[i]))
            choice = (int(owner[j]), j)
        p, j = choice
        score = float(similarity[i, j])
        supported = score >= threshold
        citations.append(
            Citation(
                sentence=i,
                text=text,
                cited=cited,
                n=p + 1 if supported else None,
                chunk_id=passages[p].hit.chunk_id if supported else None,
                score=round(score, 4),
                supported=supported,
                evidence=flat_spans[j] if supported else None,
            )
        )
    return cleaned, citations
