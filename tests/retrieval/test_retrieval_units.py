"""BM25 against rank-bm25 (BM25Plus), fusion, tokenisation, the dense scan plan, query
embedding: pure code."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Plus

from app.ingest.embed import get_embedder
from app.retrieval import dense
from app.retrieval.fusion import Candidate, fuse
from app.retrieval.lexical import BM25Index
from app.retrieval.tokenize import tokenize

CORPUS = [
    "The cat sat on the mat while the dog slept.",
    "Dogs and cats are common household pets in many countries.",
    "Stock markets fell sharply as investors feared higher interest rates.",
    "Interest rates were raised by the central bank to curb inflation.",
    "The mat was red, and the cat liked sitting on red things.",
    "Inflation reached its highest level in forty years last spring.",
    "A dog barked at the mailman every single morning of the week.",
    "Cats sleep for most of the day and hunt at night.",
    "Central banks in Europe and Asia followed with their own rate increases.",
    "Pets need food, water, exercise and regular visits to the vet.",
    "The weather was cold and rainy during the whole week.",
    "Investors moved money from stocks into government bonds.",
]
QUERIES = [
    "cat on the mat",
    "central bank interest rates inflation",
    "dog dog dog barking",  # repeated terms count again
    "pets",
    "the",  # stop word only: nothing
    "cat",  # in few chunks
    "weather forecast",
    "unknownword",
]


def reference(docs: list[list[str]]) -> BM25Plus:
    return BM25Plus(docs)


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_rank_bm25(query: str):
    tokens = [tokenize(t) for t in CORPUS]
    index = BM25Index()
    index.add((i, i, 1, t) for i, t in enumerate(tokens[:7]))
    index.add((i, i, 2, t) for i, t in enumerate(tokens[7:], start=7))  # a second segment
    expected = reference(tokens).get_scores(tokenize(query))
    found = index.matches(tokenize(query))
    got = np.full(len(CORPUS), index.bounds(tokenize(query))[0])  # chunks without a term
    got[found.ids] = found.scores
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_scores_stay_equal_after_removals_and_merges():
    tokens = [tokenize(t) for t in CORPUS]
    index = BM25Index()
    for i, t in enumerate(tokens):  # one segment per chunk: forces merges
        index.add([(i, i, 1, t)])
    assert len(index.segments) <= 8
    index.remove_documents([3, 8])
    live = [i for i in range(len(CORPUS)) if i not in (3, 8)]
    ref = reference([tokens[i] for i in live])
    for query in QUERIES:
        expected = ref.get_scores(tokenize(query))
        ids, scores, least, _ = index.matches(tokenize(query))
        got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        np.testing.assert_allclose([got.get(i, least) for i in live], expected, atol=1e-12)
        assert not {3, 8} & set(ids.tolist())


def test_a_merge_leaves_a_large_segment_and_removals_still_find_their_rows():
    tokens = [tokenize(t) for t in CORPUS] * 3
    index = BM25Index()
    index.add((i, i // 2, 1, tokens[i]) for i in range(24))  # large; documents of 2 chunks
    for i in range(24, 36):
        index.add([(i, i // 2, 1, tokens[i])])  # small ones pile up and merge
    assert len(index.segments) <= 8
    assert len(index.segments[0].live) == 24  # the large segment was not rewritten
    index.remove_documents([3, 13, 17])  # rows in the large segment and in merged ones
    live = [i for i in range(36) if i // 2 not in (3, 13, 17)]
    ref = reference([tokens[i] for i in live])
    for query in QUERIES:
        q = tokenize(query)
        ids, scores, least, _ = index.matches(q)
        got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        np.testing.assert_allclose([got.get(i, least) for i in live], ref.get_scores(q), atol=1e-12)
    assert len(index) == len(live)


def test_scores_stay_equal_when_queries_and_changes_interleave():
    """Cached document frequencies, collection masks and counts follow every add and removal
    (the second removal hits segments whose frequencies the queries after the first cached)."""
    tokens = [tokenize(t) for t in CORPUS]
    index = BM25Index()
    live: list[int] = []
    steps = [
        ("add", range(0, 5)),
        ("add", range(5, 9)),
        ("remove", [1, 6]),
        ("add", [9, 10, 11]),
        ("remove", [0, 7, 10]),
    ]
    for action, ids in steps:
        if action == "add":
            index.add((i, i, 1 + i % 2, tokens[i]) for i in ids)
            live += list(ids)
        else:
            index.remove_documents(ids)
            live = [i for i in live if i not in ids]
        ref = reference([tokens[i] for i in live])
        for query in QUERIES:
            q = tokenize(query)
            found, scores, least, _ = index.matches(q)
            got = dict(zip(found.tolist(), scores.tolist(), strict=True))
            want = ref.get_scores(q)
            np.testing.assert_allclose([got.get(i, least) for i in live], want, atol=1e-12)
            odd = index.matches(q, allowed=[2]).ids
            assert set(odd.tolist()) == {i for i in found.tolist() if i % 2 == 1}
        assert index.collection_counts() == {
            c: n for c in (1, 2) if (n := sum(1 for i in live if 1 + i % 2 == c))
        }


@pytest.mark.parametrize("query", QUERIES)
def test_statistics_come_from_the_collections_searched(query: str):
    """Scores over some collections equal rank-bm25's over their chunks alone: what other
    collections hold neither moves them nor shows through them."""
    tokens = [tokenize(t) for t in CORPUS]
    mine = [i for i in range(len(CORPUS)) if i % 3 == 0]
    index = BM25Index()
    index.add((i, i, 1 if i in mine else 2 + i % 2, t) for i, t in enumerate(tokens))
    q = tokenize(query)
    ids, scores, least, most = index.matches(q, allowed=[1])
    got = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    want = reference([tokens[i] for i in mine]).get_scores(q)
    np.testing.assert_allclose([got.get(i, least) for i in mine], want, atol=1e-12)
    assert (least, most) == index.bounds(q, allowed=[1])
    alone = BM25Index()
    alone.add((i, i, 1, tokens[i]) for i in mine)
    assert (least, most) == pytest.approx(alone.bounds(q))
    everything = index.matches(q, allowed=[1, 2, 3])  # all collections: the global statistics
    np.testing.assert_array_equal(everything.scores, index.matches(q).scores)


def test_collection_filter_applies_before_ranking():
    index = BM25Index()
    index.add((i, i, 1 if i % 2 else 2, tokenize(t)) for i, t in enumerate(CORPUS))
    top = index.search(tokenize("cat dog pets"), k=3, allowed=[1])
    assert len(top) == 3 and all(chunk_id % 2 == 1 for chunk_id, _ in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert index.collection_counts() == {1: 6, 2: 6}


def test_tokenizer_lowercases_stems_and_drops_stop_words():
    assert tokenize("The Running dogs AND cats") == ["run", "dog", "cat"]
    assert tokenize("Running") == tokenize("runs") == ["run"]
    assert tokenize("a the of") == []


def test_rrf_sums_reciprocal_ranks_of_both_rankings():
    candidates = [
        Candidate(1, bm25=9.0, dense=0.10),  # bm25 rank 1, dense rank 4
        Candidate(2, bm25=5.0, dense=0.80),  # 2 and 2
        Candidate(3, bm25=0.0, dense=0.90),  # no term match; dense rank 1
        Candidate(4, bm25=4.0, dense=0.50),  # 3 and 3
    ]
    scores = dict(fuse(candidates, "rrf"))
    assert scores[1] == pytest.approx(1 / 61 + 1 / 64)
    assert scores[2] == pytest.approx(2 / 62)
    assert scores[3] == pytest.approx(1 / 61)  # no bm25 contribution without a match
    assert scores[4] == pytest.approx(2 / 63)
    assert [c for c, _ in fuse(candidates, "rrf")] == [2, 1, 4, 3]


@pytest.mark.parametrize(("weight", "first"), [(0.0, 1), (1.0, 3), (0.5, 2)])
def test_weighted_fusion_normalises_each_list(weight: float, first: int):
    candidates = [
        Candidate(1, bm25=9.0, dense=0.10),
        Candidate(2, bm25=6.0, dense=0.80),
        Candidate(3, bm25=0.0, dense=0.90),
    ]
    ranked = fuse(candidates, "weighted", dense_weight=weight)
    assert ranked[0][0] == first
    assert all(0.0 <= score <= 1.0 for _, score in ranked)


def test_a_two_document_collection_still_gets_bm25():
    """Okapi's idf is 0 for a term in one of two documents; BM25+ keeps it positive."""
    index = BM25Index()
    index.add([(1, 1, 1, tokenize("the red fox")), (2, 2, 1, tokenize("a blue whale"))])
    (top, score), *_ = index.search(tokenize("red fox"), k=2)
    least, most = index.bounds(tokenize("red fox"))
    assert top == 1 and least < score <= most and 0 < least < most


