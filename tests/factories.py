"""Plain functions that make test files: real PDFs, DOCX, HTML, Markdown and text."""

from __future__ import annotations

import io
import zipfile


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A real PDF (Helvetica text layer), one list of lines per page; an empty list makes a
    page with no text at all, as a scan would have."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for lines in pages:
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 740 Td"]
        for line in lines:
            ops.append(f"({_pdf_escape(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_id, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    info = None
    if title:
        info = add(b"<< /Title (%s) >>" % _pdf_escape(title).encode("latin-1"))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def encrypt_pdf(data: bytes, password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=password, owner_password=password + "-owner")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx(
    heading: str, paragraphs: list[str], table: list[list[str]] | None = None, title: str = ""
) -> bytes:
    import docx

    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading(heading, level=1)
    for text in paragraphs:
        if text.startswith("## "):
            document.add_heading(text[3:], level=2)
        else:
            document.add_paragraph(text)
    if table:
        t = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                t.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_zip_bomb(declared_mb: int = 1024) -> bytes:
    """A DOCX-shaped archive with one highly compressed entry of `declared_mb` MiB of zeros:
    its directory declares the size; nothing here expands it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document/>")
        with zf.open("word/media/zeros.bin", "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            for _ in range(declared_mb):
                f.write(block)
    return out.getvalue()


def make_html(title: str, heading: str, paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<!doctype html><html><head><title>{title}</title><style>p {{color: red}}</style>"
        f"<script>var secret = 'do not index';</script></head><body>"
        f"<nav><a href='/'>Home</a> | <a href='/about'>About us</a></nav>"
        f"<main><h1>{heading}</h1>{body}</main><footer>Copyright footer</footer></body></html>"
    ).encode()


# -- hostile files ---------------------------------------------------------------------------


def docx_with_entry(name: str, data: bytes, method: int, declared: int | None = None) -> bytes:
    """A DOCX-shaped archive with one more entry, compressed with `method`; with `declared`,
    its uncompressed size is written as that (a lie) in both the local header and the
    central directory."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr(
            "word/document.xml",
            '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            "<w:body><w:p><w:r><w:t>Quarterly figures.</w:t></w:r></w:p></w:body></w:document>",
        )
        zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    raw = bytearray(out.getvalue())
    if declared is not None:
        encoded = name.encode()
        local = raw.find(b"PK\x03\x04")
        while local != -1:
            size_at = local + 22
            name_len = int.from_bytes(raw[local + 26 : local + 28], "little")
            if bytes(raw[local + 30 : local + 30 + name_len]) == encoded:
                raw[size_at : size_at + 4] = declared.to_bytes(4, "little")
            local = raw.find(b"PK\x03\x04", local + 4)
        central = raw.find(b"PK\x01\x02")
        while central != -1:
            name_len = int.from_bytes(raw[central + 28 : central + 30], "little")
            if bytes(raw[central + 46 : central + 46 + name_len]) == encoded:
                raw[central + 24 : central + 28] = declared.to_bytes(4, "little")
            central = raw.find(b"PK\x01\x02", central + 4)
    return bytes(raw)


def zip_of_zips(depth: int = 3, width: int = 4) -> bytes:
    """A zip holding zips holding zips (`width` at each of `depth` levels)."""
    inner = b"\x00" * (1 << 20)
    for _ in range(depth):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(width):
                zf.writestr(f"part{i}.zip", inner)
        inner = out.getvalue()
    return inner


def page_tree_dag(levels: int = 6, fanout: int = 10, lines: int = 1) -> bytes:
    """A tiny PDF whose page tree lists the same child `fanout` times at each of `levels`
    levels: fanout ** levels pages, all the same one page (of `lines` lines of 75
    characters, in 4-point type so that 150 fit)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    line = b"(" + b"Hello from a page of a tree that lists the same page many times. " + b") Tj T*"
    stream = b"BT /F1 4 Tf 5 TL 20 780 Td " + b" ".join([line] * lines) + b" ET"
    content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    page = add(b"")
    nodes = [add(b"") for _ in range(levels)]
    objects[page - 1] = (
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (nodes[0], font, content)
    )
    child, count = page, 1
    for i, node in enumerate(nodes):
        count *= fanout
        parent = b" /Parent %d 0 R" % nodes[i + 1] if i + 1 < len(nodes) else b""
        kids = b" ".join([b"%d 0 R" % child] * fanout)
        objects[node - 1] = b"<< /Type /Pages /Kids [%s] /Count %d%s >>" % (kids, count, parent)
        child = node
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % nodes[-1]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (len(objects) + 1, catalog, xref)
    )
    return out.getvalue()


# First bytes of executables: a DOS/PE header (with the stub's message), ELF, Mach-O.
PE_HEAD = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\x00" * 44
    + b"\x80\x00\x00\x00\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21"
    + b"This program cannot be run in DOS mode.\r\r\n$"
)
ELF_HEAD = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8
MACHO_HEAD = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 8


# -- scans and photos ------------------------------------------------------------------------


def text_image(lines: list[str], size: tuple[int, int] = (1240, 1754), font_size: int = 34):
    """A white page (a Pillow image, 150 dpi A4 by default) with `lines` of black text in
    Pillow's own scalable font: words that exist only as pixels."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    y = 120
    for line in lines:
        if line:
            draw.text((100, y), line, fill=0, font=font)
        y += int(font_size * 1.9)
    return page


