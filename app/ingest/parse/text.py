"""Plain text: the encoding detected, paragraphs split on blank lines."""

from __future__ import annotations

import re

from app.ingest.structure import Block, Parsed, ParseError, clean


def decode(data: bytes) -> str:
    """UTF-8 (with or without BOM) and UTF-16 by their marks; anything else detected."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise ParseError("the text encoding could not be detected")
    return str(best)


def paragraphs(text: str) -> list[str]:
    return [p for p in (clean(p) for p in re.split(r"\n\s*\n", text)) if p]


def parse(data: bytes) -> Parsed:
    return Parsed([Block(p) for p in paragraphs(decode(data))])
