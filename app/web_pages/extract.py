"""What a fetched page holds: its main content (trafilatura, Apache-2.0: the article, not
the navigation, cookie banners, asides or footers), with its title and headings, as the
same blocks every parser returns; and a sitemap's page addresses."""

from __future__ import annotations

import lxml.etree

from app.ingest.parse import html, markdown
from app.ingest.structure import Parsed, ParseError, clean

SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def parse_page(data: bytes, url: str | None) -> Parsed:
    """The page's main content; when trafilatura finds none (a page that is all list or
    table), the HTML parser's main-content rules (`parse.html`). HTML nested deeper than
    the parser reads fails (ParseError), as an uploaded file does."""
    import trafilatura

    doc = html.read(data)  # first: it refuses HTML nested past the parser's limit
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    found = trafilatura.extract(
        text,
        url=url,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_precision=True,
    )
    if not found or not found.strip():
        return html.blocks_of(doc)
    parsed = markdown.parse(found.encode())
    metadata = trafilatura.extract_metadata(text)
    title = clean(metadata.title) if metadata is not None and metadata.title else None
    parsed.title = title or parsed.title
    return parsed


def is_sitemap(data: bytes) -> bool:
    head = data[:2048].lstrip().lower()
    return b"<urlset" in head or b"<sitemapindex" in head


def sitemap_urls(data: bytes) -> tuple[list[str], list[str]]:
    """(pages, nested sitemaps) listed in a sitemap or sitemap index. Parsed without DTDs,
    entities or network access, so an XML bomb or an external entity reads nothing."""
    parser = lxml.etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = lxml.etree.fromstring(data, parser)
    except lxml.etree.XMLSyntaxError as err:
        raise ParseError(f"not a readable sitemap ({err})") from err
    tag = lxml.etree.QName(root).localname
    locs = [
        (el.text or "").strip()
        for el in root.iter()
        if isinstance(el.tag, str) and lxml.etree.QName(el).localname == "loc"
    ]
    locs = [loc for loc in locs if loc]
    if tag == "sitemapindex":
        return [], locs
    if tag == "urlset":
        return locs, []
    raise ParseError(f"not a sitemap (its root is <{tag}>)")
