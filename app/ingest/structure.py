"""The shape every parser returns: blocks of text (headings, paragraphs, tables) with page
numbers, and how they are joined into the document's stored text with character offsets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table"]
SEPARATOR = "\n\n"
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u3000]+")


class ParseError(Exception):
    """The file cannot be read; the message is shown to the person who uploaded it."""


@dataclass
class Block:
    text: str
    kind: BlockKind = "paragraph"
    level: int = 0  # 1-6 for headings
    page: int | None = None  # 1-based, for PDFs


@dataclass
class Parsed:
    blocks: list[Block]
    title: str | None = None
    page_count: int | None = None


@dataclass
class Placed:
    """A block placed in the document text: `text[start:end] == block.text`."""

    block: Block
    start: int
    end: int


@dataclass
class Assembled:
    text: str
    placed: list[Placed] = field(default_factory=list)


def clean(text: str) -> str:
    """One space for runs of spaces, no trailing spaces, at most one blank line."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


def assemble(parsed: Parsed) -> Assembled:
    """Join the non-empty blocks with blank lines, remembering where each one sits."""
    parts: list[str] = []
    placed: list[Placed] = []
    pos = 0
    for block in parsed.blocks:
        text = block.text.strip()
        if not text:
            continue
        if parts:
            parts.append(SEPARATOR)
            pos += len(SEPARATOR)
        block.text = text
        placed.append(Placed(block, pos, pos + len(text)))
        parts.append(text)
        pos += len(text)
    return Assembled("".join(parts), placed)