def make_photo(lines: list[str], fmt: str = "JPEG") -> bytes:
    """A 'photo' of a page of text: slightly rotated, blurred, on a grey background, with
    some noise, saved as JPEG (or another Pillow format)."""
    import random

    from PIL import Image, ImageFilter

    page = text_image(lines, size=(1400, 900), font_size=38)
    photo = page.rotate(2.5, expand=True, fillcolor=200, resample=Image.Resampling.BICUBIC)
    photo = photo.filter(ImageFilter.GaussianBlur(0.9)).convert("RGB")
    rng = random.Random(7)
    pixels = photo.load()
    assert pixels is not None
    for _ in range(4000):
        x, y = rng.randrange(photo.width), rng.randrange(photo.height)
        pixels[x, y] = (rng.randrange(256),) * 3
    out = io.BytesIO()
    photo.save(out, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return out.getvalue()


def make_image(lines: list[str], fmt: str = "PNG", pages: int = 1) -> bytes:
    """A clean scan as an image file; TIFF may hold several pages (the same lines, with
    'page N' after them)."""
    frames = [text_image([*lines, f"page {n + 1}"]) for n in range(pages)]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=pages > 1, append_images=frames[1:])
    return out.getvalue()


def make_scanned_pdf(pages: list[list[str]]) -> bytes:
    """An image-only PDF, one scanned page (150 dpi A4) per list of lines: no text layer
    at all; an empty list makes a blank scanned page."""
    images = [text_image(lines).convert("RGB") for lines in pages]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue()


def join_pdfs(*parts: bytes) -> bytes:
    """One PDF with the pages of each, in order (pdfium)."""
    import pypdfium2 as pdfium

    joined = pdfium.PdfDocument.new()
    for part in parts:
        joined.import_pages(pdfium.PdfDocument(part))
    out = io.BytesIO()
    joined.save(out)
    return out.getvalue()


def image_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A small PNG whose header declares `width` × `height` pixels (a decompression bomb):
    one valid IHDR and a tiny IDAT; the header alone is what is checked."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


# -- stored history for the Quality page ----------------------------------------------------

_history: dict | None = None


def seed_quality_history() -> dict:
    """Answers over the last 20 days (evals' answers aside), made once per test session:
    steady days (6 answered, 1 declined, 1 cut short, relevance about 0.55), then two days
    ago a bad one (6 of 8 declined, relevance about 0.30), yesterday an error and a stop; and
    two evaluation runs. The oldest and the newest answer have a trace."""
    global _history
    if _history is not None:
        return _history
    from datetime import UTC, datetime, timedelta

    from app.db import session_scope
    from app.models import Conversation, EvalRun, Message, MessageTrace

    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    steady = ["answered"] * 6 + ["abstained", "truncated"]
    plan: dict[int, list[str]] = {d: steady for d in range(20, 2, -1)}
    plan[2] = ["answered"] * 2 + ["abstained"] * 6
    plan[1] = ["answered"] * 5 + ["abstained", "error", "stopped"]
    plan[0] = ["answered"]
    search_ms: dict[int, list[float]] = {}
    answer_ids: list[int] = []
    with session_scope() as s:
        conversation = Conversation(title="quality history (tests)", source="api")
        s.add(conversation)
        s.flush()
        for days_ago, outcomes in plan.items():
            at = now - timedelta(days=days_ago)
            search_ms[days_ago] = []
            for i, outcome in enumerate(outcomes):
                relevance = (0.30 if days_ago == 2 else 0.55) + ((days_ago * 7 + i) % 5 - 2) / 100
                ms = 25.0 + (i * 3 + days_ago) % 10
                search_ms[days_ago].append(ms)
                timings = {"retrieval_ms": ms, "total_ms": ms + 3000}
                if outcome in ("answered", "truncated"):
                    timings["ttft_ms"] = 2500.0 + 100 * i
                s.add(
                    Message(
                        conversation_id=conversation.id,
                        role="user",
                        content=f"Question {days_ago}-{i}: when was the lighthouse lit?",
                        created_at=at,
                    )
                )
                message = Message(
                    conversation_id=conversation.id,
                    role="assistant",
                    status={"error": "error", "stopped": "stopped"}.get(outcome, "done"),
                    outcome=outcome,
                    abstained=outcome == "abstained",
                    relevance=relevance,
                    content="It was lit in 1811 [1]." if outcome == "answered" else "",
                    query="when was the lighthouse lit?",
                    model="SmolLM2-135M-Instruct",
                    retrieved=[_passage()],
                    timings=timings,
                    created_at=at + timedelta(seconds=1),
                )
                s.add(message)
                s.flush()
                answer_ids.append(message.id)
        for answer_id, at in ((answer_ids[0], now - timedelta(days=20)), (answer_ids[-1], now)):
            s.add(MessageTrace(message_id=answer_id, data=_trace(), created_at=at))
        for days_ago, hybrid in ((12, 0.70), (4, 0.74)):
            s.add(
                EvalRun(
                    kind="retrieval",
                    dataset="quality-scifact",
                    queries=300,
                    settings={},
                    metrics={
                        "bm25": {"ndcg@10": 0.68},
                        "dense": {"ndcg@10": 0.66},
                        "hybrid": {"ndcg@10": hybrid},
                    },
                    created_at=now - timedelta(days=days_ago),
                )
            )
        s.add(
            EvalRun(
                kind="answers",
                dataset="quality-squad",
                queries=300,
                settings={},
                metrics={"f1": 0.075, "citation_accuracy": 0.596, "unanswerable_declined": 0.047},
                created_at=now - timedelta(days=6),
            )
        )
    _history = {"answer_ids": answer_ids, "search_ms": search_ms}
    return _history


