"""The admin panel: reindexing with progress, documents moved, and a new index generation
(another embedding model, another dimension, other chunking) built beside the live one and
switched to while searches keep running."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text

from app.config import Settings
from app.db import session_scope
from app.models import Chunk, Collection, Document, EvalRun, IndexGeneration
from app.retrieval import lexical_snapshot as snapshot
from app.retrieval.lexical import BM25Index
from app.retrieval.lexical_store import lexical_index, snapshots_folder
from app.retrieval.search import search
from tests.helpers import new_collection, tiny_bert, upload, wait_settled


def build_tiny_sentence_model(path: Path) -> Path:
    """A real sentence-transformers model (untrained, 2 layers, 32 dimensions, MiniLM's
    tokenizer): a different model and dimension for the new generation."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    torch.manual_seed(1)
    base = path / "bert"
    tokenizer, config = tiny_bert()
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    transformer = models.Transformer(str(base), max_seq_length=128)
    SentenceTransformer(modules=[transformer, models.Pooling(32, "mean")]).save(str(path / "st"))
    return path / "st"


def test_reindex_a_collection_with_progress(client: TestClient):
    name = new_collection()
    docs = {f"r{i}.md": f"# R{i}\n\nReindexed text number {i}.".encode() for i in range(3)}
    ids = [d["id"] for d in upload(client, name, *docs.items()).json()["documents"]]
    wait_settled(client, ids)
    before = {i: client.get(f"/api/documents/{i}").json()["indexed_at"] for i in ids}
    page = client.post("/admin/reindex", data={"scope": "collection", "target": name})
    assert page.status_code == 200 and "<progress" in page.text
    job_id = int(page.text.split('id="reindex-')[1].split('"')[0])
    deadline = time.monotonic() + 120
    while 'data-done="3" data-total="3"' not in (
        fragment := client.get(f"/admin/reindex/{job_id}").text
    ):
        assert time.monotonic() < deadline, fragment
        time.sleep(0.3)
    after = {i: client.get(f"/api/documents/{i}").json() for i in ids}
    assert all(d["status"] == "indexed" and d["indexed_at"] > before[i] for i, d in after.items())
    audit = client.get("/admin").text
    assert f"collection {name}" in audit  # the audit log names the reindex


def test_move_a_document_to_another_collection(client: TestClient):
    source, target = new_collection(), new_collection()
    doc = upload(client, source, ("moving.md", b"# Moving\n\nA document on the move.")).json()
    doc_id = doc["documents"][0]["id"]
    wait_settled(client, [doc_id])
    client.post("/api/collections", json={"name": target})
    moved = client.post(f"/admin/documents/{doc_id}/move", data={"collection": target})
    assert moved.status_code == 200 and "moved to" in moved.text
    assert client.get(f"/api/documents/{doc_id}").json()["collection"] == target
    hits = client.get(
        "/api/search", params={"q": "document on the move", "collection": target, "mode": "bm25"}
    ).json()["results"]
    assert hits and hits[0]["document_id"] == doc_id and hits[0]["collection"] == target
    gone = client.get(
        "/api/search", params={"q": "document on the move", "collection": source, "mode": "bm25"}
    ).json()["results"]
    assert gone == []


