"""Search through the real parts: pgvector, the BM25 follower, the API, a second web process,
selective filters, and the reranker off and on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text

from app.collections import service as collections
from app.config import Settings
from app.db import session_scope
from app.documents import service
from app.infra.worker_process import WorkerProcess
from app.ingest.index import create_vector_index
from app.main import create_app
from app.models import Chunk, Collection, Document, IndexGeneration
from app.retrieval import dense
from app.retrieval.search import search
from tests.helpers import (
    build_tiny_cross_encoder,
    groundwork,
    new_collection,
    upload,
    wait_settled,
)


@pytest.fixture(scope="module")
def corpus(settings: Settings, worker: WorkerProcess, auth: dict[str, str]) -> str:
    """A small indexed collection shared by the search tests."""
    name = new_collection()
    docs = {
        "tea.md": b"# Tea\n\nGreen tea is steeped at eighty degrees for two minutes.",
        "coffee.md": b"# Coffee\n\nEspresso is brewed by forcing hot water through fine grounds.",
        "cats.md": b"# Cats\n\nCats sleep most of the day and hunt small animals at night.",
        "rates.md": b"# Rates\n\nThe central bank raised interest rates to slow inflation.",
    }
    with TestClient(create_app(settings), headers=auth) as c:
        ids = [d["id"] for d in upload(c, name, *docs.items()).json()["documents"]]
        assert all(d["status"] == "indexed" for d in wait_settled(c, ids).values())
    return name


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_api_returns_passages_with_stage_scores_and_timings(
    client: TestClient, corpus: str, mode: str
):
    response = client.get(
        "/api/search",
        params={
            "q": "how hot should water be for green tea",
            "collection": corpus,
            "mode": mode,
            "k": 3,
        },
    )
    assert response.status_code == 200
    body = response.json()
    top = body["results"][0]
    assert top["document"] == "tea.md" and top["title"] == "Tea" and top["collection"] == corpus
    assert top["text"].startswith("Green tea") and top["char_end"] > top["char_start"]
    scores = top["scores"]
    assert (scores["bm25"] is not None) == (mode != "dense")
    assert (scores["dense"] is not None) == (mode != "bm25")
    assert (scores["fused"] is not None) == (mode == "hybrid")
    assert scores["rerank"] is None and body["reranked"] is False
    assert body["timings"]["total_ms"] > 0 and len(body["results"]) <= 3
    if mode != "bm25":
        assert "embed_ms" in body["timings"] and "dense_ms" in body["timings"]


def test_reranker_off_is_said_in_search_and_health(client: TestClient, corpus: str):
    body = client.get("/api/search", params={"q": "espresso", "collection": corpus}).json()
    assert body["reranker"]["status"] == "off"
    assert "could not be loaded" in body["reranker"]["detail"]
    health = client.get("/healthz").json()
    assert health["reranker"]["status"] == "off" and health["reranker"]["detail"]
    assert health["embedder"]["status"] == "ok" and "384" in health["embedder"]["detail"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"q": ""}, 422),
        ({"q": "x" * 2001}, 422),
        ({"q": "tea", "mode": "fuzzy"}, 422),
        ({"q": "tea", "collection": "no-such-collection"}, 404),
        ({"q": "tea", "k": 0}, 422),
    ],
)
def test_bad_search_requests(client: TestClient, params: dict, status: int):
    response = client.get("/api/search", params=params)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_search_page_highlights_matched_terms_and_escapes(client: TestClient, corpus: str):
    page = client.get("/search", params={"q": "<b>cats</b> sleeping", "collection": corpus}).text
    assert "<mark>Cats</mark> <mark>sleep</mark>" in page
    assert "<b>cats</b>" not in page  # the query is shown escaped
    fragment = client.get(
        "/search", params={"q": "espresso", "collection": corpus}, headers={"HX-Request": "true"}
    ).text
    assert fragment.lstrip().startswith('<section id="results">') and "<html" not in fragment


def test_cli_search_json(settings: Settings, corpus: str):
    result = groundwork(
        "search", "interest rates", "--collection", corpus, "--k", "2", "--mode", "bm25", "--json"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["mode"] == "bm25" and body["results"][0]["document"] == "rates.md"
    assert len(body["results"]) <= 2


def test_dense_query_uses_the_generation_hnsw_index(settings: Settings, corpus: str):
    """EXPLAIN the very statement dense_search sends (captured on its way to Postgres): the
    live generation's HNSW index must be able to serve it, in order, without a sort."""
    sent: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "<=>" in statement:
            sent.append((statement, parameters))

    with session_scope() as s:
        generation = s.scalar(select(IndexGeneration).where(IndexGeneration.state == "live"))
        assert generation is not None
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", capture)
        try:
            query = np.ones(generation.dimension, dtype=np.float32) / generation.dimension**0.5
            found = dense.dense_search(
                s,
                query,
                generation_id=generation.id,
                dimension=generation.dimension,
                depth=5,
                ef_search=40,
            )
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        chunks = s.scalar(select(func.count()).where(Chunk.generation_id == generation.id))
        assert len(found) == min(5, chunks) and len(sent) == 1
        statement, parameters = sent[0]
        # However few chunks the table holds now, ask for the plan of a large one.
        s.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            s.connection().exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars()
        )
    assert f"Index Scan using chunks_embedding_g{generation.id}" in plan, plan
    assert "Sort" not in plan, plan  # the index gives the order; nothing sorts its output


