"""Metadata filters: file type, document name (a glob), upload date range and labels. One
model, validated here, for every interface (the JSON API, the pages, the CLI, /v1 and MCP).

A filter narrows a search to the documents that match all of the fields given (any of the
file types, any of the labels). The search resolves them to document ids in SQL first and
restricts both retrievers to those documents before ranking, the way the collection filter
restricts them (`app.retrieval.search`): a filter that keeps five passages of 100,000 returns
all five. BM25's statistics stay those of the collections searched, so a passage scores the
same with or without a filter.

Labels are given at upload (lower case, 1 to 64 letters, digits, spaces and `.:/-_`, at most
20 a document)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import any_of
from app.errors import Invalid
from app.ingest.detect import DOCX, HTML, MARKDOWN, PDF, TEXT
from app.models import Document

FileType = Literal["pdf", "docx", "html", "markdown", "text"]
CONTENT_TYPES: dict[str, str] = {
    "pdf": PDF,
    "docx": DOCX,
    "html": HTML,
    "markdown": MARKDOWN,
    "text": TEXT,
}
FILTER_NAMES = ("file_types", "document", "uploaded_from", "uploaded_to", "labels")
MAX_LABELS = 20
MAX_GLOB = 255
_LABEL = re.compile(r"^[\w][\w .:/\-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_label(raw: str) -> str:
    label = " ".join(str(raw).split()).lower()
    if not _LABEL.match(label):
        shown = label[:70] + ("…" if len(label) > 70 else "")
        raise ValueError(
            f"a label is 1 to 64 letters, digits, spaces, dots, colons, slashes, dashes or "
            f"underscores, starting with a letter or digit (got {shown!r})"
        )
    return label


def check_labels(values: str | Iterable[str] | None) -> list[str]:
    """Labels from a list, or from text with commas between them (a form field, a flag).
    Raises Invalid (422)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    labels: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise Invalid("labels are text")
        for part in item.split(","):
            if part.strip():
                try:
                    labels.append(check_label(part))
                except ValueError as err:
                    raise Invalid(str(err)) from None
    labels = list(dict.fromkeys(labels))
    if len(labels) > MAX_LABELS:
        raise Invalid(f"at most {MAX_LABELS} labels")
    return labels


