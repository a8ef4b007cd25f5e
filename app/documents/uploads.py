"""Receiving uploads as a stream. The multipart body is parsed as it arrives and each file is
spooled to a temporary file. A file past MAX_UPLOAD_MB is refused (413, recorded as rejected)
at that byte: nothing more of it is kept, and the rest of its bytes are read and thrown away
so that the files after it in the same request are still received. At most half the limit is
thrown away in one request; past that the request is not read any further, and the refused
file's reason says that files after it were not received. Files before it are always kept.
Both the upload page and the JSON API receive files here and hand them to the same service
(`app.documents.service.add_document`).

File names arrive as raw UTF-8 bytes in Content-Disposition (what browsers send), or as
RFC 5987/2231 `filename*=UTF-8''…` (some clients); both are decoded to the exact name."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import unquote_to_bytes

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from app.accounts.service import Account, SignedIn
from app.collections.access import readable_collections
from app.collections.service import DEFAULT_COLLECTION, collection_for_upload
from app.config import Settings
from app.documents.service import Added, add_document, add_rejected, enqueue
from app.errors import Invalid, PayloadTooLarge, UnsupportedType
from app.models import Collection
from app.retrieval.filters import check_labels

MAX_FILES_PER_REQUEST = 20
MAX_FIELD_BYTES = 4096
SPOOL_IN_MEMORY = 1 << 20


@dataclass
class ReceivedFile:
    filename: str
    file: IO[bytes]
    size: int = 0  # bytes received: the whole file, unless the request was cut short in it
    refused: str | None = None  # why it is not kept (larger than the limit); its spool is closed

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()


@dataclass
class Received:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    skipped: int = 0  # bytes past the limit of refused files, read and thrown away

    def close(self) -> None:
        for f in self.files:
            f.file.close()


class _Part:
    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_field = b""
        self.header_value = b""
        self.name = ""
        self.filename: str | None = None
        self.buffer = bytearray()
        self.file: ReceivedFile | None = None


async def receive_files(request: Request, settings: Settings) -> Received:
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedType("send the files as multipart/form-data (field name: files)")
    limit = settings.max_upload_bytes
    skip_limit = limit // 2  # bytes of refused files read (and thrown away) per request
    request_limit = limit * MAX_FILES_PER_REQUEST + (1 << 20)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > request_limit:
        raise PayloadTooLarge(
            f"the request is larger than {MAX_FILES_PER_REQUEST} files of "
            f"{settings.max_upload_mb} MB"
        )
    spool_dir = settings.data_path / "tmp"
    spool_dir.mkdir(exist_ok=True)
    received = Received()
    part = _Part()

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        # Latin-1 keeps one character per byte, so the parameters' bytes survive parsing and
        # are decoded once, as UTF-8, afterwards (`_text`).
        part.headers[part.header_field.decode("latin-1").lower()] = part.header_value.decode(
            "latin-1"
        )
        part.header_field = part.header_value = b""

    def on_headers_finished() -> None:
        header = part.headers.get("content-disposition", "")
        _, disposition = parse_options_header(header)
        part.name = _text(disposition.get(b"name", b""))
        part.filename = _extended_filename(header)
        if part.filename is None and b"filename" in disposition:
            part.filename = _text(disposition[b"filename"])
        if part.filename is not None:
            if len(received.files) >= MAX_FILES_PER_REQUEST:
                raise Invalid(f"at most {MAX_FILES_PER_REQUEST} files per request")
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(spool_dir))  # noqa: SIM115
            part.file = ReceivedFile(part.filename, spool)
            received.files.append(part.file)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        f = part.file
        if f is not None:
            f.size += end - start
            if f.refused is None and f.size <= limit:
                f.file.write(data[start:end])
                return
            if f.refused is None:  # this piece takes it past the limit: keep none of it
                f.refused = f"larger than the {settings.max_upload_mb} MB limit"
                f.file.close()
                received.skipped += f.size - limit
            else:
                received.skipped += end - start
            if received.skipped > skip_limit:
                f.refused += (
                    "; the request was not read past it, so any files after it were not "
                    "received (send them again)"
                )
                raise _TooLarge
        else:
            part.buffer += data[start:end]
            if len(part.buffer) > MAX_FIELD_BYTES:
                raise Invalid(f"form field {part.name!r} is too long")

    def on_part_end() -> None:
        if part.file is None:
            if b"\x00" in part.buffer:
                raise Invalid(f"form field {part.name!r}: text may not contain NUL characters")
            received.fields[part.name] = part.buffer.decode("utf-8", errors="replace")

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > request_limit:
                raise PayloadTooLarge("the request is too large")
            parser.write(chunk)
        parser.finalize()
    except _TooLarge:  # the files received so far are kept: `store` records them
        return received
    except (ValueError, RuntimeError) as err:  # malformed multipart
        received.close()
        raise Invalid(f"malformed multipart body ({err})") from err
    except BaseException:
        received.close()
        raise
    return received


class _TooLarge(Exception):
    """Raised by the parser's callback to stop reading the request body."""


_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _text(raw: bytes) -> str:
    """A header parameter's bytes as text: UTF-8 (what browsers send), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _extended_filename(header: str) -> str | None:
    """The RFC 5987/2231 `filename*=charset'language'percent-encoded` parameter of a
    Content-Disposition header (given one character per byte), when it is there."""
    for match in _PARAMETER.finditer(header):
        if match[1].lower() != "filename*":
            continue
        charset, _, rest = match[2].strip().strip('"').partition("'")
        _, quote, encoded = rest.partition("'")
        if not quote:
            return None
        raw = unquote_to_bytes(encoded)
        try:
            return raw.decode(charset or "utf-8")
        except (LookupError, UnicodeDecodeError):
            return _text(raw)
    return None


def upload_target(session: Session, name: str, who: SignedIn, settings: Settings) -> Collection:
    """The collection a person's upload (files or URLs) goes to: one they may read, or a new
    one where they may create collections."""
    return collection_for_upload(
        session,
        name,
        readable=readable_collections(session, who.user),
        creator=who.user,
        members_may_create=settings.members_may_create,
    )


async def receive_and_store(
    request: Request,
    session: Session,
    settings: Settings,
    who: SignedIn,
    collection: str | None = None,
    labels: str | None = None,
) -> list[Added]:
    """An upload request (the page's or the API's): its files, into the collection named by
    its `collection` field (else `collection`, else the default), made if it is new and the
    uploader may create collections, with the labels of its `labels` field (else `labels`;
    commas between them)."""
    received = await receive_files(request, settings)
    try:
        name = received.fields.get("collection") or collection or DEFAULT_COLLECTION
        given = check_labels(received.fields.get("labels") or labels)
        target = upload_target(session, name, who, settings)
    except BaseException:
        received.close()
        raise
    return store(session, received, target, settings, uploaded_by=who.user, labels=given)


def store(
    session: Session,
    received: Received,
    collection: Collection,
    settings: Settings,
    uploaded_by: Account | None = None,
    labels: Sequence[str] = (),
) -> list[Added]:
    """Hand each received file to the documents service and ask for the new ones to be
    ingested; a file refused for its size is recorded as rejected (413). Returns the
    service's `Added` results in upload order."""
    results = []
    try:
        for f in received.files:
            if f.refused is not None:
                added = add_rejected(
                    session, collection, f.filename, f.size, f.refused, 413, uploaded_by
                )
            else:
                limit = settings.max_upload_bytes
                added = add_document(
                    session, collection, f.filename, f.read(), limit, uploaded_by, labels
                )
            results.append(added)
    finally:
        received.close()
    enqueue(session, [r.document for r in results if r.enqueue])
    return results
