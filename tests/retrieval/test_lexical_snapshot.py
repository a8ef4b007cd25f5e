"""BM25 snapshots: a process starts from the one on disk, replays what changed since, and
answers exactly as an index built from Postgres; a broken snapshot is rebuilt."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import session_scope
from app.models import Collection
from app.retrieval import lexical_snapshot as snapshot
from app.retrieval.lexical import BM25Index
from app.retrieval.lexical_store import LexicalFollower
from app.retrieval.tokenize import tokenize
from tests.helpers import new_collection, upload, wait_settled


def answers(follower: LexicalFollower, queries: list[str]) -> tuple[str, list]:
    with session_scope() as s, follower.synced(s) as index:
        return follower.loaded_from, [index.search(tokenize(q), 20) for q in queries]


def written(folder: Path, timeout: float = 30) -> list[Path]:
    """The snapshots in the folder, once one is there and none is being written."""
    deadline = time.monotonic() + timeout
    while not any(folder.glob("g*/meta.json")) or any(folder.glob(".g*")):
        assert time.monotonic() < deadline, "no snapshot written"
        time.sleep(0.05)
    return [p.parent for p in folder.glob("g*/meta.json")]


def test_a_new_process_maps_the_snapshot_and_replays_the_changes_since(
    client: TestClient, tmp_path: Path
):
    name, word = new_collection(), f"quorvex{uuid.uuid4().hex[:6]}"
    docs = [
        ("a.md", f"# A\n\nThe {word} engine burns hydrogen.".encode()),
        ("b.md", b"# B\n\nLighthouses guide ships past rocky coasts."),
    ]
    ids = [d["id"] for d in upload(client, name, *docs).json()["documents"]]
    wait_settled(client, ids)
    queries = [word, "hydrogen engine", "lighthouse ships", f"{word} lighthouse", "tea"]

    first = LexicalFollower(tmp_path)
    assert answers(first, queries)[0] == "database"
    written(tmp_path)

    # After the snapshot: a document added and one deleted.
    added = upload(client, name, ("c.md", f"# C\n\nA second {word} design.".encode()))
    wait_settled(client, [added.json()["documents"][0]["id"]])
    assert client.delete(f"/api/documents/{ids[0]}").status_code == 204

    loaded_from, from_snapshot = answers(LexicalFollower(tmp_path), queries)
    assert loaded_from == "snapshot"
    assert from_snapshot == answers(LexicalFollower(None), queries)[1]  # built from Postgres
    with session_scope() as s:
        cid = s.scalar(select(Collection.id).where(Collection.name == name))
        found = LexicalFollower(tmp_path)
        with found.synced(s) as index:
            hits = index.search(tokenize(word), 5, [cid])
            assert index.count_documents(ids) == 1  # the deleted one's chunks are gone
    assert len(hits) == 1  # c.md alone: a.md was deleted after the snapshot

    # A snapshot that cannot be read is rebuilt from Postgres, with the same answers.
    for path in written(tmp_path):
        (path / "vocab.txt").write_text("not the vocabulary")
    loaded_from, rebuilt = answers(LexicalFollower(tmp_path), queries)
    assert loaded_from == "database" and rebuilt == from_snapshot


def test_a_snapshot_is_never_read_for_a_database_made_again(tmp_path: Path):
    """Generation ids restart when a database is made again: the generation's creation time
    in the snapshot's name tells the two apart."""
    key = snapshot.Key(1, "2026-01-01T00:00:00+00:00", 5)
    index = BM25Index()
    index.add([(1, 1, 1, ["old"])])
    assert snapshot.save(index, tmp_path, key) is not None
    assert snapshot.newest(tmp_path, key) is not None
    again = snapshot.Key(1, "2026-06-01T00:00:00+00:00", 5)
    assert snapshot.newest(tmp_path, again) is None
    # nor one with changes the database does not have yet
    assert snapshot.newest(tmp_path, snapshot.Key(1, key.generation_made, 4)) is None


def test_a_snapshot_replaces_its_generations_older_ones_and_prune_keeps_the_named(
    tmp_path: Path,
):
    """A pending generation's snapshot (written by the worker) must not remove the live
    one's, nor the live one's the pending one's; dropped generations' go with `prune`."""
    index = BM25Index()
    index.add([(1, 1, 1, ["kept"])])
    live, pending = (snapshot.Key(g, f"2026-12-0{g}T00:00:00+00:00", 5) for g in (1, 2))
    for key in (live, pending, snapshot.Key(1, live.generation_made, 9)):
        assert snapshot.save(index, tmp_path, key) is not None
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"{live.prefix}c9", f"{pending.prefix}c5"]  # c5 of the live one replaced
    assert snapshot.prune(tmp_path, {pending.prefix}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{pending.prefix}c5"]
