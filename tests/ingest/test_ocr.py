"""OCR: scans and photos are read in the worker; words that exist only as pixels are found
by search, on the right page, with the recognised text's confidence stored and shown."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from app.ingest import detect, ocr
from app.ingest.detect import Rejected, accept
from app.ingest.parse import parse
from app.ingest.structure import Limits, ParseError, time_budget
from tests.factories import (
    image_bomb,
    join_pdfs,
    make_image,
    make_pdf,
    make_photo,
    make_scanned_pdf,
    text_image,
)
from tests.helpers import new_collection, upload, wait_settled

LIMITS = Limits(5000, 5_000_000)
# Two pages of about 130 tokens each, so that each page is a chunk of its own.
FILLER = [
    "The survey team arrived early in the morning",
    "and walked the length of the building twice.",
    "Every panel was measured and photographed,",
    "and each finding was written into the log",
    "with the time, the place and the name of",
    "whoever saw it first. Nothing was moved",
    "until the whole floor had been recorded.",
    "The weather stayed dry for the entire visit.",
    "In the afternoon the team met in the office",
    "to compare their notes and agree on a summary.",
    "Several questions were left open for later,",
    "and a second visit was planned for the spring.",
    "The report below lists what was found.",
]
SCAN = [
    ["Zeppelin hangar inspection report", *FILLER, "The inspectors found corroded rivets."],
    ["Approved by Marguerite Okonkwo", *FILLER, "for the hydrogen valve certificate."],
]
PHOTO = ["Receipt from the Puffin Bakery", "two sourdough loaves", "total 11.40 euros"]
PHOTO_JPEG = make_photo(PHOTO)


def words(parsed, page: int) -> str:
    return " ".join(b.text for b in parsed.blocks if b.page == page).lower()


def test_a_scanned_pdf_is_read_page_by_page_with_its_confidence():
    parsed = parse(detect.PDF, make_scanned_pdf(SCAN), "scan.pdf", LIMITS)
    assert parsed.page_count == 2
    assert "corroded rivets" in words(parsed, 1) and "okonkwo" not in words(parsed, 1)
    assert "hydrogen valve" in words(parsed, 2) and "rivets" not in words(parsed, 2)
    assert set(parsed.ocr) == {1, 2}
    assert all(0.8 < p.confidence <= 1 and p.chars > 20 for p in parsed.ocr.values())
    assert parsed.ocr_confidence is not None and 0.8 < parsed.ocr_confidence <= 1
    assert parsed.notes == []


def test_a_mixed_pdf_reads_only_the_pages_without_text_by_ocr():
    typed = make_pdf([["A typed page about ledgers and budgets for the year."]])
    data = join_pdfs(typed, make_scanned_pdf([["The scanned annex lists quokka sightings."]]))
    parsed = parse(detect.PDF, data, "mixed.pdf", LIMITS)
    assert set(parsed.ocr) == {2}  # page 1 has a text layer
    assert words(parsed, 1) == "a typed page about ledgers and budgets for the year."
    assert "quokka" in words(parsed, 2)


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", "image/png"), ("WEBP", "image/webp"), ("JPEG", "image/jpeg")],
)
def test_images_are_read(fmt: str, content_type: str):
    data = make_image(["Scans of the lighthouse logbook"], fmt)
    assert accept(data, f"scan.{fmt.lower()}", 10 << 20) == content_type
    parsed = parse(content_type, data, "scan", LIMITS)
    assert "lighthouse logbook" in words(parsed, 1) and parsed.page_count == 1


def test_a_photo_of_text_is_read():
    parsed = parse("image/jpeg", PHOTO_JPEG, "receipt.jpg", LIMITS)
    text = words(parsed, 1)
    assert "puffin bakery" in text and "sourdough" in text
    assert 0.7 < (parsed.ocr_confidence or 0) <= 1


def test_a_tiff_reads_each_page_as_its_own():
    data = make_image(["Tide table for the harbour"], "TIFF", pages=3)
    parsed = parse("image/tiff", data, "tides.tif", LIMITS)
    assert parsed.page_count == 3
    for page in (1, 2, 3):
        assert "tide table" in words(parsed, page) and f"page {page}" in words(parsed, page)


def test_pages_past_the_ocr_budget_are_left_unread_and_named():
    data = make_scanned_pdf([["First scanned page"], ["Second scanned page"], ["Third page"]])
    parsed = parse(detect.PDF, data, "long.pdf", Limits(5000, 5_000_000, ocr_pages=1))
    assert {b.page for b in parsed.blocks} == {1}
    assert parsed.notes == ["pages 2-3 not read by OCR: the limit is 1 (OCR_MAX_PAGES)"]
    with pytest.raises(ParseError, match=r"page 1 not read by OCR: the limit is 0"):
        parse(detect.PDF, make_scanned_pdf([["Words"]]), "x.pdf", Limits(5000, 10**6, 0))


def test_a_page_past_its_time_limit_is_left_unread_and_the_document_budget_goes_on(
    monkeypatch: pytest.MonkeyPatch,
):
    real = ocr.read
    calls = []

    def slow_on_page_one(image):
        calls.append(image)
        if len(calls) == 1:
            time.sleep(120)
        return real(image)

    monkeypatch.setattr(ocr, "read", slow_on_page_one)
    data = make_scanned_pdf([["Slow page"], ["Quick page about otters"]])
    started = time.monotonic()
    with time_budget(100):
        parsed = parse(detect.PDF, data, "x.pdf", Limits(5000, 10**6, ocr_page_s=25.0))
        time.sleep(0.1)  # the document's budget is still armed after OCR
    assert time.monotonic() - started < 90  # not the 120 s the first page would take
    assert "otters" in words(parsed, 2) and words(parsed, 1) == ""
    assert parsed.notes == [
        "page 1 not read by OCR: each took longer than 25 s (OCR_PAGE_TIME_LIMIT_S)"
    ]


def test_nothing_recognised_fails_with_the_reason():
    with pytest.raises(ParseError, match=r"^no text found \(OCR read nothing\)$"):
        parse(detect.PDF, make_scanned_pdf([[], []]), "blank.pdf", LIMITS)
    blank = io.BytesIO()
    text_image([]).save(blank, "PNG")
    with pytest.raises(ParseError, match=r"^no text found \(OCR read nothing\)$"):
        parse("image/png", blank.getvalue(), "blank.png", LIMITS)


@pytest.mark.parametrize(
    ("data", "status", "says"),
    [
        (image_bomb(100_000, 100_000), 413, "decompression bomb"),
        (image_bomb(10_000, 7_000), 413, "the limit is 60 million"),  # 70 MP: 1-2× the limit
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422, "not a readable image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 40, 422, "not a readable image"),
        (b"II*\x00" + b"\xff" * 60, 422, "not a readable image"),
    ],
)
def test_hostile_images_are_refused_at_upload_with_the_reason(data: bytes, status: int, says: str):
    with pytest.raises(Rejected) as err:
        accept(data, "scan.png", 50 << 20)
    assert err.value.status == status and says in err.value.reason


def test_a_truncated_image_fails_in_the_worker_with_the_reason():
    data = make_image(["Truncated scan"], "JPEG")
    cut = data[: len(data) // 3]
    with pytest.raises(ParseError, match="not a readable image"):
        parse("image/jpeg", cut, "cut.jpg", LIMITS)


def test_lines_become_paragraphs_in_reading_order():
    """Boxes on one row are one line; a wide gap starts a paragraph; hyphens are mended."""
    line = ocr._Line
    lines = [
        line("a para-", 0.9, 102, 131, 400),  # the detector split one line in two boxes
        line("First line of", 0.9, 100, 130, 100),
        line("graph goes on.", 0.8, 140, 170, 100),
        line("A new paragraph.", 0.9, 250, 280, 100),
    ]
    assert ocr.paragraphs(lines) == ["First line of a paragraph goes on.", "A new paragraph."]


def test_the_web_process_never_loads_the_ocr_engine():
    """Uploads are checked (an image's header) in the web process; OCR is the worker's."""
    code = (
        "import sys\n"
        "from app.main import create_app\n"
        "from app.ingest.detect import accept\n"
        "from tests.factories import make_image\n"
        "assert accept(make_image(['x']), 'x.png', 10**8) == 'image/png'\n"
        "loaded = [m for m in ('rapidocr_onnxruntime', 'cv2', 'onnxruntime') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_words_only_in_pixels_are_found_by_search_on_the_right_page(client: TestClient):
    collection = new_collection()
    # A fresh worker's first task spends its first seconds importing torch: that is paid
    # here, so that each OCR task below has the tests' time limit (80 s) to itself.
    warm = upload(client, collection, ("warm-up.md", b"# Warm up\n\nFirst task."))
    wait_settled(client, [warm.json()["documents"][0]["id"]], timeout=240)
    ids = []  # one request each, so that each is a task of its own
    for name, data in (
        ("signed-contract.pdf", make_scanned_pdf(SCAN)),
        ("receipt.jpg", PHOTO_JPEG),
    ):
        response = upload(client, collection, (name, data))
        assert response.status_code == 201
        ids += [d["id"] for d in response.json()["documents"]]
    scan, photo = (wait_settled(client, ids, timeout=240)[i] for i in ids)
    assert scan["status"] == "indexed", scan["error"]
    assert photo["status"] == "indexed", photo["error"]
    assert scan["page_count"] == 2 and set(scan["ocr_pages"]) == {"1", "2"}
    assert 0.8 < scan["ocr_confidence"] <= 1
    assert photo["content_type"] == "image/jpeg" and photo["ocr_pages"].keys() == {"1"}

    def top(query: str) -> dict:
        found = client.get(
            "/api/search", params={"q": query, "collection": collection, "mode": "bm25"}
        ).json()["results"]
        assert found, query
        return found[0]

    deadline = time.monotonic() + 10  # every process follows the index within 2 s
    while True:
        try:
            hit = top("Okonkwo hydrogen valve")
            break
        except AssertionError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert hit["document_id"] == scan["id"] and hit["page"] == 2
    hit = top("corroded rivets")
    assert hit["document_id"] == scan["id"] and hit["page"] == 1
    hit = top("Puffin Bakery sourdough")
    assert hit["document_id"] == photo["id"] and hit["page"] == 1

    page = client.get("/documents", params={"collection": collection}).text
    assert "read by OCR (2 pages), confidence" in page