def test_bounds_place_scores_between_least_and_most():
    index = BM25Index()
    index.add((i, i, 1, tokenize(t)) for i, t in enumerate(CORPUS))
    for query in QUERIES:
        _, scores, least, most = index.matches(tokenize(query))
        assert (least, most) == index.bounds(tokenize(query))
        assert all(least < s <= most for s in scores)


@pytest.mark.parametrize(
    ("allowed_rows", "total_rows", "plan"),
    [
        (None, None, 100),  # no filter: the index, ef_search at least depth
        (100_000, 100_000, 100),  # a filter that leaves nothing out
        (5, 100_000, None),  # few chunks: exact
        (10_000, 100_000, None),  # would need ef_search 2,000: the scan would come back short
        (20_000, 100_000, 1000),  # twice depth expected among the candidates
        (50_000, 100_000, 400),
        (1_500, 3_000, None),  # an exact scan of this many is as quick as the index
    ],
)
def test_dense_scan_plan(allowed_rows, total_rows, plan):
    assert dense.scan_plan(100, 40, allowed_rows, total_rows) == plan


def test_a_query_gets_the_vector_its_text_gets_in_a_batch():
    """A single text takes a shorter path through the model than a batch; the vectors must
    not differ, or queries would be compared with chunks in a slightly different space."""
    embedder = get_embedder()
    texts = ["cat on the mat", CORPUS[3], " ".join(CORPUS * 4)]  # the last one is cut at 256
    batch = embedder.encode(texts)
    for text, expected in zip(texts, batch, strict=True):
        (single,) = embedder.encode([text])
        assert single.dtype == np.float32
        np.testing.assert_allclose(single, expected, atol=1e-5)
        assert abs(float(np.linalg.norm(single)) - 1.0) < 1e-5
