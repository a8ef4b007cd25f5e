"""HTML: the main content (`<main>`, `<article>` or the body without navigation, headers,
footers and asides), headings kept, scripts and styles dropped, tables as rows of cells."""

from __future__ import annotations

import lxml.etree
import lxml.html

from app.ingest.structure import Block, Parsed, ParseError, clean

DROP = {
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "canvas",
    "iframe",
    "object",
    "embed",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "button",
    "select",
    "head",
    "input",
    "dialog",
}
BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "address",
    "details",
    "summary",
    "hr",
    "br",
    "center",
}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _main_root(doc: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    for xpath in ("//main", "//*[@role='main']", "//article"):
        found = doc.xpath(xpath)
        if found:
            return found[0]
    body = doc.find("body")
    return body if body is not None else doc


class _Walker:
    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.inline: list[str] = []

    def flush(self) -> None:
        text = clean(" ".join(self.inline))
        self.inline.clear()
        if text:
            self.blocks.append(Block(text))

    def table(self, el: lxml.html.HtmlElement) -> None:
        self.flush()
        rows = []
        for tr in el.iter("tr"):
            cells = [clean(c.text_content()) for c in tr if c.tag in ("td", "th")]
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            self.blocks.append(Block("\n".join(rows), "table"))

    def walk(self, el: lxml.html.HtmlElement) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in DROP or not tag:
            if el.tail:
                self.inline.append(el.tail)
            return
        if tag in HEADINGS:
            self.flush()
            text = clean(el.text_content())
            if text:
                self.blocks.append(Block(text, "heading", HEADINGS[tag]))
        elif tag == "table":
            self.table(el)
        elif tag == "pre":
            self.flush()
            text = el.text_content().strip("\n")
            if text.strip():
                self.blocks.append(Block(text))
        else:
            block = tag in BLOCKS
            if block:
                self.flush()
            if el.text:
                self.inline.append(el.text)
            for child in el:
                self.walk(child)
            if block:
                self.flush()
        if el.tail:
            self.inline.append(el.tail)


MAX_DEPTH = 256  # libxml2's limit on nested elements (the walk recurses as deep)


def read(data: bytes) -> lxml.html.HtmlElement:
    """The document tree; HTML nested past MAX_DEPTH is a ParseError, not a tree that
    silently lacks the rest of the file (libxml2 stops reading there)."""
    parser = lxml.html.HTMLParser()
    try:
        doc = lxml.html.document_fromstring(data, parser=parser)
    except (lxml.etree.ParserError, ValueError) as err:
        raise ParseError(f"not readable HTML ({err})") from err
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise ParseError(
            f"HTML nested deeper than {MAX_DEPTH} elements: the rest of the file cannot be read"
        )
    return doc


def parse(data: bytes) -> Parsed:
    return blocks_of(read(data))


def blocks_of(doc: lxml.html.HtmlElement) -> Parsed:
    """The main content's blocks and the title of a document tree."""
    title_el = doc.find(".//title")
    title = clean(title_el.text_content()) if title_el is not None else None
    walker = _Walker()
    walker.walk(_main_root(doc))
    walker.flush()
    if not title:
        title = next((b.text for b in walker.blocks if b.kind == "heading"), None)
    return Parsed(walker.blocks, title=title or None)
