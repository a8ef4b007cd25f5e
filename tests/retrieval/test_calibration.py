"""Fusion calibration from a collection's labels, or without labels from its documents'
titles: it moves toward the retriever that works on that collection, searches use it and say
so, and a search during a recalibration reads one calibration, never none or a mix."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.db import session_scope
from app.models import Collection, FusionCalibration
from app.retrieval.calibration import calibrate
from app.retrieval.fusion import Candidate, fuse, fusion_name
from app.retrieval.search import default_fusion, search
from tests.helpers import new_collection, upload, wait_settled

# Each document and its question share no words: only meaning links them (BM25 is useless).
PARAPHRASES = [
    ("Cats chase mice after dark.", "felines hunting rodents at night"),
    ("The violinist tuned her instrument before the concert.", "musician preparing a fiddle"),
    ("Heavy rain flooded the valley roads.", "downpour submerged streets in lowlands"),
    ("The surgeon removed the patient's appendix.", "doctor operated on someone's abdomen"),
    ("Bakers knead dough to make bread.", "pastry cooks working flour into loaves"),
    ("The striker scored twice in the final.", "footballer netted two goals in championship match"),
    ("Volcanoes erupt molten lava.", "mountains spewing liquid rock"),
    ("The judge sentenced the thief to prison.", "court jailed a robber"),
    ("Bees collect nectar from flowers.", "insects gather sweet liquid from blossoms"),
    ("Astronauts orbit Earth aboard the station.", "spacemen circling our planet"),
    ("The chef sliced onions for the soup.", "cook chopping vegetables for broth"),
    ("Children built a snowman in winter.", "kids made a frosty figure during cold season"),
]
# Every document says the same long thing but for one code, and the question is the code:
# only the exact word links them (dense search is useless).
CODES = [f"qx{7000 + i * 37}" for i in range(12)]
BOILERPLATE = (
    "This shipping notice concerns an order placed through the regional warehouse. The parcel "
    "was packed, labelled and handed to the carrier on the usual weekday schedule, and the "
    "customer was sent the standard confirmation with tracking details and delivery window."
)


def eval_set(directory: Path, questions: list[str]) -> Path:
    """A BEIR directory: question i is about document d<i>."""
    (directory / "qrels").mkdir(parents=True)
    with open(directory / "queries.jsonl", "w") as f:
        for i, text in enumerate(questions):
            f.write(json.dumps({"_id": f"q{i}", "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(len(questions))]
    (directory / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return directory


def make_collection(client: TestClient, texts: list[str]) -> tuple[str, int]:
    name = new_collection()
    files = [(f"d{i}.md", f"# Note {i}\n\n{t}\n".encode()) for i, t in enumerate(texts)]
    ids = [d["id"] for d in upload(client, name, *files).json()["documents"]]
    assert all(d["status"] == "indexed" for d in wait_settled(client, ids).values())
    with session_scope() as s:
        collection_id = s.scalar(select(Collection.id).where(Collection.name == name))
    assert collection_id is not None
    return name, collection_id


def calibrated(client: TestClient, collection_id: int, labels: Path) -> FusionCalibration:
    """Set the eval set as an admin does; the calibration job runs in the worker."""
    response = client.post(f"/admin/collections/{collection_id}/eval-set", data={"path": labels})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 120
    while True:
        with session_scope() as s:
            row = s.get(FusionCalibration, collection_id)
            if row is not None and row.source == "eval set":  # not one from the titles
                return row
        assert time.monotonic() < deadline, "no calibration was made"
        time.sleep(0.5)


def as_dict(row: FusionCalibration) -> dict:
    return {"method": row.method, "dense_weight": row.dense_weight, "source": row.source}


def best_weights(row: FusionCalibration) -> list[float]:
    """The dense weights of `absolute` fusion that reach the best nDCG@10 on the labels."""
    weights = {float(k.split()[1]): v for k, v in row.evidence.items() if k.startswith("absolute")}
    best = max(weights.values())
    return sorted(w for w, v in weights.items() if v >= best - 1e-9)


@pytest.mark.slow
def test_calibration_leans_to_the_retriever_that_works_here(
    client: TestClient, settings: Settings, tmp_path: Path
):
    _, lexical_id = make_collection(client, [d for d, _ in PARAPHRASES])
    row = calibrated(client, lexical_id, eval_set(tmp_path / "p", [q for _, q in PARAPHRASES]))
    assert row.source == "eval set" and row.queries == 12
    assert row.evidence["absolute 1.0"] > row.evidence["absolute 0.0"] + 0.3
    assert max(best_weights(row)) >= 0.6 and 0.0 not in best_weights(row)  # toward dense
    assert (
        row.evidence[fusion_name(row.method, row.dense_weight)]
        >= max(row.evidence.values()) - 0.002
    )

    _, code_id = make_collection(client, [f"{BOILERPLATE} Code {c}." for c in CODES])
    row = calibrated(client, code_id, eval_set(tmp_path / "c", CODES))
    assert row.evidence["absolute 0.0"] > row.evidence["absolute 1.0"] + 0.3
    assert min(best_weights(row)) <= 0.4 and 1.0 not in best_weights(row)  # toward BM25
    assert (
        row.evidence[fusion_name(row.method, row.dense_weight)]
        >= max(row.evidence.values()) - 0.002
    )

    # Searches of the collection use its calibration and say so.
    with session_scope() as s:
        result = search(s, CODES[3], collections=[code_id], settings=settings)
    assert result.fusion == as_dict(row)
    assert result.hits[0].document == "d3.md"


@pytest.mark.slow
def test_a_search_during_recalibration_reads_one_calibration(
    client: TestClient, settings: Settings, tmp_path: Path
):
    _, collection_id = make_collection(client, [f"{BOILERPLATE} Code {c}." for c in CODES])
    codes = eval_set(tmp_path / "codes", CODES)
    wrong = eval_set(tmp_path / "wrong", CODES[::-1])  # labels that reward a different fusion
    seen: list[tuple[dict, int]] = []
    stop = threading.Event()

    def searching() -> None:
        while not stop.is_set():
            with session_scope() as reader:
                found = search(reader, CODES[5], collections=[collection_id], settings=settings)
            seen.append((found.fusion or {}, len(found.hits)))

    thread = threading.Thread(target=searching)
    thread.start()
    fusions = []
    try:
        for labels in (codes, wrong, codes, wrong):
            with session_scope() as writer:
                target = writer.get(Collection, collection_id)
                assert target is not None
                target.eval_set = str(labels)
                row = calibrate(writer, collection_id, settings)
                assert row is not None
                fusions.append(as_dict(row))
    finally:
        stop.set()
        thread.join(timeout=60)
    allowed = [*fusions, default_fusion(settings).to_dict()]
    assert len(seen) > 5
    assert all(hits > 0 for _, hits in seen)
    assert all(fusion in allowed for fusion, _ in seen)


def test_confidence_fusion_follows_the_retriever_whose_top_stands_out():
    """BM25 is flat (no candidate stands out), dense has a clear winner: the winner leads;
    and the other way round."""
    flat_bm25 = [
        Candidate(i, bm25=0.30 + 0.001 * (i % 3), dense=0.2 + (0.6 if i == 7 else 0.01 * i),
                  bm25_top=True, dense_top=True)
        for i in range(20)
    ]  # fmt: skip
    assert fuse(flat_bm25, "confidence")[0][0] == 7
    flat_dense = [
        Candidate(i, bm25=0.1 + (0.8 if i == 3 else 0.0), dense=0.50 + 0.001 * (i % 4),
                  bm25_top=True, dense_top=True)
        for i in range(20)
    ]  # fmt: skip
    assert fuse(flat_dense, "confidence")[0][0] == 3


@pytest.mark.slow
def test_answers_rated_up_are_labels_too(client: TestClient, settings: Settings):
    """With no eval set, questions whose answers were rated up, and the passages that
    supported them, calibrate the collection."""
    from app.models import Chunk, Conversation, Document, Message, MessageCitation

    _, collection_id = make_collection(client, [f"{BOILERPLATE} Code {c}." for c in CODES])
    with session_scope() as s:
        conversation = Conversation(title="codes", collection_id=collection_id, source="web")
        s.add(conversation)
        s.flush()
        for i, code in enumerate(CODES):
            chunk = s.scalar(
                select(Chunk.id)
                .join(Document, Document.id == Chunk.document_id)
                .where(Document.collection_id == collection_id, Document.filename == f"d{i}.md")
            )
            answer = Message(
                conversation_id=conversation.id, role="assistant", query=code, feedback=1
            )
            s.add(answer)
            s.flush()
            s.add(
                MessageCitation(
                    message_id=answer.id, sentence=0, text="…", cited=[1], n=1,
                    chunk_id=chunk, score=0.9, supported=True,
                )
            )  # fmt: skip
    with session_scope() as s:
        row = calibrate(s, collection_id, settings)
        assert row is not None
        assert row.source == "feedback" and row.queries == len(CODES) and row.feedback == 12
        assert min(best_weights(row)) <= 0.4 and 1.0 not in best_weights(row)


@pytest.mark.slow
def test_without_labels_titles_calibrate_toward_the_retriever_that_finds_them(
    client: TestClient, settings: Settings
):
    # "Note 0" .. "Note 9": BM25 keeps words of two letters or more, so it sees "note" in
    # every title alike; the embedding tells the numbers apart (BM25 useless).
    _, numbered = make_collection(client, ["A short note kept for later."] * 10)
    # The same boilerplate under titles that differ by a code (dense search useless).
    codes = new_collection()
    files = [(f"n{i}.md", f"# Notice {c}\n\n{BOILERPLATE}\n".encode()) for i, c in enumerate(CODES)]
    ids = [d["id"] for d in upload(client, codes, *files).json()["documents"]]
    wait_settled(client, ids)
    # Titles that are only the file name's stem are not questions: no calibration.
    untitled = new_collection()
    files = [(f"plain{i}.txt", f"{BOILERPLATE} {c}\n".encode()) for i, c in enumerate(CODES)]
    ids = [d["id"] for d in upload(client, untitled, *files).json()["documents"]]
    wait_settled(client, ids)

    with session_scope() as s:
        by_name = dict(s.execute(select(Collection.name, Collection.id)).all())
        row = calibrate(s, numbered, settings)
        assert row is not None and row.source == "titles" and row.queries == 10
        assert row.evidence["absolute 1.0"] > row.evidence["absolute 0.0"] + 0.3
        assert max(best_weights(row)) >= 0.6 and 0.0 not in best_weights(row)  # toward dense
        toward_dense = as_dict(row)

        row = calibrate(s, by_name[codes], settings)
        assert row is not None and row.source == "titles" and row.queries == len(CODES)
        assert row.evidence["absolute 0.0"] > row.evidence["absolute 1.0"] + 0.1
        assert min(best_weights(row)) <= 0.4 and 1.0 not in best_weights(row)  # toward BM25

        assert calibrate(s, by_name[untitled], settings) is None

    with session_scope() as s:
        result = search(s, "Note 7", collections=[numbered], settings=settings)
    assert result.fusion == toward_dense and result.hits[0].document == "d7.md"
    # The admin panel says where each collection's fusion came from.
    assert (
        "the documents&#39; titles as questions (no labels): 10 questions"
        in client.get("/admin").text
    )
