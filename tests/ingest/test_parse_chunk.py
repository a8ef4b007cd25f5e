"""Type detection, parsers and the chunker: pure functions, no services."""

from __future__ import annotations

import io
import itertools
import time
import zipfile

import pytest

from app.ingest import detect
from app.ingest.chunk import chunk_document, context_prefix
from app.ingest.parse import parse as parse_file
from app.ingest.structure import Block, Limits, Parsed, ParseError, assemble
from tests.factories import encrypt_pdf, make_docx, make_html, make_pdf, make_zip_bomb

LIMITS = Limits(max_pages=5000, max_chars=5_000_000)  # the settings' defaults


def parse(content_type: str, data: bytes, filename: str):
    return parse_file(content_type, data, filename, LIMITS)


def _zip(names: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in names:
            zf.writestr(name, "x")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (make_pdf([["hello"]]), "report.pdf", detect.PDF),
        (make_pdf([["hello"]]), "report.txt", detect.PDF),  # content wins over the name
        (make_docx("T", ["x"]), "a.docx", detect.DOCX),
        (make_docx("T", ["x"]), "a.pdf", detect.DOCX),
        (b"<!DOCTYPE html><html><body><p>x</p></body></html>", "a.txt", detect.HTML),
        (b"<p>Fragment with <b>tags</b></p>", "a.html", detect.HTML),
        (b"# Title\n\nSome *text*.\n", "notes.md", detect.MARKDOWN),
        (b"# Title\n\n- one\n- two\n\n[link](http://x)\n", "notes", detect.MARKDOWN),
        (b"Just words.\n", "readme.txt", detect.TEXT),
        ("caf\u00e9 cr\u00e8me".encode("utf-16"), "x.txt", detect.TEXT),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64, "evil.pdf", "application/x-executable"),
        (b"MZ\x90\x00" + b"\x00" * 64, "setup.pdf", "application/x-msdownload"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "photo.pdf", "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "photo.docx", "image/jpeg"),
        (_zip(["a.txt", "b.txt"]), "archive.docx", "application/zip"),
        (
            _zip(["[Content_Types].xml", "xl/workbook.xml"]),
            "sheet.docx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        (bytes(range(256)) * 4, "data.txt", "application/octet-stream"),
    ],
)
def test_type_is_decided_from_content(data: bytes, filename: str, expected: str):
    assert detect.detect(data, filename) == expected


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        (b"", 422, "empty"),
        (b"\x7fELF" + b"\x00" * 64, 415, "Linux executable (ELF)"),
        (b"x" * 2048, 413, "limit"),
    ],
)
def test_accept_refuses_with_a_reason(data: bytes, status: int, says: str):
    with pytest.raises(detect.Rejected) as err:
        detect.accept(data, "f.pdf", max_bytes=1024)
    assert err.value.status == status
    assert says in err.value.reason


def test_text_that_starts_with_mz_is_text_and_a_dos_header_is_refused():
    text = b"MZ is the ISO code of Mozambique. This list explains the country codes.\n"
    assert detect.accept(text, "codes.txt", max_bytes=1024) == detect.TEXT
    with pytest.raises(detect.Rejected, match="Windows executable"):
        detect.accept(b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56, "f.txt", max_bytes=1024)
    with pytest.raises(detect.Rejected, match="upload PDF, DOCX, HTML, Markdown"):
        detect.accept(b"\x1f\x8b\x08\x00" + b"\x00" * 60, "f.gz", max_bytes=1024)


def test_zip_bomb_is_refused_from_its_directory_alone():
    bomb = make_zip_bomb(200)
    assert len(bomb) < 1_000_000  # 200 MiB declared in under 1 MB
    with pytest.raises(detect.Rejected) as err:
        detect.accept(bomb, "bomb.docx", max_bytes=50 * 2**20)
    assert err.value.status == 413 and "zip bomb" in err.value.reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("a\x00b.pdf", "ab.pdf"),
        ("line\nbreak.txt", "linebreak.txt"),
        ("", "unnamed"),
        ("..", "unnamed"),
        ("<script>alert(1)</script>.md", "script>.md"),  # a name, shown escaped
    ],
)
def test_safe_filename(name: str, expected: str):
    assert detect.safe_filename(name) == expected


