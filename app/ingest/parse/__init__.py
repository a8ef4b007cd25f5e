"""One parser per format; `parse()` picks by the detected content type."""

from __future__ import annotations

from app.ingest import detect
from app.ingest.structure import Limits, Parsed, ParseError


def parse(content_type: str, data: bytes, filename: str, limits: Limits) -> Parsed:
    from app.ingest.parse import docx, html, markdown, pdf, text

    parsers = {
        detect.PDF: lambda data: pdf.parse(data, limits),
        detect.DOCX: docx.parse,
        detect.HTML: html.parse,
        detect.MARKDOWN: markdown.parse,
        detect.TEXT: text.parse,
    }
    if content_type not in parsers:
        raise ParseError(f"unsupported type {content_type}")
    parsed = parsers[content_type](data)
    limits.check_chars(sum(len(b.text) for b in parsed.blocks))
    if not any(b.text.strip() for b in parsed.blocks):
        raise ParseError("no text found in the file")
    return parsed
