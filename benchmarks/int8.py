"""Would int8 embeddings hold quality? all-MiniLM-L6-v2 exported to ONNX (fp32, as the
product runs it) against onnxruntime's dynamic int8 quantizations of the same graph: dense
exact search (numpy) over whole documents (title and text), nDCG@10 on SciFact's test queries
and on SQuAD 2.0 dev part 1 (question to paragraph), each model's vectors' cosine to fp32's,
and documents embedded per second. One run; prints one table.

    .venv/bin/python benchmarks/int8.py
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from app.config import Settings
from app.ingest.embed import OnnxEmbedder
from app.retrieval.evaluation import metrics
from benchmarks.common import ROOT, SCIFACT, machine, table
from evals.datasets import load_beir, load_squad, squad_as_retrieval

SQUAD = ROOT.parent / "shared" / "datasets" / "squad-v2-dev-part1" / "dev-v2.0-part1.json"
VARIANTS = {
    "int8 per-tensor": {"per_channel": False},
    "int8 per-channel": {"per_channel": True},
    "int8 per-channel, reduce_range": {"per_channel": True, "reduce_range": True},
}


def quantized(fp: OnnxEmbedder, source: Path, out: Path, options: dict) -> OnnxEmbedder:
    quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, **options)
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = (
        fp.model.session.get_session_options().intra_op_num_threads
    )
    model = copy.copy(fp.model)
    model.session = ort.InferenceSession(
        str(out), session_options, providers=["CPUExecutionProvider"]
    )
    embedder = copy.copy(fp)
    embedder.model = model
    return embedder


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="groundwork-int8-") as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))
        fp = OnnxEmbedder(settings.embedding_model, settings)
        exported = next(settings.model_cache_path.glob("embedder-*")) / "model.onnx"
        models = {"fp32": fp}
        for name, options in VARIANTS.items():
            out = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.onnx"
            models[name] = quantized(fp, exported, out, options)
        sets = {
            "SciFact": load_beir(SCIFACT),
            "SQuAD part 1": squad_as_retrieval(load_squad(SQUAD)),
        }
        found: dict[str, dict[str, tuple[float, float, float, float]]] = {}
        for set_name, data in sets.items():
            ids = list(data.corpus)
            texts = [f"{t}\n{x}" if t else x for t, x in (data.corpus[i] for i in ids)]
            qids = list(data.queries)
            reference = None
            for name, embedder in models.items():
                started = time.perf_counter()
                docs = embedder.encode(texts)
                rate = len(texts) / (time.perf_counter() - started)
                queries = embedder.encode([data.queries[q] for q in qids])
                top = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
                runs = {q: [ids[j] for j in top[i]] for i, q in enumerate(qids)}
                ndcg = metrics({q: data.qrels[q] for q in qids}, runs)["ndcg@10"]
                reference = docs if reference is None else reference
                cosine = (docs * reference).sum(axis=1)
                found.setdefault(name, {})[set_name] = (
                    ndcg,
                    float(cosine.mean()),
                    float(cosine.min()),
                    rate,
                )
    print(machine())
    fp32_rate = found["fp32"]["SciFact"][3]
    rows: list[list[object]] = []
    for name, by_set in found.items():
        sci, squad = by_set["SciFact"], by_set["SQuAD part 1"]
        rows.append(
            [
                name,
                f"{sci[0]:.4f}",
                f"{squad[0]:.4f}",
                f"{sci[1]:.4f} / {sci[2]:.4f}",
                f"{sci[3]:.1f}",
                f"{sci[3] / fp32_rate:.2f}",
            ]
        )
    print(
        table(
            "Int8 against fp32 (dense exact search over whole documents)",
            [
                "model",
                "SciFact nDCG@10",
                "SQuAD nDCG@10",
                "cosine to fp32 mean / min (SciFact)",
                "SciFact docs/s",
                "speed ratio",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
