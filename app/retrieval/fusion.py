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
- `zscore`: each retriever's scores standardised by the mean and standard deviation of its
  own top list (its `FUSION_DEPTH` best), then added: a retriever counts by how far a
  candidate stands out from what it usually returns for this query, on no fixed scale.
- `confidence`: as `zscore`, each retriever's part weighted by its confidence on this query:
  the z-score of its own best hit (how far its top stands out). A retriever whose list is
  flat for a query (it found nothing that stands out) hardly moves the order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FusionMethod = Literal["rrf", "weighted", "absolute", "zscore", "confidence"]
RRF_K = 60


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    bm25: float  # BM25 on an absolute scale, 0 to 1 (see BM25Index.bounds); 0: no term
    dense: float  # cosine similarity
    bm25_top: bool = False  # in BM25's own top list
    dense_top: bool = False  # in the dense retriever's own top list


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


def _standardised(values: dict[int, float], own: list[int]) -> dict[int, float]:
    """Every candidate's score as standard deviations from the mean of the retriever's own
    top list (all zero when that list is empty or flat: the retriever says nothing)."""
    scores = [values[c] for c in own]
    if len(scores) < 2:
        return dict.fromkeys(values, 0.0)
    mean = sum(scores) / len(scores)
    sd = (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5
    if sd <= 1e-12:
        return dict.fromkeys(values, 0.0)
    return {c: (v - mean) / sd for c, v in values.items()}


def _confidence(z: dict[int, float]) -> float:
    """How far the retriever's best candidate stands out from its list (>= 0)."""
    return max(0.0, max(z.values(), default=0.0))


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
    elif method in ("zscore", "confidence"):
        zb = _standardised(bm25, [c.chunk_id for c in candidates if c.bm25_top])
        zd = _standardised(dense, [c.chunk_id for c in candidates if c.dense_top])
        wb, wd = (1.0, 1.0) if method == "zscore" else (_confidence(zb), _confidence(zd))
        fused = {c: wb * zb[c] + wd * zd[c] for c in bm25}
    else:
        b, d = _minmax(bm25), _minmax(dense)
        fused = {c: dense_weight * d[c] + (1.0 - dense_weight) * b[c] for c in bm25}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True)
class Fusion:
    method: FusionMethod
    dense_weight: float
    source: str  # "default", "eval set", "feedback"

    @property
    def name(self) -> str:
        return fusion_name(self.method, self.dense_weight)

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "dense_weight": self.dense_weight, "source": self.source}


def fusion_name(method: str, dense_weight: float) -> str:
    return f"{method} {dense_weight:.1f}" if method in ("absolute", "weighted") else method
