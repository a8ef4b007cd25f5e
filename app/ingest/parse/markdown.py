"""Markdown: ATX (`# Title`) and setext headings give the structure; code fences are kept
whole; everything else is paragraphs as written."""

from __future__ import annotations

import re

from app.ingest.parse.text import decode
from app.ingest.structure import Block, Parsed, clean

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)


def parse(data: bytes) -> Parsed:
    text = _FRONT_MATTER.sub("", decode(data).replace("\r\n", "\n"))
    blocks: list[Block] = []
    para: list[str] = []
    fence: str | None = None

    def flush(raw: bool = False) -> None:
        if para:
            joined = "\n".join(para)
            blocks.append(Block(joined.strip("\n") if raw else clean(joined)))
            para.clear()

    for line in text.split("\n"):
        if fence is not None:
            para.append(line)
            if line.strip().startswith(fence):
                fence = None
                flush(raw=True)
            continue
        if m := _FENCE.match(line):
            flush()
            fence = m.group(1)
            para.append(line)
            continue
        if m := _ATX.match(line):
            flush()
            blocks.append(Block(m.group(2).strip(), "heading", len(m.group(1))))
            continue
        if (m := _SETEXT.match(line)) and len(para) == 1 and para[0].strip():
            blocks.append(Block(para[0].strip(), "heading", 1 if m.group(1)[0] == "=" else 2))
            para.clear()
            continue
        if not line.strip():
            flush()
            continue
        para.append(line)
    flush()
    title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return Parsed(blocks, title=title)
