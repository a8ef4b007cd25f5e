"""One parser per format; `parse()` picks by the detected content type."""

from __future__ import annotations

from collections.abc import Callable

from app.ingest import detect
from app.ingest.structure import Limits, Parsed, ParseError


def parse(
    content_type: str, data: bytes, filename: str, limits: Limits, source_url: str | None = None
) -> Parsed:
    """`source_url`: the page a fetched web page came from (its main content is read)."""
    from app.ingest.parse import docx, html, image, markdown, pdf, text

    parsers: dict[str, Callable[[bytes], Parsed]] = {
        detect.PDF: lambda data: pdf.parse(data, limits),
        detect.DOCX: docx.parse,
        detect.HTML: html.parse,
        detect.MARKDOWN: markdown.parse,
        detect.TEXT: text.parse,
    }
    if content_type in detect.IMAGES:  # scans and photos, read by OCR
        parsed = image.parse(data, content_type, limits)
    elif content_type == detect.HTML and source_url:
        from app.web_pages.extract import parse_page

        parsed = parse_page(data, source_url)
    elif content_type in parsers:
        parsed = parsers[content_type](data)
    else:
        raise ParseError(f"unsupported type {content_type}")
    limits.check_chars(sum(len(b.text) for b in parsed.blocks))
    if not any(b.text.strip() for b in parsed.blocks):
        raise ParseError("no text found in the file")
    return parsed
