"""Plain text: the encoding detected, paragraphs split on blank lines."""

from __future__ import annotations

import codecs
import re
import unicodedata

from app.ingest.structure import Block, Parsed, ParseError, clean

_BOMS = (
    # UTF-32 first: its little-endian mark begins with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
ENCODING_SAMPLE_CHARS = 64 * 1024
_WORD = re.compile(r"[^\W\d_]+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def _symbol_inside_word(c: str) -> bool:
    """A symbol, digit-like sign or inverted mark that real text never puts between two
    letters, as cp1252 does with cp1250's and cp1251's letters ('Za¿ó³æ' for 'Zażółć')."""
    if c.isascii() or c.isalpha() or c == "\u00b4":  # ´ stands in for an apostrophe
        return False
    return unicodedata.category(c)[0] in "SN" or c in "\u00bf\u00a1\u00a7\u00b6"


def looks_western(text: str) -> bool:
    """Whether `text`, read as cp1252, looks like Western European text rather than another
    single-byte encoding misread: Cyrillic (cp1251) or Greek (cp1253) reads as words made only
    of accented letters ('Ïðèâåò'), Central European (cp1250) puts symbols inside words."""
    if _CONTROL.search(text):
        return False
    for i in range(1, len(text) - 1):
        if _symbol_inside_word(text[i]) and text[i - 1].isalpha() and text[i + 1].isalpha():
            return False
    accented = [w for w in _WORD.findall(text) if len(w) > 1 and not w.isascii()]
    # Western words mix accented letters with plain ones ("café", "Grüße"); a word made only
    # of accented letters is rare (Icelandic "þú"), so most of them being so is not Western.
    only_accented = sum(1 for w in accented if not any(c.isascii() for c in w))
    return only_accented * 2 <= len(accented)


def decode(data: bytes) -> str:
    """By its byte-order mark (UTF-8/16/32), else strict UTF-8, else cp1252 (a superset of
    Latin-1's printable characters) when it reads as Western European text, else the encoding
    charset_normalizer detects (Shift-JIS, cp1251 Cyrillic, ...)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        western: str | None = data.decode("cp1252")
    except UnicodeDecodeError:  # a byte cp1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d)
        western = None
    # A sample decides: the check walks characters in Python, and a file is one encoding.
    if western is not None and looks_western(western[:ENCODING_SAMPLE_CHARS]):
        return western
    # charset_normalizer guesses badly on short Western text (cp1250's "crčme" for "crème",
    # cp1006's "ﻓ" for "à"), which is why it only comes after cp1252.
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        return str(best)
    if western is not None:
        return western
    raise ParseError("the text encoding could not be detected")


def paragraphs(text: str) -> list[str]:
    return [p for p in (clean(p) for p in re.split(r"\n\s*\n", text)) if p]


def parse(data: bytes) -> Parsed:
    return Parsed([Block(p) for p in paragraphs(decode(data))])
