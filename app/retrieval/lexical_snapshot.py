"""A BM25 index on disk, so that a process starts by mapping it instead of rebuilding it
from Postgres (80 s and more at a million chunks).

A snapshot is a folder under DATA_DIR/bm25/<database>/ named by the generation it holds and
the last change-log id it includes. Each segment's arrays are .npy files; the postings (the
bulk) are memory-mapped read-only, so every process on the machine shares one copy in the
page cache and reads only the pages its queries touch. The vocabulary is one term a line, in
term-id order. A snapshot is a cache: it is written to a temporary folder and renamed into
place, never changed after, and anything wrong with it (missing, another format, unreadable)
means the index is built from Postgres as before. The change log in Postgres says what
happened since the snapshot, and the caller replays it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from app.retrieval.lexical import BM25Index, Segment

log = logging.getLogger(__name__)

FORMAT = 1
ARRAYS = ("chunk_ids", "document_ids", "collection_ids", "lengths", "live")
POSTINGS = ("data", "indices", "indptr")


@dataclass(frozen=True)
class Key:
    """Which index a snapshot holds: the generation (its id and when it was made, so that a
    database made again with the same ids is told apart) and the last change included."""

    generation_id: int
    generation_made: str  # the generation's created_at, ISO format
    last_change: int

    @property
    def prefix(self) -> str:
        made = hashlib.sha256(self.generation_made.encode()).hexdigest()[:8]
        return f"g{self.generation_id}-{made}-"

    @property
    def name(self) -> str:
        return f"{self.prefix}c{self.last_change}"


def folder_for(data_dir: Path, database_url: str) -> Path:
    """The snapshots of one database (several may share a data directory)."""
    return data_dir / "bm25" / hashlib.sha256(database_url.encode()).hexdigest()[:12]


def newest(folder: Path, key: Key) -> tuple[Path, int] | None:
    """The snapshot of this generation with the most changes not after `key.last_change`,
    and its last change."""
    best: tuple[Path, int] | None = None
    if not folder.is_dir():
        return None
    for path in folder.iterdir():
        if not path.name.startswith(key.prefix) or not (path / "meta.json").exists():
            continue
        try:
            change = int(path.name.removeprefix(key.prefix).removeprefix("c"))
        except ValueError:
            continue
        if change <= key.last_change and (best is None or change > best[1]):
            best = (path, change)
    return best


def save(index: BM25Index, folder: Path, key: Key) -> Path | None:
    """Write the index as the snapshot `key` (unless it exists), then remove the older
    snapshots of its generation (another generation's, a pending or a retired one that may
    serve again, stay until `prune`). Returns where it is; None when it could not be
    written (logged: the index in memory serves all the same)."""
    target = folder / key.name
    if (target / "meta.json").exists():
        return target
    tmp = folder / f".{key.name}.{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        terms = list(index.vocab)
        (tmp / "vocab.txt").write_text("\n".join(terms), encoding="utf-8")
        for n, segment in enumerate(index.segments):
            for name in ARRAYS:
                np.save(tmp / f"{n}.{name}.npy", getattr(segment, name))
            for name in POSTINGS:
                np.save(tmp / f"{n}.tf.{name}.npy", getattr(segment.tf, name))
        meta = {
            "format": FORMAT,
            "segments": [list(s.tf.shape) for s in index.segments],
            "terms": len(terms),
            "params": [index.k1, index.b, index.delta],
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        tmp.rename(target)
    except OSError as err:
        log.warning("could not write the BM25 snapshot %s: %s", target, err)
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    for other in folder.iterdir():
        if other != target and other.name.startswith(key.prefix):  # older, same generation
            # A process that mapped it keeps its pages: unlinking does not take them away.
            shutil.rmtree(other, ignore_errors=True)
    return target


def prune(folder: Path, keep: set[str]) -> int:
    """Remove the snapshots of every generation but those whose `Key.prefix` is in `keep`
    (the others were dropped, or belong to a database made again). Returns how many."""
    if not folder.is_dir():
        return 0
    gone = [
        path
        for path in folder.iterdir()
        if not path.name.startswith(".") and not path.name.startswith(tuple(keep))
    ]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return len(gone)


def load(path: Path) -> BM25Index | None:
    """The index in a snapshot, its postings memory-mapped; None if it cannot be read."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            return None
        k1, b, delta = meta["params"]
        index = BM25Index(k1, b, delta)
        text = (path / "vocab.txt").read_text(encoding="utf-8")
        terms = text.split("\n") if text else []
        if len(terms) != meta["terms"]:
            return None
        index.vocab = dict(zip(terms, range(len(terms)), strict=True))
        for n, shape in enumerate(meta["segments"]):
            arrays = {name: np.load(path / f"{n}.{name}.npy") for name in ARRAYS}
            postings = [np.load(path / f"{n}.tf.{p}.npy", mmap_mode="r") for p in POSTINGS]
            tf = sparse.csc_matrix(tuple(postings), shape=tuple(shape), copy=False)
            live = arrays.pop("live")
            index.segments.append(
                Segment(**arrays, tf=tf, live=live, dead=int(len(live) - live.sum()))
            )
        return index
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("could not read the BM25 snapshot %s: %s", path, err)
        return None