@pytest.mark.slow
def test_generation_switch_under_a_query_loop(
    client: TestClient, settings: Settings, facts: str, tmp_path: Path
):
    model = build_tiny_sentence_model(tmp_path / "tiny")
    with session_scope() as s:
        collection = s.scalars(select(Collection).where(Collection.name == facts)).one()
        old = s.scalars(select(IndexGeneration).where(IndexGeneration.state == "live")).one()
        old_id, old_dim = old.id, old.dimension
        documents = s.scalars(
            select(Document.filename).where(Document.collection_id == collection.id)
        ).all()
    # An eval set for the collection, so the panel can compare the generations.
    eval_dir = tmp_path / "eval"
    (eval_dir / "qrels").mkdir(parents=True)
    (eval_dir / "corpus.jsonl").write_text("")
    (eval_dir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "espresso"}))
    (eval_dir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tcoffee\t1\n")
    assert "coffee.md" in documents
    assert (
        client.post(
            f"/admin/collections/{collection.id}/eval-set", data={"path": str(eval_dir)}
        ).status_code
        == 200
    )

    seen: list[tuple[int | None, set[int], int]] = []
    stop = threading.Event()

    def query_loop() -> None:
        while not stop.is_set():
            with session_scope() as s:
                for mode in ("hybrid", "bm25", "dense"):
                    r = search(
                        s,
                        "When was the Eiffel Tower finished?",
                        mode=mode,  # type: ignore[arg-type]
                        collections=[collection.id],
                        settings=settings,
                    )
                    seen.append((r.generation_id, {h.generation_id for h in r.hits}, len(r.hits)))

    loop = threading.Thread(target=query_loop, daemon=True)
    loop.start()
    try:
        started = client.post(
            "/admin/generations",
            data={
                "model": str(model),
                "chunk_tokens": "128",
                "overlap_tokens": "16",
            },
        )
        assert started.status_code == 200, started.text
        with session_scope() as s:
            new = s.scalars(
                select(IndexGeneration).where(IndexGeneration.state.in_(("building", "ready")))
            ).one()
            new_id = new.id
            assert new.dimension == 32 != old_dim
        deadline = time.monotonic() + 300
        while (state := _state(new_id)) != "ready":
            assert state == "building" and time.monotonic() < deadline, state
            time.sleep(0.5)
        assert all(g == old_id for g, _, _ in seen)  # still serving the old one
        # The worker wrote the new generation's BM25 snapshot before it became ready.
        assert any(snapshots_folder(settings).glob(f"g{new_id}-*/meta.json"))

        client.post(f"/admin/generations/{new_id}/compare", data={"collection_id": collection.id})
        deadline = time.monotonic() + 120
        while not _comparison(old_id, new_id):
            assert time.monotonic() < deadline, "no comparison"
            time.sleep(0.5)
        panel = client.get("/admin/generations").text
        assert f"generation {old_id} (live)" in panel and f"generation {new_id}" in panel

        switched = client.post(f"/admin/generations/{new_id}/switch")
        assert switched.status_code == 200 and _state(new_id) == "live"
        assert _state(old_id) == "retired"
        deadline = time.monotonic() + 30
        while not any(g == new_id for g, _, _ in seen[-3:]):
            assert time.monotonic() < deadline, "the loop never saw the new generation"
            time.sleep(0.1)
        time.sleep(0.5)
        # This process mapped that snapshot rather than building the index from Postgres.
        assert lexical_index(settings.database_url).loaded_from == "snapshot"
    finally:
        stop.set()
        loop.join(timeout=30)
    assert len(seen) > 20
    for generation, hit_generations, hits in seen:
        assert hits > 0, "a search saw an empty index"
        assert hit_generations == {generation}, "a search saw a mixed index"
        assert generation in (old_id, new_id)
    switch_at = next(i for i, (g, _, _) in enumerate(seen) if g == new_id)
    assert all(g == new_id for g, _, _ in seen[switch_at:])  # no going back

    # Undo: the old generation serves again (its chunks are kept for an hour).
    assert client.post("/admin/generations/roll-back").status_code == 200
    assert _state(old_id) == "live" and _state(new_id) == "retired"
    with session_scope() as s:
        result = search(s, "Eiffel Tower", collections=[collection.id], settings=settings)
    assert result.generation_id == old_id and result.hits


def _state(generation_id: int) -> str:
    with session_scope() as s:
        generation = s.get(IndexGeneration, generation_id)
        assert generation is not None
        return generation.state


def _comparison(old_id: int, new_id: int) -> dict | None:
    with session_scope() as s:
        for run in s.scalars(select(EvalRun).where(EvalRun.kind == "compare")):
            if run.settings.get("generations") == [old_id, new_id]:
                return run.metrics
    return None


def test_cancel_a_generation(client: TestClient, settings: Settings, tmp_path: Path):
    model = build_tiny_sentence_model(tmp_path / "tiny")
    response = client.post(
        "/admin/generations",
        data={
            "model": str(model),
            "chunk_tokens": "64",
            "overlap_tokens": "0",
        },
    )
    assert response.status_code == 200
    with session_scope() as s:
        generation_id = s.scalars(
            select(IndexGeneration.id).where(IndexGeneration.state.in_(("building", "ready")))
        ).one()
    second = client.post(
        "/admin/generations",
        data={
            "model": str(model),
            "chunk_tokens": "64",
            "overlap_tokens": "0",
        },
    )
    assert second.status_code == 409  # one at a time
    # A BM25 snapshot of it (as the worker writes when a build completes) goes with it.
    folder = snapshots_folder(settings)
    with session_scope() as s:
        made = s.get(IndexGeneration, generation_id).created_at  # type: ignore[union-attr]
    key = snapshot.Key(generation_id, made.isoformat(), 0)
    tiny = BM25Index()
    tiny.add([(1, 1, 1, ["word"])])
    assert snapshot.save(tiny, folder, key) is not None
    assert client.post(f"/admin/generations/{generation_id}/cancel").status_code == 200
    assert _state(generation_id) == "cancelled"
    deadline = time.monotonic() + 60
    while True:
        with session_scope() as s:
            left = s.scalar(select(func.count()).where(Chunk.generation_id == generation_id))
            index = s.scalar(
                text("SELECT to_regclass(:n)"), {"n": f"chunks_embedding_g{generation_id}"}
            )
        snapshots = list(folder.glob(f"{key.prefix}*"))
        if left == 0 and index is None and not snapshots:
            break
        assert time.monotonic() < deadline, (left, index, snapshots)
        time.sleep(0.5)


def test_bad_model_is_refused(client: TestClient):
    response = client.post(
        "/admin/generations",
        data={
            "model": f"/nonexistent/{uuid.uuid4().hex}",
            "chunk_tokens": "128",
            "overlap_tokens": "16",
        },
    )
    assert response.status_code == 422 and "cannot load" in response.text


def test_a_ready_generation_takes_new_uploads_and_can_be_switched_to(
    client: TestClient, settings: Settings, tmp_path: Path
):
    """Built without switching (ready), then a document arrives: it is added to the ready
    generation too, so the switch succeeds and the document is found in it."""
    model = build_tiny_sentence_model(tmp_path / "tiny")
    name = new_collection()
    first = upload(client, name, ("before.md", b"# Before\n\nA page from before.")).json()
    wait_settled(client, [first["documents"][0]["id"]])
    with session_scope() as s:
        old_id = s.scalars(select(IndexGeneration.id).where(IndexGeneration.state == "live")).one()
    started = client.post(
        "/admin/generations",
        data={"model": str(model), "chunk_tokens": "64", "overlap_tokens": "0"},
    )
    assert started.status_code == 200, started.text
    with session_scope() as s:
        new_id = s.scalars(
            select(IndexGeneration.id).where(IndexGeneration.state.in_(("building", "ready")))
        ).one()
    deadline = time.monotonic() + 300
    while (state := _state(new_id)) != "ready":
        assert state == "building" and time.monotonic() < deadline, state
        time.sleep(0.5)

    late = upload(client, name, ("late.md", b"# Late\n\nThe zebra quokka arrived late.")).json()
    late_id = late["documents"][0]["id"]
    assert wait_settled(client, [late_id])[late_id]["status"] == "indexed"
    assert _state(new_id) == "ready"
    with session_scope() as s:
        in_ready = s.scalar(
            select(func.count()).where(Chunk.document_id == late_id, Chunk.generation_id == new_id)
        )
    assert in_ready

    # A document indexed while the generation was becoming ready, without chunks in it: the
    # switch says so and the generation goes back to building, which fills the gap.
    with session_scope() as s:
        s.execute(delete(Chunk).where(Chunk.document_id == late_id, Chunk.generation_id == new_id))
    refused = client.post(f"/admin/generations/{new_id}/switch")
    assert refused.status_code == 409 and "being brought up to date" in refused.text
    deadline = time.monotonic() + 120
    while (state := _state(new_id)) != "ready":
        assert state == "building" and time.monotonic() < deadline, state
        time.sleep(0.5)

    switched = client.post(f"/admin/generations/{new_id}/switch")
    assert switched.status_code == 200, switched.text
    assert _state(new_id) == "live" and _state(old_id) == "retired"
    with session_scope() as s:
        collection_id = s.scalars(select(Collection.id).where(Collection.name == name)).one()
        result = search(
            s, "zebra quokka", mode="bm25", collections=[collection_id], settings=settings
        )
    assert result.generation_id == new_id
    assert result.hits and result.hits[0].document_id == late_id
    assert {h.generation_id for h in result.hits} == {new_id}

    # Leave the original generation serving for the other tests.
    assert client.post("/admin/generations/roll-back").status_code == 200
    assert _state(old_id) == "live"


def test_moving_a_document_onto_a_file_name_in_use_is_refused(client: TestClient):
    """A later upload of the name would replace both documents: the move is refused."""
    zoo, policy = new_collection(), new_collection()
    kept = upload(client, zoo, ("policy.txt", b"Zoo policy: feed the animals at noon.")).json()
    moving = upload(client, policy, ("policy.txt", b"Office policy: lights off at six.")).json()
    kept_id, moving_id = kept["documents"][0]["id"], moving["documents"][0]["id"]
    wait_settled(client, [kept_id, moving_id])

    refused = client.post(f"/admin/documents/{moving_id}/move", data={"collection": zoo})
    assert refused.status_code == 409
    assert "policy.txt" in refused.text and zoo in refused.text
    assert client.get(f"/api/documents/{moving_id}").json()["collection"] == policy
    with session_scope() as s:
        in_zoo = s.scalars(
            select(Document.id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Collection.name == zoo)
        ).all()
        chunk_collections = set(
            s.scalars(select(Chunk.collection_id).where(Chunk.document_id == moving_id)).all()
        )
        policy_id = s.scalars(select(Collection.id).where(Collection.name == policy)).one()
    assert in_zoo == [kept_id]
    assert chunk_collections == {policy_id}


def test_delete_a_collection(client: TestClient, settings: Settings):
    """The panel's Delete button: the collection, its documents, their files and chunks and
    its grants go; search stops finding them; the audit log says so; members get 403."""
    from app.accounts import service as accounts
    from app.main import create_app
    from app.models import AuditEvent, CollectionMember, DocumentFile
    from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
    from tests.helpers import csrf_of, sign_in

    name = new_collection()
    files = {
        "kestrel.md": b"# Kestrel\n\nThe vermilion kestrel nests above the quarry.",
        "heron.md": b"# Heron\n\nThe vermilion heron fishes below the weir.",
    }
    ids = [d["id"] for d in upload(client, name, *files.items()).json()["documents"]]
    assert all(d["status"] == "indexed" for d in wait_settled(client, ids).values())

    def found(mode: str) -> set[int]:
        hits = client.get("/api/search", params={"q": "vermilion kestrel heron", "mode": mode})
        return {h["document_id"] for h in hits.json()["results"]}

    assert set(ids) <= found("bm25") and set(ids) & found("hybrid")
    with session_scope() as s:
        collection_id = s.scalars(select(Collection.id).where(Collection.name == name)).one()
        member = accounts.create_user(
            s, f"member-{uuid.uuid4().hex[:8]}@tests.example", "a long enough password", "member"
        )
        member_key = accounts.create_api_key(s, member, "test")[0]
        member_email = member.email
    granted = client.post(
        f"/admin/collections/{collection_id}/members", data={"email": member_email}
    )
    assert granted.status_code == 200

    # A member, even one who may read the collection, may not delete it.
    with TestClient(create_app(settings)) as other:
        refused = other.post(
            f"/admin/collections/{collection_id}/delete",
            headers={"Authorization": f"Bearer {member_key}"},
        )
        assert refused.status_code == 403
        refused = other.delete(
            f"/api/admin/collections/{collection_id}",
            headers={"Authorization": f"Bearer {member_key}"},
        )
        assert refused.status_code == 403
    assert name in [c["name"] for c in client.get("/api/collections").json()]

    # The admin, signed in with a browser session, presses the button (htmx sends the CSRF).
    with TestClient(
        create_app(settings), base_url="https://testserver", headers={"Accept": "text/html"}
    ) as browser:
        assert sign_in(browser, ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303
        panel = browser.get("/admin").text
        assert f'hx-post="/admin/collections/{collection_id}/delete"' in panel
        assert f"Delete the collection {name} and its 2 documents?" in panel
        token = csrf_of(browser, "/admin")
        assert browser.post(f"/admin/collections/{collection_id}/delete").status_code == 403
        deleted = browser.post(
            f"/admin/collections/{collection_id}/delete", headers={"X-CSRF-Token": token}
        )
        assert deleted.status_code == 200 and 'id="collections"' in deleted.text
        assert f'data-collection="{name}"' not in deleted.text

    assert name not in [c["name"] for c in client.get("/api/collections").json()]
    assert all(client.get(f"/api/documents/{i}").status_code == 404 for i in ids)
    assert not set(ids) & found("bm25") and not set(ids) & found("hybrid")
    with session_scope() as s:
        assert s.get(Collection, collection_id) is None
        assert not s.scalar(
            select(func.count()).where(
                (Chunk.document_id.in_(ids)) | (Chunk.collection_id == collection_id)
            )
        )
        assert not s.scalar(select(func.count()).where(DocumentFile.document_id.in_(ids)))
        assert not s.scalar(
            select(func.count()).where(CollectionMember.collection_id == collection_id)
        )
        event = s.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "collection.delete", AuditEvent.target == name
            )
        ).one()
        assert event.actor_email == ADMIN_EMAIL and event.detail == {"documents": 2}
    assert client.post(f"/admin/collections/{collection_id}/delete").status_code == 404

    # The JSON API does the same.
    empty = client.post("/api/collections", json={"name": new_collection()}).json()
    assert client.delete(f"/api/admin/collections/{empty['id']}").status_code == 204
    assert client.delete(f"/api/admin/collections/{empty['id']}").status_code == 404
