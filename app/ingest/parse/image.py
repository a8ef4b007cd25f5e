"""Images (PNG, JPEG, TIFF, WebP): scans and photos of text, read by OCR. A TIFF's frames
are its pages; other formats are one page (an animated WebP's first frame).

Images are opened with Pillow, which reads the header first: the declared size is checked
against `ocr.MAX_IMAGE_PIXELS` before a pixel is decoded, so a small file that declares a
huge picture (a decompression bomb) is refused at upload (`check`) and never expanded."""

from __future__ import annotations

import io
from typing import Any

from app.ingest import ocr
from app.ingest.structure import Block, Limits, Parsed, ParseError

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "TIFF": "image/tiff", "WEBP": "image/webp"}


class ImageRefused(ParseError):
    """Not an image that may be read; `status` is the HTTP status to answer an upload with."""

    def __init__(self, reason: str, status: int):
        super().__init__(reason)
        self.status = status


def open_image(data: bytes, content_type: str) -> Any:
    """The image, header read and checked (format, declared size), nothing decoded yet."""
    from PIL import Image, UnidentifiedImageError

    # Set deliberately: past it Pillow refuses to open (twice it, or warns, by default).
    Image.MAX_IMAGE_PIXELS = ocr.MAX_IMAGE_PIXELS
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError as err:
        raise ImageRefused(f"refused as a decompression bomb ({err})", 413) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageRefused(f"not a readable image ({err})", 422) from err
    if FORMATS.get(image.format or "") != content_type:
        raise ImageRefused(f"not a readable {content_type} image", 422)
    _check_size(image)
    return image


def _check_size(image: Any) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRefused("the image has no pixels", 422)
    if width * height > ocr.MAX_IMAGE_PIXELS:
        raise ImageRefused(
            f"the image is {width:,} × {height:,} pixels ({width * height / 1e6:,.0f} million); "
            f"the limit is {ocr.MAX_IMAGE_PIXELS / 1e6:,.0f} million",
            413,
        )


def check(data: bytes, content_type: str) -> None:
    """At upload: refuse an image that cannot be opened or declares too many pixels."""
    open_image(data, content_type).close()


def _page(image: Any) -> Any:
    from PIL import ImageOps

    _check_size(image)  # each TIFF frame declares its own size
    image.draft("RGB", (ocr.LONG_SIDE, ocr.LONG_SIDE))  # JPEG: decode at a smaller scale
    page = ImageOps.exif_transpose(image.convert("RGB"))  # a phone's photo stands upright
    page.thumbnail((ocr.LONG_SIDE, ocr.LONG_SIDE))
    return page


def parse(data: bytes, content_type: str, limits: Limits) -> Parsed:
    image = open_image(data, content_type)
    try:
        pages = getattr(image, "n_frames", 1) if content_type == "image/tiff" else 1
        if pages > limits.max_pages:
            raise ParseError(
                f"the image has {pages:,} pages; the limit is {limits.max_pages:,} (MAX_PDF_PAGES)"
            )
        reader = ocr.PageReader(limits)
        blocks: list[Block] = []
        for index in range(pages):

            def render(index: int = index) -> Any:
                image.seek(index)
                return _page(image)

            for para in reader(index + 1, render):
                blocks.append(Block(para, page=index + 1))
            limits.check_chars(sum(len(b.text) for b in blocks))
    except (OSError, ValueError, EOFError) as err:  # truncated or corrupt pixel data
        raise ParseError(f"not a readable image ({err})") from err
    finally:
        image.close()
    if not blocks:
        raise reader.nothing_read()
    return Parsed(blocks, page_count=pages, ocr=reader.read_pages, notes=reader.notes())
