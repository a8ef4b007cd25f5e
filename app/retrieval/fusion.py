"""Fusing the BM25 and dense lists. Pure functions over candidate scores.

Both methods work on the union of the two candidate lists (each `FUSION_DEPTH` deep, 100 by
default), with both scores known for every candidate: a chunk that one retriever ranked 150th
still has its exact score from that retriever, so fusing cannot lose what a shallow list
would have cut.

- `rrf`: reciprocal rank fusion, sum of 1 / (k + rank) over the two rankings of the union.
- `weighted`: min-max normalised scores over the union, then
  `weight * dense + (1 - weight) * bm25`.
- `absolute`: `weight * cosine + (1 - weight) * bm25`, BM25 placed between the least and the
  most any chunk could score for the query: both parts mean the same across queries, so the
  fused score can also decide when nothing is relevant enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FusionMethod = Literal["rrf", "weighted", "absolute"]
RRF_K = 60


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    bm25: float  # BM25 on an absolute scale, 0 to 1 (see BM25Index.bounds); 0: no term
    dense: float  # cosine similarity


def _ranks(values: dict[int, float]) -> dict[int, int]:
    order = sorted(values, key=lambda c: (-values[c], c))
    return {chunk_id: rank for rank, chunk_id in enumerate(order, start=1)}


def _minmax(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    if high <= low:
        return dict.fromkeys(values, 1.0 if high > 0 else 0.0)
    return {c: (v - low) / (high - low) for c, v in values.items()}


def fuse(
    candidates: list[Candidate],
    method: FusionMethod,
    dense_weight: float = 0.5,
    rrf_k: int = RRF_K,
) -> list[tuple[int, float]]:
    """(chunk id, fused score), best first; ties broken by chunk id."""
    bm25 = {c.chunk_id: c.bm25 for c in candidates}
    dense = {c.chunk_id: c.dense for c in candidates}
    if method == "rrf":
        bm25_rank, dense_rank = _ranks(bm25), _ranks(dense)
        fused = {
            c: (1.0 / (rrf_k + bm25_rank[c]) if bm25[c] > 0 else 0.0)
            + 1.0 / (rrf_k + dense_rank[c])
            for c in bm25
        }
    elif method == "absolute":
        fused = {c: dense_weight * dense[c] + (1.0 - dense_weight) * bm25[c] for c in bm25}
    else:
        b, d = _minmax(bm25), _minmax(dense)
        fused = {c: dense_weight * d[c] + (1.0 - dense_weight) * b[c] for c in bm25}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))
