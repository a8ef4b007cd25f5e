"""Hostile files, made here, through the real upload path and worker: each is refused at
upload with a plain reason or fails in the worker with one, within a stated time, and the
worker's memory stays bounded (measured: the pool processes' peak resident size)."""

from __future__ import annotations

import io
import lzma
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.infra.processes import child_pids
from app.infra.worker_process import WorkerProcess
from tests.factories import (
    ELF_HEAD,
    MACHO_HEAD,
    PE_HEAD,
    docx_with_entry,
    make_docx,
    make_pdf,
    page_tree_dag,
    zip_of_zips,
)
from tests.helpers import new_collection, upload, wait_settled

MiB = 1 << 20
SETTLE_S = 120  # every accepted hostile file settles (fails) within this
PEAK_RSS_MB = 1536  # no pool process's peak resident memory goes past this


def with_entry(docx: bytes, name: str, data: bytes, method: int) -> bytes:
    out = io.BytesIO(docx)
    with zipfile.ZipFile(out, "a") as zf:
        zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return out.getvalue()


def peak_rss_mb(worker: WorkerProcess) -> int:
    """The largest peak resident size (VmHWM) among the worker's pool processes."""
    peaks = []
    for pid in child_pids(worker.pid):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) // 1024)
    return max(peaks)


def pdf() -> bytes:
    return make_pdf([["Quarterly figures, page one."]])


def zeros(mib: int) -> bytes:
    return b"\x00" * (mib * MiB)


# name: (file name, how to make it, what happens: refused at upload with that status code,
# or fails in the worker with that text in its reason). Made only when the test runs.
CASES: dict[str, tuple[str, Callable[[], bytes], int | str]] = {
    "bzip2 bomb, size lied": (
        "b.docx",
        lambda: docx_with_entry("word/media/z.bin", zeros(64), zipfile.ZIP_BZIP2, declared=1000),
        415,
    ),
    "lzma bomb, size lied": (
        "l.docx",
        lambda: docx_with_entry("word/media/z.bin", zeros(64), zipfile.ZIP_LZMA, declared=1000),
        415,
    ),
    "deflate bomb, sizes told": (
        "d.docx",
        lambda: docx_with_entry("word/document2.xml", zeros(256), zipfile.ZIP_DEFLATED),
        413,
    ),
    "deflate bomb, size lied": (
        "dl.docx",
        lambda: docx_with_entry(
            "word/media/z.bin", zeros(256), zipfile.ZIP_DEFLATED, declared=1000
        ),
        "corrupt DOCX archive",
    ),
    "zip of zips": ("nested.docx", zip_of_zips, 415),
    "page tree of a million pages": (
        "tree.pdf",
        lambda: page_tree_dag(levels=6),
        "1,000,000 pages",
    ),
    "a thousand pages of 9,000 characters": (
        "long.pdf",
        lambda: page_tree_dag(levels=3, lines=140),
        "MAX_TEXT_CHARS",
    ),
    "PE head, then a PDF": ("report.pdf", lambda: PE_HEAD + pdf(), 415),
    "ELF head, then a PDF": ("report2.pdf", lambda: ELF_HEAD + pdf(), 415),
    "Mach-O head, then a PDF": ("report3.pdf", lambda: MACHO_HEAD + pdf(), 415),
    "a PDF named setup.exe": ("setup.exe", pdf, 415),
    "a shell script named .md": ("notes.md", lambda: b"#!/bin/sh\nrm -rf ~\n", 415),
    "NUL bytes in text": ("nul.txt", lambda: b"Hello\x00world. " * 200, 415),
    "10 MB on one line": (
        "line.txt",
        lambda: b"lorem ipsum " * (10 * MiB // 12),
        "MAX_TEXT_CHARS",
    ),
    "100,000 nested elements": (
        "deep.html",
        lambda: b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body>",
        "nested deeper than 256",
    ),
}


@pytest.mark.slow
def test_hostile_files_are_refused_or_fail_with_a_reason_in_bounded_time_and_memory(
    client: TestClient, worker: WorkerProcess
):
    collection = new_collection()
    names = list(CASES)
    sent = time.monotonic()
    documents = {}
    files = {name: (filename, make()) for name, (filename, make, _) in CASES.items()}
    for name in names:  # one request each: a refusal names its own file
        response = upload(client, collection, files[name])
        assert response.status_code < 500, (name, response.text)
        documents[name] = response.json()["documents"][0]
    accepted = {n: d["id"] for n, d in documents.items() if d["status"] != "rejected"}
    settled = wait_settled(client, list(accepted.values()), timeout=SETTLE_S)
    took = time.monotonic() - sent
    for name in names:
        expected = CASES[name][2]
        doc = settled.get(accepted[name]) if name in accepted else documents[name]
        if isinstance(expected, int):
            assert name not in accepted, (name, doc)
            assert doc["status"] == "rejected" and doc["error"], (name, doc)
            refused = upload(client, new_collection(), files[name])
            assert refused.status_code == expected, (name, refused.text)
        else:
            assert doc["status"] == "failed" and expected in (doc["error"] or ""), (name, doc)
    peak = peak_rss_mb(worker)
    print(f"\nhostile files: settled in {took:.1f} s, pool peak resident {peak} MB")
    assert took < SETTLE_S
    assert peak < PEAK_RSS_MB


def test_an_embedded_archive_in_a_real_docx_is_not_expanded(
    client: TestClient, worker: WorkerProcess
):
    """Parts python-docx does not read (an embedded zip of zips) are counted as stored
    bytes, never opened: the document's own text is indexed."""
    docx = with_entry(
        make_docx("Budget", ["The budget grew by a tenth."]),
        "word/embeddings/inner.zip",
        zip_of_zips(),
        zipfile.ZIP_STORED,
    )
    response = upload(client, new_collection(), ("budget.docx", docx))
    doc_id = response.json()["documents"][0]["id"]
    assert wait_settled(client, [doc_id])[doc_id]["status"] == "indexed"


def test_pool_processes_have_the_memory_ceiling(settings: Settings, worker: WorkerProcess):
    ceiling = settings.worker_memory_limit_mb * MiB
    for pid in child_pids(worker.pid):
        limits = Path(f"/proc/{pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
        assert line.split()[3] == str(ceiling), line


def test_entries_compressed_other_than_deflate_are_refused_whatever_they_hold():
    """Only stored and deflate entries are read: a small, honest LZMA entry is refused too."""
    from app.ingest.detect import Rejected, accept

    small = docx_with_entry("word/media/a.bin", lzma.compress(b"x") * 10, zipfile.ZIP_LZMA)
    with pytest.raises(Rejected, match="compression method 14"):
        accept(small, "small.docx", 50 * MiB)