class Filters(BaseModel):
    """Narrow a search (or an answer) to some documents. Every field is optional; a document
    must match all the fields given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file_types: list[FileType] | None = Field(
        None, max_length=len(CONTENT_TYPES), description="any of: pdf, docx, html, markdown, text"
    )
    document: str | None = Field(
        None,
        max_length=MAX_GLOB,
        description="the document's file name, a glob: * any characters, ? one (any case)",
    )
    uploaded_from: date | None = Field(None, description="uploaded on or after this day (UTC)")
    uploaded_to: date | None = Field(None, description="uploaded on or before this day (UTC)")
    labels: list[str] | None = Field(
        None, max_length=MAX_LABELS, description="documents with any of these labels"
    )

    @field_validator("file_types", mode="before")
    @classmethod
    def _lower_types(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.strip().lower() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("file_types")
    @classmethod
    def _types(cls, value: list[str] | None) -> list[str] | None:
        return (list(dict.fromkeys(value)) or None) if value is not None else None

    @field_validator("uploaded_from", "uploaded_to", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        if value is None or isinstance(value, date):
            return value
        if not isinstance(value, str) or not _DAY.match(value.strip()):
            raise ValueError("a date is written YYYY-MM-DD")
        return value.strip()

    @field_validator("document")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if _CONTROL.search(value):
            raise ValueError("a document name has no control characters")
        if "/" in value or "\\" in value:
            raise ValueError("a document name has no folders: match the file name alone")
        return re.sub(r"\*{2,}", "*", value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return list(dict.fromkeys(check_label(v) for v in value)) or None

    @model_validator(mode="after")
    def _range(self) -> Filters:
        if self.uploaded_from and self.uploaded_to and self.uploaded_from > self.uploaded_to:
            raise ValueError("uploaded_from is after uploaded_to")
        return self

    @property
    def active(self) -> bool:
        return any(getattr(self, name) is not None for name in FILTER_NAMES)

    def describe(self) -> dict[str, Any]:
        """The fields given, as JSON values."""
        return self.model_dump(mode="json", exclude_none=True)

    def without(self, name: str, value: str | None = None) -> Filters:
        """These filters less one field (or one value of a list field): a removable chip."""
        current = getattr(self, name)
        if isinstance(current, list) and value is not None:
            kept = [v for v in current if v != value]
            return self.model_copy(update={name: kept or None})
        return self.model_copy(update={name: None})

    def chips(self) -> list[tuple[str, str | None, str]]:
        """(field, value of a list field or None, label) for each filter given, to show it."""
        out: list[tuple[str, str | None, str]] = []
        for t in self.file_types or []:
            out.append(("file_types", t, f"type: {t}"))
        if self.document:
            out.append(("document", None, f"name: {self.document}"))
        if self.uploaded_from:
            out.append(("uploaded_from", None, f"from {self.uploaded_from.isoformat()}"))
        if self.uploaded_to:
            out.append(("uploaded_to", None, f"to {self.uploaded_to.isoformat()}"))
        for label in self.labels or []:
            out.append(("labels", label, f"label: {label}"))
        return out

    def query(self) -> list[tuple[str, str]]:
        """As query-string pairs (the search page's links)."""
        pairs: list[tuple[str, str]] = []
        for name, value in self.describe().items():
            for v in value if isinstance(value, list) else [value]:
                pairs.append((name, str(v)))
        return pairs

    @classmethod
    def parse(
        cls,
        *,
        file_types: Sequence[str] | str | None = None,
        document: str | None = None,
        uploaded_from: str | None = None,
        uploaded_to: str | None = None,
        labels: Sequence[str] | str | None = None,
    ) -> Filters | None:
        """From text (query strings, form fields, command-line flags): empty means not
        given, list fields may also be written with commas. None when nothing is given;
        Invalid (422) for unknown file types, bad globs, dates or labels."""
        raw: dict[str, Any] = {
            "file_types": _split(file_types),
            "document": document or None,
            "uploaded_from": uploaded_from or None,
            "uploaded_to": uploaded_to or None,
            "labels": _split(labels),
        }
        try:
            filters = cls.model_validate({k: v for k, v in raw.items() if v is not None})
        except ValidationError as err:
            raise Invalid(validation_message(err, "filters")) from None
        return filters if filters.active else None


def _split(values: Sequence[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    out = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    return out or None


def validation_message(err: ValidationError, prefix: str = "") -> str:
    """The first error of a pydantic validation, with where it is: `filters.labels.0: …`."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def glob_pattern(glob: str) -> str:
    """A glob (* and ?) as a LIKE pattern, with LIKE's own wildcards and escape taken
    literally."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def document_ids(
    session: Session, filters: Filters, collections: Sequence[int] | None
) -> list[int]:
    """The documents (of the collections searched; all when None) that the filters keep."""
    stmt = select(Document.id)
    if collections is not None:
        if not collections:
            return []
        stmt = stmt.where(any_of(Document.collection_id, collections))
    if filters.file_types:
        stmt = stmt.where(Document.content_type.in_([CONTENT_TYPES[t] for t in filters.file_types]))
    if filters.document:
        stmt = stmt.where(Document.filename.ilike(glob_pattern(filters.document), escape="\\"))
    if filters.uploaded_from:
        stmt = stmt.where(Document.created_at >= _start_of(filters.uploaded_from))
    if filters.uploaded_to and filters.uploaded_to < date.max:
        stmt = stmt.where(Document.created_at < _start_of(filters.uploaded_to + timedelta(days=1)))
    if filters.labels:
        stmt = stmt.where(Document.labels.overlap(list(filters.labels)))
    return list(session.scalars(stmt.order_by(Document.id)))


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
