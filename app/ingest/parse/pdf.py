"""PDF through pdfium (pypdfium2, Apache-2.0/BSD): text per page, split into paragraphs;
lines joined and words broken over lines mended. A page without a text layer (a scan, or
one whose text layer holds fewer than OCR_BELOW_CHARS characters, such as a page number
stamped on a scan) that holds an image is rendered and read by OCR instead, within the
document's OCR limits; pages keep their numbers either way."""

from __future__ import annotations

import functools
import re
from typing import Any

from app.ingest import ocr
from app.ingest.structure import Block, Limits, Parsed, ParseError, clean

_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")
OCR_BELOW_CHARS = 16  # non-space characters in a page's text layer


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
        reader = ocr.PageReader(limits)
        for index in range(page_count):
            page = pdf[index]
            textpage = page.get_textpage()
            try:
                paras = _paragraphs(textpage.get_text_bounded())
                if _needs_ocr(page, paras):
                    paras = reader(index + 1, functools.partial(_render, page)) or paras
                for para in paras:
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
        if reader.attempted:
            raise reader.nothing_read()
        notes = reader.notes() or ["they hold no text or images"]
        raise ParseError(f"no extractable text in {page_count} page(s): " + "; ".join(notes))
    return Parsed(
        blocks, title=title, page_count=page_count, ocr=reader.read_pages, notes=reader.notes()
    )


def _needs_ocr(page: Any, paras: list[str]) -> bool:
    """Too little text in the text layer, and an image on the page (a scan) to read."""
    import pypdfium2.raw as pdfium_c

    if sum(len(p.replace(" ", "")) for p in paras) >= OCR_BELOW_CHARS:
        return False
    images = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2)
    return any(True for _ in images)


def _render(page: Any) -> Any:
    """The page as an image whose longer side is `ocr.LONG_SIDE` pixels (at most 300 dpi,
    and never more than `ocr.MAX_IMAGE_PIXELS`, whatever size the page declares)."""
    width, height = page.get_size()  # points, 1/72 inch
    longest = max(width, height, 1.0)
    scale = min(300 / 72, ocr.LONG_SIDE / longest)
    scale = min(scale, (ocr.MAX_IMAGE_PIXELS / max(width * height, 1.0)) ** 0.5)
    return page.render(scale=scale, grayscale=True).to_pil()
