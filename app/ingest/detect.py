"""What a file is, decided from its bytes against an allow-list; the name only breaks ties
between text types (Markdown or plain text). Also: safe display names, and the DOCX
zip-bomb check that reads the zip's directory without expanding anything."""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile
from pathlib import PurePath

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"
# Scans and photos, read by OCR (`parse.image`).
IMAGES = frozenset({"image/png", "image/jpeg", "image/tiff", "image/webp"})
ALLOWED = frozenset({PDF, DOCX, HTML, MARKDOWN, TEXT, *IMAGES})

# Limits for DOCX archives: checked on the declared sizes in the zip's central directory at
# upload, and on the bytes really inflated, as they stream, before the worker parses one
# (`parse.docx`). python-docx holds every part in memory, and lxml an XML part's tree at
# several times its size: the limits keep one document in a few hundred MB.
ZIP_MAX_ENTRIES = 5_000
ZIP_MAX_UNCOMPRESSED = 256 * 1024 * 1024
ZIP_MAX_XML_ENTRY = 32 * 1024 * 1024  # word/document.xml of a 3,000-page document is ~20 MB
ZIP_MAX_RATIO = 100  # per entry, for entries over 1 MiB uncompressed
# Only these: bzip2 and LZMA entries inflate without an output bound in `zipfile` (one read
# of 4 KB of a bzip2 bomb became 1 GiB).
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

# Executables are refused wherever the first kilobyte shows them, whatever else the file also
# parses as (a PE header followed by a PDF is both), and so are names that would run.
EXECUTABLE_HEADS = (
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"\xfe\xed\xfa\xce", "a macOS executable (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "a macOS executable (Mach-O)"),
    (b"\xce\xfa\xed\xfe", "a macOS executable (Mach-O)"),
    (b"\xcf\xfa\xed\xfe", "a macOS executable (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "a macOS universal executable or Java class"),
    (b"#!/", "a script (#!)"),
)
EXECUTABLE_MARKS = (
    (b"This program cannot be run in DOS mode", "a Windows executable (PE)"),
    (b"PE\x00\x00", "a Windows executable (PE)"),
    (b"\x7fELF", "a Linux executable (ELF)"),
)
EXECUTABLE_SUFFIXES = frozenset((
    ".exe", ".dll", ".com", ".scr", ".msi", ".msp", ".cpl", ".sys", ".drv", ".bat", ".cmd",
    ".ps1", ".psm1", ".vbs", ".vbe", ".wsf", ".wsh", ".hta", ".jar", ".jse", ".sh", ".bash",
    ".zsh", ".csh", ".ksh", ".command", ".app", ".elf", ".so", ".dylib", ".bin", ".run",
    ".apk", ".deb", ".rpm", ".pkg", ".dmg", ".lnk", ".reg", ".pif", ".gadget",
))  # fmt: skip

_MAGIC: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"\x00\x00\x01\x00", "image/x-icon"),
    (0, b"\x7fELF", "application/x-executable"),
    (0, b"\xca\xfe\xba\xbe", "application/java-vm"),
    (0, b"\xcf\xfa\xed\xfe", "application/x-mach-binary"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"BZh", "application/x-bzip2"),
    (0, b"\xfd7zXZ\x00", "application/x-xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (0, b"Rar!\x1a\x07", "application/vnd.rar"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"),
    (0, b"{\\rtf", "application/rtf"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"OggS", "audio/ogg"),
    (0, b"fLaC", "audio/flac"),
    (0, b"\x1aE\xdf\xa3", "video/webm"),
    (0, b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (0, b"\x00asm", "application/wasm"),
    (4, b"ftyp", "video/mp4"),
]

_HTML_START = re.compile(
    rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>])", re.I | re.S
)
_HTML_TAGS = re.compile(rb"<(head|body|title|meta|h[1-6]|p|div|table|article)[\s>]", re.I)
_MARKDOWN_HINTS = re.compile(r"^(#{1,6} \S|[-*+] \S|\d+\. \S|```|> \S)|\[[^\]]+\]\([^)]+\)", re.M)