def second_web_process(settings: Settings) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:create_app",
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).json()["embedder"]["status"] == "ok":
                return proc, url
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "second web process"
        time.sleep(0.3)


def test_new_document_found_within_2s_and_never_after_deletion_in_another_process(
    settings: Settings, client: TestClient, corpus: str, auth: dict[str, str]
):
    proc, url = second_web_process(settings)
    word = f"zorblax{uuid.uuid4().hex[:6]}"
    try:
        params = {"q": word, "collection": corpus, "mode": "bm25"}
        assert httpx.get(f"{url}/api/search", params=params, headers=auth).json()["results"] == []
        doc = upload(client, corpus, (f"{word}.md", f"# Note\n\nThe {word} protocol.".encode()))
        doc_id = doc.json()["documents"][0]["id"]
        while True:  # the moment it is indexed
            with session_scope() as s:
                if s.get(Document, doc_id).status == "indexed":  # type: ignore[union-attr]
                    indexed_at = time.monotonic()
                    break
            time.sleep(0.02)
        while True:
            results = httpx.get(f"{url}/api/search", params=params, headers=auth).json()["results"]
            if results:
                found_after = time.monotonic() - indexed_at
                break
            assert time.monotonic() - indexed_at < 2.0, "not found within 2 s of indexing"
            time.sleep(0.05)
        assert results[0]["document_id"] == doc_id and found_after < 2.0
        assert client.delete(f"/api/documents/{doc_id}").status_code == 204
        for mode in ("bm25", "dense", "hybrid"):
            body = httpx.get(
                f"{url}/api/search", params={**params, "mode": mode}, headers=auth
            ).json()
            assert all(r["document_id"] != doc_id for r in body["results"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_selective_filter_keeps_all_5_of_100000_chunks(settings: Settings):
    """pgvector filters after the HNSW scan: a collection holding 5 of 100,000 chunks must
    still come back whole. (8-dimensional vectors keep the index build quick; the filter
    logic does not depend on the dimension.)"""
    dim = 8
    with session_scope() as s:
        big = collections.create_collection(s, new_collection())
        small = collections.create_collection(s, new_collection())
        big_doc = service.add_document(s, big, "big.md", b"# Big\n\nmany", 2**20).document
        small_doc = service.add_document(s, small, "small.md", b"# Small\n\nfew", 2**20).document
        generation = IndexGeneration(
            embedding_model="test-8d",
            dimension=dim,
            chunk_tokens=200,
            chunk_overlap_tokens=0,
            state="retired",
        )
        s.add(generation)
        s.flush()
        gid = generation.id
        for doc, collection, rows in ((big_doc, big, 100_000), (small_doc, small, 5)):
            s.execute(
                text(
                    "INSERT INTO chunks (document_id, generation_id, collection_id, ordinal, text,"
                    " lexemes, heading_path, char_start, char_end, embedding, embedding_model)"
                    " SELECT :doc, :gen, :coll, g, 'x', 'x', '{}', 0, 1,"
                    " (SELECT array_agg(random() - 0.5) FROM generate_series(1, :dim)"
                    "  WHERE g > 0)::vector, 'test-8d' FROM generate_series(1, :n) g"
                ),
                {"doc": doc.id, "gen": gid, "coll": collection.id, "dim": dim, "n": rows},
            )
        small_id = small.id
        create_vector_index(s, gid, dim)
        s.execute(text("ANALYZE chunks"))
    query = np.random.default_rng(7).standard_normal(dim).astype(np.float32)
    try:
        with session_scope() as s:
            # The problem: when the planner takes the HNSW index (misestimated selectivity,
            # forced here), pgvector filters its 40 candidates afterwards and returns too few.
            distance = dense._distance(dim, query)
            s.execute(text("SET LOCAL enable_bitmapscan = off"))
            s.execute(text("SET LOCAL enable_seqscan = off"))
            s.execute(text("SET LOCAL enable_sort = off"))
            plain = s.execute(
                select(Chunk.id)
                .where(Chunk.generation_id == gid, Chunk.collection_id == small_id)
                .order_by(distance)
                .limit(10)
            ).all()
            for setting in ("enable_bitmapscan", "enable_seqscan", "enable_sort"):
                s.execute(text(f"RESET {setting}"))
            found = dense.dense_search(
                s,
                query,
                generation_id=gid,
                dimension=dim,
                depth=10,
                ef_search=40,
                allowed=[small_id],
                allowed_rows=5,
                total_rows=100_005,
            )
            unknown = dense.dense_search(
                s,
                query,
                generation_id=gid,
                dimension=dim,
                depth=10,
                ef_search=40,
                allowed=[small_id],
            )
        assert len(plain) < 5  # HNSW saw 40 candidates, few of them in the small collection
        assert len(found) == 5 and len(unknown) == 5
        assert [score for _, score in found] == sorted((score for _, score in found), reverse=True)
    finally:
        with session_scope() as s:
            s.execute(text(f"DROP INDEX IF EXISTS chunks_embedding_g{gid}"))
            s.execute(text("DELETE FROM chunks WHERE generation_id = :g"), {"g": gid})
            s.execute(text("DELETE FROM index_generations WHERE id = :g"), {"g": gid})


def test_reranker_on_reorders_by_cross_encoder_score(
    settings: Settings, corpus: str, tmp_path: Path
):
    model = build_tiny_cross_encoder(tmp_path / "tiny-cross-encoder")
    with_reranker = settings.model_copy(update={"reranker_model": str(model), "rerank_depth": 4})
    with session_scope() as s:
        collection = s.scalar(select(Collection.id).where(Collection.name == corpus))
        result = search(
            s, "what do cats do at night", k=3, collections=[collection], settings=with_reranker
        )
    assert result.reranked and result.reranker["status"] == "ok"
    rerank = [h.scores["rerank"] for h in result.hits]
    assert all(score is not None for score in rerank) and len(result.hits) == 3
    assert rerank == sorted(rerank, reverse=True)  # type: ignore[type-var]
    assert "rerank_ms" in result.timings
    with session_scope() as s:
        plain = search(
            s,
            "what do cats do at night",
            k=3,
            collections=[collection],
            settings=with_reranker,
            rerank=False,
        )
    assert not plain.reranked and all(h.scores["rerank"] is None for h in plain.hits)


def test_evals_retrieval_runs_end_to_end_and_is_stored(settings: Settings, tmp_path: Path):
    beir = tmp_path / "tinybeir"
    (beir / "qrels").mkdir(parents=True)
    docs = {
        "d1": ("Tea", "Green tea is steeped at eighty degrees."),
        "d2": ("Coffee", "Espresso uses finely ground coffee beans."),
        "d3": ("Cats", "Cats sleep during the day and hunt at night."),
    }
    (beir / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in docs.items())
    )
    (beir / "queries.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": q, "text": t})
            for q, t in [("q1", "temperature for green tea"), ("q2", "when do cats hunt")]
        )
    )
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    run = subprocess.run(
        [sys.executable, "-m", "evals", "retrieval", "--beir", str(beir), "--json"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["dataset"] == "tinybeir" and report["queries"] == 2
    modes = report["modes"]
    assert {"bm25", "dense", "hybrid"} <= set(modes)
    # each fixed fusion is reported beside the default, named by its method
    assert {m for m in modes if m.startswith("hybrid, ")} == {
        "hybrid, absolute 0.4",
        "hybrid, rrf",
        "hybrid, zscore",
        "hybrid, confidence",
        "hybrid, weighted 0.5",
    }
    for name, metrics in modes.items():
        assert set(metrics) >= {"ndcg@10", "recall@100", "mrr@10"}
        if not name.startswith("hybrid, "):  # the fixed fusions are ranked offline: no timings
            assert set(metrics) >= {"p50_ms", "p95_ms"}
        assert metrics["ndcg@10"] == 1.0  # three documents: each query's answer comes first
    with session_scope() as s:
        stored = s.scalar(
            select(func.count()).select_from(text("eval_runs")).where(text("id = :id")),
            {"id": report["run_id"]},
        )
    assert stored == 1
