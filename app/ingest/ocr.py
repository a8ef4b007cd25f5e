"""OCR: text read from the pixels of scans and photos, in the worker only.

The engine is RapidOCR (`rapidocr-onnxruntime`, Apache-2.0) on onnxruntime: PP-OCRv4's
text detection and recognition models and PP-OCR's orientation classifier (Apache-2.0),
which ship inside its wheel, so nothing is downloaded and `make run` needs nothing more. It
loads once per process, lazily, on the first page that needs it, with this process's share
of the cores (`app.runtime.model_threads`).

`read()` takes one page as a Pillow image and returns its paragraphs (lines grouped by the
gaps between them) and the recognised characters' mean confidence. A page may take at most
OCR_PAGE_TIME_LIMIT_S (`page_time_limit`); the parsers (`parse.pdf`, `parse.image`) count
pages against OCR_MAX_PAGES and say which were left unread."""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.config import get_settings
from app.ingest.structure import Limits, OcrPage, ParseError, alarm
from app.runtime import model_threads

log = logging.getLogger(__name__)

# A page is rendered (PDF) or scaled (image) to this longest side before OCR: the detector
# works at up to 2,000 pixels and would shrink anything larger itself.
LONG_SIDE = 2000
# The most pixels an image may declare before it is decoded (Pillow's MAX_IMAGE_PIXELS is
# set to this): an A4 page at 600 dpi has 35 million; a 1 KB PNG can declare billions.
MAX_IMAGE_PIXELS = 60_000_000
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
# PP-OCR's recogniser sometimes drops the narrow spaces of a long English line
# ("untilthewholefloorhadbeenrecorded"), which would hide its words from BM25. A run of
# letters that is no English word is split where English word frequencies (wordninja's,
# from Wikipedia) say it breaks, if every piece is among the 50,000 commonest English words
# (and three letters or more, or a common short word). Names stay whole ("Okonkwo" would be
# "Ok on kw o"), and so do words with capitals inside ("PostgreSQL") and other languages.
_LETTERS = re.compile(r"[A-Za-z][a-z]{5,}")
_COMMON = 50_000
_SHORT_WORDS = frozenset(
    [
        "a",
        "i",
        "am",
        "an",
        "as",
        "at",
        "be",
        "by",
        "do",
        "go",
        "he",
        "if",
        "in",
        "is",
        "it",
        "me",
        "my",
        "no",
        "of",
        "on",
        "or",
        "so",
        "to",
        "up",
        "us",
        "we",
    ]
)

_lock = threading.Lock()
_engine: Any = None


class PageTimeout(Exception):
    """One page took longer than OCR_PAGE_TIME_LIMIT_S."""


@dataclass
class PageText:
    paragraphs: list[str]
    confidence: float  # mean over the recognised characters, 0-1
    chars: int


@dataclass
class _Line:
    text: str
    confidence: float
    top: float
    bottom: float
    left: float

    @property
    def height(self) -> float:
        return max(1.0, self.bottom - self.top)


def engine() -> Any:
    """The process's OCR engine, loaded on first use."""
    global _engine
    with _lock:
        if _engine is None:
            from rapidocr_onnxruntime import RapidOCR
            from rapidocr_onnxruntime.utils import infer_engine

            # onnxruntime's idle threads spin by default: two pool processes OCR'ing at once
            # on two cores then spend most of their time spinning (a 2 s photo took 50 s).
            options = infer_engine.OrtInferSession._init_sess_opts

            def without_spinning(config: dict[str, Any]) -> Any:
                opts = options(config)
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
                return opts

            infer_engine.OrtInferSession._init_sess_opts = staticmethod(without_spinning)
            started = time.perf_counter()
            threads = model_threads(get_settings())
            _engine = RapidOCR(
                intra_op_num_threads=threads, inter_op_num_threads=1, print_verbose=False
            )
            log.info(
                "OCR engine loaded in %.1f s (%d threads)", time.perf_counter() - started, threads
            )
        return _engine