class Rejected(Exception):
    """The file is not accepted; `status` is the HTTP status to answer with."""

    def __init__(self, reason: str, status: int = 415, detected: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detected = detected


def safe_filename(name: str | None) -> str:
    """The uploader's name, for display only: no directories, control characters or NULs,
    at most 255 characters (the extension kept). Files are stored under ids, never names."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip(" .")
    if not name:
        return "unnamed"
    if len(name) > 255:
        suffix = PurePath(name).suffix[:16]
        name = name[: 255 - len(suffix)] + suffix
    return name


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return "application/zip"
    if "word/document.xml" in names and "[Content_Types].xml" in names:
        return DOCX
    if any(n.startswith("xl/") for n in names):
        return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    if any(n.startswith("ppt/") for n in names):
        return "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    if "mimetype" in names and "META-INF/manifest.xml" in names:
        return "application/vnd.oasis.opendocument"
    if "META-INF/container.xml" in names:
        return "application/epub+zip"
    return "application/zip"


def looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        # UTF-16 text has NULs; its BOM says so.
        return not head.startswith((b"\xff\xfe", b"\xfe\xff"))
    controls = sum(1 for b in head if b < 9 or 13 < b < 32)
    return controls > max(4, len(head) // 100)


def detect(data: bytes, filename: str = "") -> str:
    """The content type of `data`, from magic bytes first."""
    head = data[:4096]
    if b"%PDF-" in data[:1024]:
        return PDF
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_kind(data)
    if head[8:12] == b"WEBP" and head.startswith(b"RIFF"):
        return "image/webp"
    if _dos_header(head):
        return "application/x-msdownload"
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if looks_binary(head):
        return "application/octet-stream"
    stripped = head.lstrip(b"\xef\xbb\xbf")
    suffix = PurePath(filename).suffix.lower()
    if _HTML_START.match(stripped):
        return HTML
    if re.match(rb"^\s*<svg[\s>]", stripped, re.I) or re.match(rb"^\s*<\?xml", stripped):
        return "image/svg+xml" if b"<svg" in stripped[:1024].lower() else "application/xml"
    if suffix in {".html", ".htm", ".xhtml"} and _HTML_TAGS.search(stripped):
        return HTML
    if suffix in {".md", ".markdown", ".mdown", ".mkd"}:
        return MARKDOWN
    if suffix in {".txt", ".text", ".log", ".csv", ".tsv", ".rst"}:
        return TEXT
    if _HTML_TAGS.search(stripped) and stripped.lstrip().startswith(b"<"):
        return HTML
    text = stripped.decode("utf-8", errors="ignore")
    if len(_MARKDOWN_HINTS.findall(text)) >= 2:
        return MARKDOWN
    return TEXT


def check_docx_archive(data: bytes) -> None:
    """Refuse an archive whose declared sizes are past the limits, without expanding it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise Rejected(f"not a readable DOCX file ({err})", status=422) from err
    if len(infos) > ZIP_MAX_ENTRIES:
        raise Rejected(f"DOCX archive has {len(infos)} entries (limit {ZIP_MAX_ENTRIES})", 413)
    for info in infos:
        if info.compress_type not in ZIP_METHODS:
            raise Rejected(
                f"DOCX entry {info.filename!r} uses compression method {info.compress_type}; "
                "only stored and deflate are accepted",
                415,
            )
    total = sum(i.file_size for i in infos)
    if total > ZIP_MAX_UNCOMPRESSED:
        raise Rejected(
            f"DOCX archive would expand to {total // 2**20} MiB "
            f"(limit {ZIP_MAX_UNCOMPRESSED // 2**20} MiB): refused as a zip bomb",
            413,
        )
    for info in infos:
        ratio = info.file_size // max(info.compress_size, 1)
        if info.file_size > 2**20 and ratio > ZIP_MAX_RATIO:
            raise Rejected(
                f"DOCX entry {info.filename!r} compresses {ratio}:1 "
                f"(limit {ZIP_MAX_RATIO}:1): refused as a zip bomb",
                413,
            )


def _dos_header(head: bytes) -> bool:
    """An executable's DOS header, not text that starts with the letters "MZ"."""
    return head.startswith(b"MZ") and b"\x00" in head[:64]


def executable(data: bytes, filename: str) -> str | None:
    """What makes the file an executable (its first kilobyte or its name), or None."""
    suffix = PurePath(filename).suffix.lower()
    if suffix in EXECUTABLE_SUFFIXES:
        return f"a file named {suffix} runs as a program"
    head = data[:1024]
    if _dos_header(head):
        return "a Windows executable (PE)"
    for magic, what in EXECUTABLE_HEADS:
        if head.startswith(magic):
            return what
    for mark, what in EXECUTABLE_MARKS:
        if mark in head:
            return what
    return None


def accept(data: bytes, filename: str, max_bytes: int) -> str:
    """The content type of an acceptable upload, or `Rejected` with the reason."""
    if not data:
        raise Rejected("empty file", status=422)
    if len(data) > max_bytes:
        raise Rejected(f"larger than the {max_bytes // 2**20} MB limit", status=413)
    program = executable(data, filename)
    if program is not None:
        raise Rejected(f"refused: {program}", status=415, detected="application/x-executable")
    kind = detect(data, filename)
    if kind not in ALLOWED:
        raise Rejected(
            f"unsupported type {kind}: upload PDF, DOCX, HTML, Markdown, plain text or images",
            status=415,
            detected=kind,
        )
    if kind == DOCX:
        check_docx_archive(data)
    if kind in IMAGES:
        from app.ingest.parse.image import ImageRefused, check

        try:
            check(data, kind)
        except ImageRefused as err:
            raise Rejected(err.args[0], err.status, detected=kind) from err
    return kind
