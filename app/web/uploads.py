"""Receiving uploads as a stream. The multipart body is parsed as it arrives and each file is
spooled to a temporary file; a file past MAX_UPLOAD_MB stops the request with 413 at that
byte, before the rest of the body is read or stored. Both the upload page and the JSON API
receive files here and hand them to the same service (`app.ingest.service.add_document`)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy.orm import Session

from app.accounts import Account
from app.config import Settings
from app.errors import Invalid, PayloadTooLarge, UnsupportedType
from app.ingest.service import Added, add_document, add_rejected
from app.models import Collection

MAX_FILES_PER_REQUEST = 20
MAX_FIELD_BYTES = 4096
SPOOL_IN_MEMORY = 1 << 20


@dataclass
class ReceivedFile:
    filename: str
    file: IO[bytes]
    size: int = 0

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()


@dataclass
class Received:
    files: list[ReceivedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    too_large: str | None = None  # the name of a file refused for its size

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
        part.headers[part.header_field.decode("latin-1").lower()] = part.header_value.decode(
            "utf-8", errors="replace"
        )
        part.header_field = part.header_value = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = disposition.get(b"name", b"").decode("utf-8", errors="replace")
        if b"filename" in disposition:
            part.filename = disposition[b"filename"].decode("utf-8", errors="replace")
            if len(received.files) >= MAX_FILES_PER_REQUEST:
                raise Invalid(f"at most {MAX_FILES_PER_REQUEST} files per request")
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=str(spool_dir))  # noqa: SIM115
            part.file = ReceivedFile(part.filename, spool)
            received.files.append(part.file)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.file is not None:
            part.file.size += end - start
            if part.file.size > limit:
                received.too_large = part.file.filename
                raise _TooLarge
            part.file.file.write(data[start:end])
        else:
            part.buffer += data[start:end]
            if len(part.buffer) > MAX_FIELD_BYTES:
                raise Invalid(f"form field {part.name!r} is too long")

    def on_part_end() -> None:
        if part.file is None:
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
    except _TooLarge:
        received.close()
        return received
    except (ValueError, RuntimeError) as err:  # malformed multipart
        received.close()
        raise Invalid(f"malformed multipart body ({err})") from err
    except BaseException:
        received.close()
        raise
    return received


class _TooLarge(Exception):
    pass


def store(
    session: Session,
    received: Received,
    collection: Collection,
    settings: Settings,
    uploaded_by: Account | None = None,
) -> list[Added]:
    """Hand each received file to the ingestion service; a refused oversized file is
    recorded as rejected. Returns the service's `Added` results in upload order."""
    results = []
    try:
        for f in received.files:
            if f.filename == received.too_large:
                results.append(
                    add_rejected(
                        session,
                        collection,
                        f.filename,
                        f.size,
                        f"larger than the {settings.max_upload_mb} MB limit",
                        413,
                    )
                )
            else:
                results.append(
                    add_document(
                        session, collection, f.filename, f.read(), settings.max_upload_bytes
                    )
                )
    finally:
        received.close()
    for added in results:
        if added.enqueue and added.document.uploaded_by is None and uploaded_by is not None:
            added.document.uploaded_by = uploaded_by.id
    return results
