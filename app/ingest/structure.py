"""The shape every parser returns: blocks of text (headings, paragraphs, tables) with page
numbers, and how they are joined into the document's stored text with character offsets."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

BlockKind = Literal["heading", "paragraph", "table"]
SEPARATOR = "\n\n"
_SPACES = re.compile(r"[ \t\f\v\u00a0\u2000-\u200b\u3000]+")


class ParseError(Exception):
    """The file cannot be read; the message is shown to the person who uploaded it."""


@dataclass(frozen=True)
class Limits:
    """How much one document may hold (MAX_PDF_PAGES, MAX_TEXT_CHARS): a small file can
    describe a million pages or gigabytes of text, and must cost one failed document. OCR
    reads at most `ocr_pages` pages of a document (OCR_MAX_PAGES; 0 turns it off), each in
    at most `ocr_page_s` seconds (OCR_PAGE_TIME_LIMIT_S)."""

    max_pages: int
    max_chars: int
    ocr_pages: int = 100
    ocr_page_s: float = 60.0

    def check_chars(self, chars: int) -> None:
        if chars > self.max_chars:
            raise ParseError(
                f"more than {self.max_chars:,} characters of text (MAX_TEXT_CHARS): "
                "split the document"
            )


@dataclass
class Block:
    text: str
    kind: BlockKind = "paragraph"
    level: int = 0  # 1-6 for headings
    page: int | None = None  # 1-based, for PDFs


@dataclass(frozen=True)
class OcrPage:
    """What OCR recognised on one page: its mean confidence (0-1) over `chars` characters."""

    confidence: float
    chars: int


@dataclass
class Parsed:
    blocks: list[Block]
    title: str | None = None
    page_count: int | None = None
    ocr: dict[int, OcrPage] = field(default_factory=dict)  # page number -> what OCR read
    notes: list[str] = field(default_factory=list)  # pages left unread, and why

    @property
    def ocr_confidence(self) -> float | None:
        """The mean confidence of the text read by OCR, weighted by characters."""
        chars = sum(p.chars for p in self.ocr.values())
        if not chars:
            return None
        return sum(p.confidence * p.chars for p in self.ocr.values()) / chars


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


@contextlib.contextmanager
def alarm(seconds: float, error: Callable[[], Exception]) -> Iterator[None]:
    """Raise `error()` in the block once `seconds` have passed. Python code is interrupted
    between bytecodes, C code (a parser's inner loop, onnxruntime) when it returns to Python.
    An alarm already set outside is paused meanwhile and goes on afterwards. In a process's
    main thread only (signals), else no limit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)

    def expired(signum: int, frame: object) -> None:
        raise error()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, outer_left)


def time_budget(seconds: float) -> contextlib.AbstractContextManager[None]:
    """Raise ParseError in the block once `seconds` have passed (DOCUMENT_TIME_LIMIT_S): a
    file whose structure makes a parser crawl costs one failed document, not the worker's
    whole task."""
    return alarm(
        seconds,
        lambda: ParseError(f"reading it took longer than {seconds:.0f} s (DOCUMENT_TIME_LIMIT_S)"),
    )


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