def test_long_filename_keeps_its_extension():
    name = detect.safe_filename("x" * 300 + ".pdf")
    assert len(name) == 255 and name.endswith(".pdf")


def test_pdf_text_with_pages_and_title():
    data = make_pdf(
        [["Groundwork manual", "Install it with make."], ["Second page about llamas."]],
        title="The Manual",
    )
    parsed = parse(detect.PDF, data, "m.pdf")
    assert parsed.page_count == 2 and parsed.title == "The Manual"
    assert [b.page for b in parsed.blocks] == [1, 2]
    assert "Install it with make." in parsed.blocks[0].text
    assert parsed.blocks[1].text == "Second page about llamas."


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (make_pdf([[], []]), "no extractable text in 2 page(s): they hold no text or images"),
        (encrypt_pdf(make_pdf([["secret"]])), "encrypted"),
        (make_pdf([["cut short"]])[:200], "not a readable PDF"),
    ],
)
def test_unreadable_pdfs_fail_with_a_reason(data: bytes, says: str):
    with pytest.raises(ParseError, match=r".") as err:
        parse(detect.PDF, data, "x.pdf")
    assert says in str(err.value)


def test_docx_headings_paragraphs_and_tables():
    data = make_docx(
        "Install guide",
        ["Run make.", "## Details", "More text."],
        table=[["Setting", "Default"], ["MAX_UPLOAD_MB", "50"]],
        title="Guide",
    )
    parsed = parse(detect.DOCX, data, "g.docx")
    assert parsed.title == "Guide"
    kinds = [(b.kind, b.level, b.text) for b in parsed.blocks]
    assert kinds[:4] == [
        ("heading", 1, "Install guide"),
        ("paragraph", 0, "Run make."),
        ("heading", 2, "Details"),
        ("paragraph", 0, "More text."),
    ]
    assert kinds[4] == ("table", 0, "Setting | Default\nMAX_UPLOAD_MB | 50")


def test_docx_that_lies_about_its_sizes_stops_at_the_limit(monkeypatch):
    monkeypatch.setattr("app.ingest.parse.docx.ZIP_MAX_UNCOMPRESSED", 10 * 2**20)
    with pytest.raises(ParseError, match="zip bomb"):
        parse(detect.DOCX, make_zip_bomb(20), "b.docx")


def test_html_keeps_main_content_and_drops_scripts_styles_and_navigation():
    parsed = parse(detect.HTML, make_html("Page title", "Welcome", ["First.", "Second."]), "p")
    texts = [b.text for b in parsed.blocks]
    assert parsed.title == "Page title"
    assert parsed.blocks[0].kind == "heading" and texts[0] == "Welcome"
    assert texts[1:] == ["First.", "Second."]
    joined = " ".join(texts)
    for absent in ("secret", "color", "Home", "About us", "Copyright"):
        assert absent not in joined


def test_html_without_main_uses_body_and_reads_tables():
    html = (
        b"<html><body><nav>menu</nav><h2>Prices</h2><div>Loose text <i>here</i>"
        b"<p>A paragraph.</p></div><table><tr><th>Item</th><th>Cost</th></tr>"
        b"<tr><td>Tea</td><td>2</td></tr></table></body></html>"
    )
    parsed = parse(detect.HTML, html, "x.html")
    assert [(b.kind, b.text) for b in parsed.blocks] == [
        ("heading", "Prices"),
        ("paragraph", "Loose text here"),
        ("paragraph", "A paragraph."),
        ("table", "Item | Cost\nTea | 2"),
    ]


def test_html_nested_past_the_parsers_limit_fails_rather_than_losing_text():
    def nested(depth: int) -> bytes:
        return (
            b"<html><body><p>Intro osprey.</p>" + b"<div>" * depth + b"<p>Deep falcon.</p>"
            + b"</div>" * depth + b"<p>Closing kestrel.</p></body></html>"
        )  # fmt: skip

    texts = [b.text for b in parse(detect.HTML, nested(200), "n.html").blocks]
    assert texts == ["Intro osprey.", "Deep falcon.", "Closing kestrel."]
    # libxml2 stops at 256 levels and drops the rest: the document fails, saying why.
    with pytest.raises(ParseError, match="nested deeper than 256 elements"):
        parse(detect.HTML, nested(300), "n.html")