def read(image: Any) -> PageText:
    """The text on one page (a Pillow image), in reading order."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB"))
    try:
        found, _ = engine()(pixels)
    except Exception as err:
        # RapidOCR wraps whatever interrupts onnxruntime (this page's time limit, the task's
        # soft limit, a stopping worker's signal) in its own error: raise the original.
        cause = err.__cause__
        if cause is not None and not type(cause).__module__.startswith("onnxruntime"):
            raise cause from None
        raise ParseError(f"OCR failed ({str(cause or err).strip().splitlines()[-1]})") from err
    lines = [
        _Line(
            text=mend_spaces(str(text).strip()),
            confidence=float(score),
            top=min(y for _, y in box),
            bottom=max(y for _, y in box),
            left=min(x for x, _ in box),
        )
        for box, text, score in (found or [])
        if str(text).strip()
    ]
    chars = sum(len(line.text) for line in lines)
    confidence = sum(line.confidence * len(line.text) for line in lines) / chars if chars else 0.0
    return PageText(paragraphs(lines), confidence, chars)


def mend_spaces(text: str) -> str:
    """`text` with the spaces OCR dropped between English words put back."""
    import math

    import wordninja

    costs: dict[str, float] = wordninja.DEFAULT_LANGUAGE_MODEL._wordcost
    common = math.log((_COMMON + 1) * math.log(len(costs)))  # the cost of the 50,000th word

    def plausible(piece: str) -> bool:
        word = piece.lower()
        return costs.get(word, math.inf) <= common and (len(word) > 2 or word in _SHORT_WORDS)

    def split(match: re.Match[str]) -> str:
        run = match.group(0)
        if run.lower() in costs:
            return run
        pieces = wordninja.split(run)
        if len(pieces) < 2 or "".join(pieces) != run or not all(map(plausible, pieces)):
            return run
        return " ".join(pieces)

    return _LETTERS.sub(split, text)


def paragraphs(lines: list[_Line]) -> list[str]:
    """Lines side by side are joined into one; a gap wider than most of a line's height
    between two lines starts a new paragraph; words broken over lines are mended."""
    if not lines:
        return []
    lines = sorted(lines, key=lambda line: (line.top, line.left))
    rows: list[list[_Line]] = []
    for line in lines:
        last = rows[-1][-1] if rows else None
        if last is not None and abs(line.top - last.top) < 0.5 * min(line.height, last.height):
            rows[-1].append(line)
        else:
            rows.append([line])
    height = statistics.median(line.height for line in lines)
    out: list[list[str]] = []
    previous_bottom: float | None = None
    for row in rows:
        row.sort(key=lambda line: line.left)
        top = min(line.top for line in row)
        if previous_bottom is None or top - previous_bottom > 0.8 * height:
            out.append([])
        out[-1].append(" ".join(line.text for line in row))
        previous_bottom = max(line.bottom for line in row)
    return [
        " ".join(_HYPHEN_BREAK.sub(r"\1\2", "\n".join(para)).split("\n")).strip() for para in out
    ]


def page_time_limit(seconds: float) -> contextlib.AbstractContextManager[None]:
    """Raise PageTimeout in the block once `seconds` have passed. The document's reading
    budget (`structure.time_budget`) is paused meanwhile and goes on afterwards: OCR has its
    own limits (per page, and OCR_MAX_PAGES pages). onnxruntime is interrupted when it
    returns to Python (between the detector, each batch of lines, the recogniser), within
    about a second."""
    return alarm(
        seconds, lambda: PageTimeout(f"took longer than {seconds:g} s (OCR_PAGE_TIME_LIMIT_S)")
    )


NOTHING_READ = "no text found (OCR read nothing)"


@dataclass
class PageReader:
    """OCR for the pages of one document, within its limits: at most `limits.ocr_pages`
    pages, each in at most `limits.ocr_page_s` seconds (rendering included). Pages past
    either are left unread and named in `notes()`."""

    limits: Limits
    read_pages: dict[int, OcrPage] = field(default_factory=dict)
    attempted: int = 0
    over_budget: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)

    def __call__(self, page: int, render: Callable[[], Any]) -> list[str]:
        """The paragraphs OCR reads on `page` (1-based); `render` makes its image."""
        if self.attempted >= self.limits.ocr_pages:
            self.over_budget.append(page)
            return []
        self.attempted += 1
        started = time.perf_counter()
        try:
            with page_time_limit(self.limits.ocr_page_s):
                text = read(render())
        except PageTimeout:
            self.timed_out.append(page)
            return []
        log.debug("OCR read page %d in %.2f s", page, time.perf_counter() - started)
        if text.chars:
            self.read_pages[page] = OcrPage(round(text.confidence, 4), text.chars)
        return text.paragraphs

    def notes(self) -> list[str]:
        out = []
        if self.over_budget:
            limit = self.limits.ocr_pages
            out.append(pages_note(self.over_budget, f"the limit is {limit} (OCR_MAX_PAGES)"))
        if self.timed_out:
            seconds = self.limits.ocr_page_s
            why = f"each took longer than {seconds:g} s (OCR_PAGE_TIME_LIMIT_S)"
            out.append(pages_note(self.timed_out, why))
        return out

    def nothing_read(self) -> ParseError:
        """The error for a document in which OCR found no text at all."""
        return ParseError("; ".join([NOTHING_READ, *self.notes()]))


def pages_note(pages: list[int], why: str) -> str:
    """'pages 3-5, 9 were not read: why' for the document's notes."""
    spans: list[list[int]] = []
    for page in sorted(pages):
        if spans and page == spans[-1][1] + 1:
            spans[-1][1] = page
        else:
            spans.append([page, page])
    named = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    return f"{'page' if len(pages) == 1 else 'pages'} {named} not read by OCR: {why}"
