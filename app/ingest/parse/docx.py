"""DOCX: paragraphs in order, headings from their styles, tables as rows of cells."""

from __future__ import annotations

import io
import re
import zipfile

from app.ingest.detect import ZIP_MAX_UNCOMPRESSED, ZIP_MAX_XML_ENTRY, ZIP_METHODS
from app.ingest.structure import Block, Parsed, ParseError, clean

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)


def _expand_within_limit(data: bytes) -> None:
    """Inflate every entry as a stream, counting the bytes that really come out (declared
    sizes can lie), before python-docx reads any: only stored and deflate entries, none past
    its limit, all of them under ZIP_MAX_UNCOMPRESSED together."""
    budget = ZIP_MAX_UNCOMPRESSED
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                if info.compress_type not in ZIP_METHODS:
                    raise ParseError(
                        f"DOCX entry {info.filename!r} uses compression method "
                        f"{info.compress_type}; only stored and deflate are accepted"
                    )
                limit = ZIP_MAX_XML_ENTRY if info.filename.endswith(".xml") else budget
                with zf.open(info) as f:
                    size = 0
                    while chunk := f.read(1 << 20):
                        size += len(chunk)
                        if size > limit or size > budget:
                            limit_mib = min(limit, budget) // 2**20
                            raise ParseError(
                                f"DOCX entry {info.filename!r} expands past {limit_mib} MiB: "
                                "refused as a zip bomb"
                            )
                    budget -= size
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
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