def test_markdown_headings_fences_and_front_matter():
    md = (
        b"---\ntitle: x\n---\n# Guide\n\nIntro *text*\nwraps.\n\n"
        b"Setup\n-----\n\n```\n# not a heading\n```\n"
    )
    parsed = parse(detect.MARKDOWN, md, "g.md")
    assert parsed.title == "Guide"
    assert [(b.kind, b.level, b.text) for b in parsed.blocks] == [
        ("heading", 1, "Guide"),
        ("paragraph", 0, "Intro *text*\nwraps."),
        ("heading", 2, "Setup"),
        ("paragraph", 0, "```\n# not a heading\n```"),
    ]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_text_encodings_are_detected(encoding: str):
    text = (
        "Les élèves étudièrent la thèse du célèbre mathématicien à l'école normale. "
        "Ça coûte très cher, déclarèrent-ils, mais l'été précédent fut agréable.\n\nFin."
    )
    parsed = parse(detect.TEXT, text.encode(encoding), "f.txt")
    assert [b.text for b in parsed.blocks] == [text.split("\n\n")[0], "Fin."]


def words_count(texts: list[str]) -> list[int]:
    """A stand-in tokenizer for chunker tests: one token per word."""
    return [len(t.split()) for t in texts]


def _parsed(*blocks: Block) -> Parsed:
    return Parsed(list(blocks), title="Doc")


def test_chunks_are_exact_slices_within_budget_with_headings_and_overlap():
    sentence = "The quick brown fox jumps over the lazy dog again."  # 10 words
    long_para = " ".join([sentence] * 12)  # 120 words
    parsed = _parsed(
        Block("Intro", "heading", 1),
        Block("Short opening paragraph here.", page=1),
        Block(long_para, page=1),
        Block("Details", "heading", 2),
        Block("Final words of the document.", page=2),
    )
    assembled = assemble(parsed)
    chunks = chunk_document(
        assembled,
        "Doc",
        words_count,
        chunk_tokens=40,
        overlap_tokens=10,
        max_sequence_tokens=256,
    )
    for c in chunks:
        assert assembled.text[c.start : c.end] == c.text
        assert words_count([c.text])[0] <= 40
    assert chunks[0].heading_path == ("Intro",)
    assert chunks[-1].heading_path == ("Intro", "Details")
    assert chunks[-1].text == "Final words of the document." and chunks[-1].page_start == 2
    body = [c for c in chunks if c.heading_path == ("Intro",)]
    assert len(body) >= 4
    assert any(a.end > b.start for a, b in itertools.pairwise(body))  # overlap
    covered = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    for placed in assembled.placed:
        if placed.block.kind != "heading":
            assert set(range(placed.start, placed.end)) <= covered


def test_budget_leaves_room_for_the_title_and_heading_prefix():
    parsed = _parsed(Block("A heading with many words in it", "heading", 1), Block("w " * 300))
    assembled = assemble(parsed)
    chunks = chunk_document(
        assembled, "Doc", words_count, chunk_tokens=500, overlap_tokens=0, max_sequence_tokens=64
    )
    prefix = words_count([context_prefix("Doc", chunks[0].heading_path)])[0]
    assert all(words_count([c.text])[0] + prefix + 3 <= 64 for c in chunks)


def test_a_sentence_longer_than_the_budget_is_cut_into_word_windows():
    parsed = _parsed(Block(" ".join(f"w{i}" for i in range(100))))
    chunks = chunk_document(
        assemble(parsed),
        None,
        words_count,
        chunk_tokens=32,
        overlap_tokens=0,
        max_sequence_tokens=256,
    )
    assert [words_count([c.text])[0] for c in chunks] == [32, 32, 32, 4]


def test_context_prefix_does_not_repeat_the_title():
    assert context_prefix("Guide", ("Guide", "Setup")) == "Guide > Setup"
    assert context_prefix(None, ()) == ""


def test_reading_a_document_stops_at_its_time_budget():
    from app.ingest.structure import time_budget

    started = time.monotonic()
    with pytest.raises(ParseError, match="DOCUMENT_TIME_LIMIT_S"), time_budget(0.3):
        while True:  # a parser that never ends
            pass
    assert time.monotonic() - started < 2
    with time_budget(5):  # and the budget is gone afterwards
        time.sleep(0.01)
