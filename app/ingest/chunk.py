"""Chunking that follows structure: a heading starts a new chunk; paragraphs are packed to a
token budget measured with the embedding model's own tokenizer; a paragraph that does not
fit is split into sentences, and a sentence that does not fit into word windows. Chunks
within a section overlap by whole sentences up to the overlap budget.

Every chunk is an exact slice of the document text (`text[start:end]`), so a citation can
show and highlight the passage later. The budget leaves room for the title and heading
prefix that is embedded with the chunk, so the whole fits the model's window."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from app.ingest.structure import Assembled, Block

CountTokens = Callable[[list[str]], list[int]]
MIN_BUDGET = 32

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


@dataclass(frozen=True)
class ChunkSpec:
    ordinal: int
    start: int
    end: int
    text: str
    heading_path: tuple[str, ...]
    page_start: int | None
    page_end: int | None


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    page: int | None


def context_prefix(title: str | None, heading_path: tuple[str, ...]) -> str:
    """What is embedded (and indexed for BM25) before a chunk's text: `Title > H1 > H2`."""
    parts = [p for p in (title, *heading_path) if p]
    deduped = [p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1]]
    return " > ".join(deduped)


def _spans(text: str, start: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Split text[...] at the pattern's matches, keeping each piece's absolute offsets."""
    out = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append((start + pos, start + m.start()))
        pos = m.end()
    if pos < len(text):
        out.append((start + pos, start + len(text)))
    return [(a, b) for a, b in out if text[a - start : b - start].strip()]


def _words(doc: str, start: int, end: int, budget: int, count: CountTokens) -> list[_Unit]:
    """Windows of whole words of at most `budget` tokens (for sentences that are too long)."""
    spans = _spans(doc[start:end], start, re.compile(r"\s+"))
    counts = count([doc[a:b] for a, b in spans])
    units: list[_Unit] = []
    win_start, win_tokens, win_end = spans[0][0], 0, spans[0][0]
    for (a, b), n in zip(spans, counts, strict=True):
        if win_tokens and win_tokens + n > budget:
            units.append(_Unit(win_start, win_end, win_tokens, None))
            win_start, win_tokens = a, 0
        win_tokens += n
        win_end = b
    units.append(_Unit(win_start, win_end, win_tokens, None))
    return units


def _units(
    doc: str, block: Block, start: int, end: int, tokens: int, budget: int, count: CountTokens
) -> list[_Unit]:
    if tokens <= budget:
        return [_Unit(start, end, tokens, block.page)]
    pattern = re.compile(r"\n") if block.kind == "table" else _SENTENCE_END
    pieces = _spans(doc[start:end], start, pattern)
    counts = count([doc[a:b] for a, b in pieces])
    units: list[_Unit] = []
    for (a, b), n in zip(pieces, counts, strict=True):
        if n <= budget:
            units.append(_Unit(a, b, n, block.page))
        else:
            units.extend(
                _Unit(u.start, u.end, u.tokens, block.page)
                for u in _words(doc, a, b, budget, count)
            )
    return units


def chunk_document(
    assembled: Assembled,
    title: str | None,
    count: CountTokens,
    *,
    chunk_tokens: int,
    overlap_tokens: int,
    max_sequence_tokens: int,
) -> list[ChunkSpec]:
    doc = assembled.text
    blocks = [p for p in assembled.placed if p.block.kind != "heading"]
    block_tokens = dict(
        zip((id(p) for p in blocks), count([p.block.text for p in blocks]), strict=True)
    )

    # Sections: runs of blocks under one heading path.
    sections: list[tuple[tuple[str, ...], list]] = []
    path: list[tuple[int, str]] = []
    for placed in assembled.placed:
        if placed.block.kind == "heading":
            level = placed.block.level or 1
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, placed.block.text)]
            sections.append((tuple(t for _, t in path), []))
        else:
            if not sections:
                sections.append(((), []))
            sections[-1][1].append(placed)

    prefixes = [context_prefix(title, heading_path) for heading_path, _ in sections]
    prefix_tokens = count(prefixes) if prefixes else []
    chunks: list[ChunkSpec] = []
    for (heading_path, placed_blocks), extra in zip(sections, prefix_tokens, strict=True):
        if not placed_blocks:
            continue
        budget = max(MIN_BUDGET, min(chunk_tokens, max_sequence_tokens - 3 - extra))
        overlap = min(overlap_tokens, budget // 4)
        units: list[_Unit] = []
        for p in placed_blocks:
            units.extend(_units(doc, p.block, p.start, p.end, block_tokens[id(p)], budget, count))
        current: list[_Unit] = []
        total = 0
        for unit in units:
            if current and total + unit.tokens > budget:
                chunks.append(_make(doc, len(chunks), current, heading_path))
                carry: list[_Unit] = []
                carried = 0
                for prev in reversed(current):
                    if (
                        carried + prev.tokens > overlap
                        or carried + prev.tokens + unit.tokens > budget
                    ):
                        break
                    carry.insert(0, prev)
                    carried += prev.tokens
                current, total = carry, carried
            current.append(unit)
            total += unit.tokens
        if current:
            chunks.append(_make(doc, len(chunks), current, heading_path))
    return chunks


def _make(doc: str, ordinal: int, units: list[_Unit], heading_path: tuple[str, ...]) -> ChunkSpec:
    start, end = units[0].start, units[-1].end
    pages = [u.page for u in units if u.page is not None]
    return ChunkSpec(
        ordinal=ordinal,
        start=start,
        end=end,
        text=doc[start:end],
        heading_path=heading_path,
        page_start=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
    )


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where the sentences of `text` are (the splitter the chunker uses)."""
    return _spans(text, 0, _SENTENCE_END)
