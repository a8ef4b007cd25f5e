"""The embedding model and the cross-encoder on ONNX Runtime: exported once from the weights
on disk, cached, and giving what torch gives."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.ingest import onnx
from app.ingest.embed import OnnxEmbedder, TorchEmbedder, resolve_model
from app.retrieval.rerank import load_reranker
from tests.helpers import build_tiny_cross_encoder

TEXTS = [
    "Aspirin lowers the risk of a second heart attack.",
    "Le thé vert contient de la caféine; 東京は日本の首都です。",
    "x",
    "A long passage " + "about protein folding and the shapes of enzymes " * 60,  # > 256 tokens
    *[f"Sentence number {i} about topic {i % 7}." for i in range(40)],
]


@pytest.fixture(scope="module")
def embedders(settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    cache = settings.model_copy(update={"model_cache_dir": tmp_path_factory.mktemp("onnx")})
    name = settings.embedding_model
    return OnnxEmbedder(name, cache), TorchEmbedder(name, cache), cache


def test_onnx_vectors_match_torch(embedders):
    fast, reference, _ = embedders
    assert fast.dimension == reference.dimension == 384
    assert fast.max_tokens == reference.max_tokens
    a, b = fast.encode(TEXTS, 8), reference.encode(TEXTS, 8)
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    # A query alone gives the vector it gets in a batch.
    assert float(fast.encode([TEXTS[0]])[0] @ a[0]) >= 0.99999
    assert fast.count_tokens(TEXTS[:3]) == reference.count_tokens(TEXTS[:3])


def test_the_export_is_made_once_and_reused(embedders):
    fast, _, settings = embedders
    folders = [p for p in settings.model_cache_path.iterdir() if p.name.startswith("embedder-")]
    assert len(folders) == 1 and (folders[0] / "model.onnx").is_file()
    made = (folders[0] / "meta.json").stat().st_mtime_ns
    again = OnnxEmbedder(settings.embedding_model, settings)
    assert (folders[0] / "meta.json").stat().st_mtime_ns == made
    assert float(again.encode(["same"])[0] @ fast.encode(["same"])[0]) >= 0.99999


def _export_in_a_process(cache: str, source: str) -> str:
    folder, _ = onnx.cached_export(
        "embedder", Path(source), Path(cache), onnx.export_sentence_transformer(Path(source))
    )
    return str(folder)


@pytest.mark.slow
def test_processes_starting_together_export_once(tmp_path: Path, settings: Settings):
    source = resolve_model(settings.embedding_model)
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        folders = pool.starmap(_export_in_a_process, [(str(tmp_path), source)] * 2)
    assert folders[0] == folders[1]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [
        Path(folders[0]).name
    ]


def test_onnx_cross_encoder_scores_match_torch(settings: Settings, tmp_path: Path):
    model = str(build_tiny_cross_encoder(tmp_path / "tiny-cross-encoder"))
    cache = settings.model_copy(update={"model_cache_dir": tmp_path / "cache"})
    fast = load_reranker(model, cache)
    reference = load_reranker(model, cache.model_copy(update={"reranker_backend": "torch"}))
    assert fast.loaded and reference.loaded, (fast.detail, reference.detail)
    assert "(onnx)" in fast.detail and "(torch)" in reference.detail
    passages = ["cats hunt at night", "the tower was built in 1889", "x " * 400]
    a = fast.score("what do cats do", passages)
    b = reference.score("what do cats do", passages)
    assert np.allclose(a, b, atol=1e-4), (a, b)


def test_the_web_process_needs_no_torch_to_embed(settings: Settings, tmp_path: Path):
    """With ONNX, a process that only searches never imports torch (less memory, and no
    OpenMP threads to fight over the cores)."""
    import subprocess

    from app.ingest.embed import get_embedder

    get_embedder(settings.embedding_model)  # exported (with torch) into DATA_DIR once
    code = (
        "import sys; from app.ingest.embed import get_embedder; "
        "get_embedder().encode(['a query']); print('torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "DATA_DIR": str(settings.data_path),
            "HOME": str(tmp_path),
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