def _passage() -> dict:
    return {
        "n": 1,
        "chunk_id": 1,
        "document_id": 1,
        "document": "bell.md",
        "title": "Lighthouses",
        "page": None,
        "page_end": None,
        "char_start": 0,
        "char_end": 60,
        "heading_path": [],
        "text": "The Bell Rock lighthouse was lit in 1811, off the coast of Angus.",
        "scores": {"bm25": 7.25, "dense": 0.71, "fused": 0.62, "rerank": None},
    }


def _trace() -> dict:
    """A trace as `app.generation.trace` writes it."""
    passage = _passage()
    prompt = [
        {"role": "system", "content": "Answer only from the passages; cite them as [n]."},
        {
            "role": "user",
            "content": f"[1] Lighthouses\n{passage['text']}\n\nQuestion: when was it lit?",
        },
    ]
    return {
        "version": 1,
        "question": "When was the lighthouse lit?",
        "query": "when was the lighthouse lit?",
        "rewrite": None,
        "search": {
            "mode": "hybrid",
            "k": 1,
            "generation": 1,
            "fusion": {"method": "absolute", "dense_weight": 0.4, "depth": 100},
            "reranked": False,
            "reranker": {"status": "off", "detail": "no cross-encoder"},
            "timings": {
                "bm25_ms": 1.8,
                "embed_ms": 13.1,
                "dense_ms": 5.2,
                "union_ms": 2.4,
                "fusion_ms": 0.2,
                "fetch_ms": 1.5,
                "total_ms": 24.6,
            },
            "relevance": 0.62,
        },
        "decision": {"relevance": 0.62, "on": "fused", "threshold": 0.276, "abstained": False},
        "passages": [
            {
                "rank": 1,
                **{
                    k: passage[k]
                    for k in (
                        "n",
                        "chunk_id",
                        "document_id",
                        "document",
                        "title",
                        "page",
                        "heading_path",
                        "scores",
                        "text",
                    )
                },
            }
        ],
        "prompt": {
            "model": "SmolLM2-135M-Instruct",
            "messages": prompt,
            "max_tokens": 300,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        "llm": {
            "first_token_ms": 2410.0,
            "total_ms": 3120.0,
            "prompt_tokens": None,
            "completion_tokens": 9,
            "tokens_counted_by": "chunks",
            "tokens_per_s": 11.3,
            "finish_reason": "stop",
        },
        "citations": {
            "threshold": 0.7,
            "checked": True,
            "sentences": [
                {
                    "sentence": 0,
                    "text": "It was lit in 1811 [1].",
                    "cited": [1],
                    "n": 1,
                    "supported": True,
                    "score": 0.8123,
                }
            ],
        },
        "outcome": "answered",
        "error": None,
        "timings": {"retrieval_ms": 31.0, "ttft_ms": 2450.0, "llm_ms": 3120.0, "total_ms": 3200.0},
    }
