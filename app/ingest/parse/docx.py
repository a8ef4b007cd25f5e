"""DOCX: paragraphs in order, headings from their styles, tables as rows of cells."""

from __future__ import annotations

import io
import re
import zipfile

from app.ingest.detect import ZIP_MAX_UNCOMPRESSED
from app.ingest.structure import Block, Parsed, ParseError, clean

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)


def _expand_within_limit(data: bytes) -> None:
    """Decompress every entry with a running cap: an archive whose declared sizes lie is
    stopped at the limit instead of filling memory."""
    budget = ZIP_MAX_UNCOMPRESSED
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    while chunk := f.read(1 << 20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise ParseError("DOCX archive expands past the limit (zip bomb)")
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ParseError(f"corrupt DOCX archive ({err})") from err


def _heading_level(style_name: str | None) -> int:
    if not style_name:
        return 0
    if style_name.lower() == "title":
        return 1
    m = _HEADING_STYLE.match(style_name.strip())
    return min(int(m.group(1)), 6) if m else 0


def parse(data: bytes) -> Parsed:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    _expand_within_limit(data)
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ParseError(f"not a readable DOCX file ({err})") from err
    blocks: list[Block] = []
    body = document.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(child, document)
            text = clean(paragraph.text)
            if not text:
                continue
            style = paragraph.style.name if paragraph.style is not None else None
            level = _heading_level(style)
            blocks.append(Block(text, "heading" if level else "paragraph", level))
        elif tag == "tbl":
            rows = []
            for row in Table(child, document).rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = clean(cell.text)
                    if not cells or cells[-1] != value:  # merged cells repeat
                        cells.append(value)
                if any(cells):
                    rows.append(" | ".join(cells))
            if rows:
                blocks.append(Block("\n".join(rows), "table"))
    title = clean(document.core_properties.title or "") or next(
        (b.text for b in blocks if b.kind == "heading"), None
    )
    return Parsed(blocks, title=title or None)
