"""PDF with a text layer, through pdfium (pypdfium2, Apache-2.0/BSD): text per page, split
into paragraphs; lines joined and words broken over lines mended."""

from __future__ import annotations

import re

from app.ingest.structure import Block, Limits, Parsed, ParseError, clean

_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


def _paragraphs(page_text: str) -> list[str]:
    text = page_text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HYPHEN_BREAK.sub(r"\1\2", text)
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in para.split("\n") if line.strip()]
        if lines:
            out.append(clean(" ".join(lines)))
    return out


def parse(data: bytes, limits: Limits) -> Parsed:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        message = str(err).lower()
        if "password" in message:
            raise ParseError("the PDF is encrypted with a password") from err
        raise ParseError(f"not a readable PDF ({err})") from err
    try:
        blocks: list[Block] = []
        page_count = len(pdf)
        if page_count > limits.max_pages:
            raise ParseError(
                f"the PDF has {page_count:,} pages; the limit is {limits.max_pages:,} "
                "(MAX_PDF_PAGES)"
            )
        chars = 0
        for index in range(page_count):
            page = pdf[index]
            textpage = page.get_textpage()
            try:
                for para in _paragraphs(textpage.get_text_bounded()):
                    blocks.append(Block(para, page=index + 1))
                    chars += len(para)
                limits.check_chars(chars)
            finally:
                textpage.close()
                page.close()
        title = clean(pdf.get_metadata_value("Title") or "") or None
    except pdfium.PdfiumError as err:
        raise ParseError(f"not a readable PDF ({err})") from err
    finally:
        pdf.close()
    if not blocks:
        raise ParseError(f"no extractable text (scanned?) in {page_count} page(s)")
    return Parsed(blocks, title=title, page_count=page_count)
