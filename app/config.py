"""One settings class for the whole product.

Every value comes from the environment (or a `.env` file) under the upper-case name of its
field. A URL that is set is used as it is; one that is unset makes `groundwork serve`, the CLI
and the tests start the embedded part under `DATA_DIR` (see `app.infra.parts`).
Nothing else in the code base reads `os.environ` for configuration.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PRODUCTION_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


SEARCH_K_MAX = 100  # the most passages one search returns (API, CLI, settings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Real parts. Unset URL: the embedded default starts under DATA_DIR.
    database_url: str | None = Field(None, description="Postgres with pgvector.")
    redis_url: str | None = Field(None, description="Redis: Celery broker and result store.")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible API, e.g. vLLM's /v1.")
    llm_model: str = Field("SmolLM2-135M-Instruct", description="Model name sent to the LLM.")
    llm_api_key: SecretStr | None = Field(None, description="Bearer token for the LLM API.")
    llm_context_tokens: int = Field(8192, ge=512, description="The LLM's context window.")
    llm_connect_timeout_s: float = Field(2.0, gt=0, description="Connecting to the LLM.")
    llm_first_token_timeout_s: float = Field(30.0, gt=0, description="Waiting for a token.")
    llm_total_timeout_s: float = Field(180.0, gt=0, description="Whole answer.")

    embedding_model: str = Field(PRODUCTION_EMBEDDING_MODEL, description="sentence-transformers")
    reranker_model: str = Field(
        "cross-encoder/ms-marco-MiniLM-L-6-v2", description="CrossEncoder; empty turns it off."
    )
    embedding_backend: Literal["onnx", "torch"] = Field(
        "onnx", description="Run the embedding model with ONNX Runtime or torch."
    )
    reranker_backend: Literal["onnx", "torch"] = Field(
        "onnx", description="Run the cross-encoder with ONNX Runtime or torch."
    )
    model_cache_dir: Path | None = Field(
        None, description="Where models exported to ONNX are kept (default DATA_DIR/models)."
    )

    data_dir: Path = Field(Path("data"), description="Embedded parts, secrets and temp files.")
    max_upload_mb: int = Field(50, gt=0, le=4096, description="Largest accepted file.")
    max_pdf_pages: int = Field(5000, ge=1, description="A PDF with more pages fails.")
    max_text_chars: int = Field(
        5_000_000, ge=1000, description="A document with more extracted text fails."
    )
    secret_key: SecretStr | None = Field(
        None, description="Signs sessions and CSRF tokens; generated under DATA_DIR when unset."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    collection_creators: Literal["admins", "members"] = Field(
        "admins", description="Who may create collections (members read what they create)."
    )

    # Operations
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token /metrics asks of any client but loopback."
    )
    trace_retention_days: int = Field(
        30, ge=0, le=3650, description="Answer traces older than this are deleted; 0 keeps them."
    )

    # Workers
    worker_concurrency: int = Field(2, ge=1, le=64, description="Processes per Celery worker.")
    torch_threads: int = Field(0, ge=0, le=256, description="0: one per core.")
    task_time_limit_s: int = Field(1800, ge=5, description="Hard limit on one ingestion task.")
    broker_visibility_timeout_s: int = Field(
        3600, ge=10, description="Redis redelivers an unacknowledged task after this."
    )
    max_task_attempts: int = Field(3, ge=1, le=20, description="Crashes before `failed`.")
    document_time_limit_s: float = Field(
        300.0, gt=0, description="Reading (parsing and chunking) one document."
    )
    ocr_max_pages: int = Field(
        100, ge=0, le=100_000, description="Pages of one document read by OCR; 0 turns OCR off."
    )
    ocr_page_time_limit_s: float = Field(60.0, gt=0, description="OCR of one page.")
    worker_memory_limit_mb: int = Field(
        4096, ge=0, description="Address-space ceiling per pool process; 0: none."
    )
    worker_grace_s: float = Field(
        60.0, gt=0, description="/healthz answers 503 when no worker answered for this long."
    )

    # Web pages
    fetch_allow_hosts: str = Field(
        "",
        description="Hosts fetched even at loopback, private or link-local addresses "
        "(comma-separated names or IPs).",
    )
    fetch_max_mb: int = Field(10, gt=0, le=1024, description="Largest page or sitemap fetched.")
    fetch_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Fetching one URL, redirects and robots.txt included."
    )
    fetch_sitemap_max_pages: int = Field(
        200, ge=1, le=50_000, description="Pages one sitemap brings at most."
    )

    # Search
    search_k: int = Field(10, ge=1, le=SEARCH_K_MAX, description="Passages a search returns.")
    # The default without labels: chosen by the rule written down before the results (README,
    # "Choosing the fusion"): the best worst case over SciFact, SQuAD part 1 and dbpedia-5k.
    # A collection with labels (an eval set, answers rated up) gets its own calibration.
    fusion_method: Literal["rrf", "weighted", "absolute", "zscore", "confidence"] = Field(
        "rrf", description="Hybrid fusion."
    )
    # Also the scale of a passage's relevance (ABSTAIN_THRESHOLD), whatever the fusion.
    fusion_dense_weight: float = Field(
        0.4, ge=0.0, le=1.0, description="Dense share of the fused score (weighted, absolute)."
    )
    fusion_depth: int = Field(100, ge=10, le=1000, description="Candidates from each list.")
    rerank_depth: int = Field(50, ge=1, le=500, description="Fused candidates reranked.")
    hnsw_ef_search: int = Field(100, ge=10, le=1000, description="pgvector HNSW search width.")

    # Answers
    answer_passages: int = Field(5, ge=1, le=20, description="Passages given to the LLM.")
    answer_max_tokens: int = Field(300, ge=16, le=4096, description="Longest answer.")
    # Both chosen on SQuAD 2.0 part 1 (`python -m evals tune-thresholds`).
    abstain_threshold: float = Field(
        0.276, description="Decline without the LLM below this relevance (no reranker)."
    )
    abstain_rerank_threshold: float = Field(
        -5.0, description="Decline below this cross-encoder score (with a reranker)."
    )
    citation_support_threshold: float = Field(
        0.70, ge=-1.0, le=1.0, description="Cosine a sentence needs to count as supported."
    )

    # Chunking and embedding
    chunk_tokens: int = Field(200, ge=32, le=8192, description="Token budget of one chunk.")
    chunk_overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between chunks.")
    embed_batch_size: int = Field(32, ge=1, le=1024)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        raise ValueError("must start with postgresql:// (or postgresql+psycopg://)")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return value

    @field_validator("llm_base_url")
    @classmethod
    def _llm_base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.task_time_limit_s >= self.broker_visibility_timeout_s:
            raise ValueError(
                "TASK_TIME_LIMIT_S must be shorter than BROKER_VISIBILITY_TIMEOUT_S, "
                "or Redis hands a running task to a second worker"
            )
        if self.chunk_overlap_tokens >= self.chunk_tokens // 2:
            raise ValueError("CHUNK_OVERLAP_TOKENS must be less than half of CHUNK_TOKENS")
        return self

    @cached_property
    def data_path(self) -> Path:
        """DATA_DIR made absolute and created."""
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def metrics_path(self) -> Path:
        """Where every process writes its Prometheus counters (multiprocess mode)."""
        return self.data_path / "metrics"

    @property
    def members_may_create(self) -> bool:
        return self.collection_creators == "members"

    @property
    def model_cache_path(self) -> Path:
        return (self.model_cache_dir or self.data_path / "models").expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def fetch_max_bytes(self) -> int:
        return self.fetch_max_mb * 1024 * 1024

    @property
    def fetch_allowed(self) -> frozenset[str]:
        """FETCH_ALLOW_HOSTS as lower-case host names (IPv6 without brackets)."""
        hosts = (
            h.strip().lower().strip("[]").rstrip(".") for h in self.fetch_allow_hosts.split(",")
        )
        return frozenset(h for h in hosts if h)

    @cached_property
    def secret(self) -> str:
        """SECRET_KEY, or a key made once and kept under DATA_DIR so sessions survive restarts."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_path / "secret_key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def child_env(self) -> dict[str, str]:
        """Environment for a child process (worker) so that it uses the same parts."""
        env = dict(os.environ)
        for name in ("database_url", "redis_url", "llm_base_url"):
            value = getattr(self, name)
            if value:
                env[name.upper()] = value
        env["DATA_DIR"] = str(self.data_path)
        # prometheus_client reads this when a process makes its first metric: the worker and
        # its pool processes write their counters where /metrics reads them.
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_path)
        return env


class SettingsError(Exception):
    """A setting has an invalid value; the message names it."""


def describe_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        name = ".".join(str(p) for p in e["loc"]).upper() or "settings"
        lines.append(f"invalid setting {name}: {e['msg']}")
    return "; ".join(lines)


_current: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _current
    if _current is None:
        try:
            _current = Settings()
        except ValidationError as err:
            raise SettingsError(describe_validation_error(err)) from None
    return _current


def use_settings(settings: Settings) -> None:
    """Replace the process's settings (after embedded parts have filled in their URLs)."""
    global _current
    _current = settings
