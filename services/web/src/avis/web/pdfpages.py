"""A PDF record's pages drawn as PNG pictures, in memory, for the specialist's viewer.

The browser never opens the PDF itself: PDFium (pypdfium2, built without a script engine)
draws one page at a time on the server, and the page shows the picture in an <img>. No script
of the file can run, and no PDF reader of the browser is needed (Chromium's refuses to run in a
sandboxed frame). A hostile file is bounded: its size, the pages drawn, the pixels of each
page, and the time a drawing may take.
"""

from __future__ import annotations

import asyncio
import math
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pypdfium2 as pdfium  # type: ignore[import-untyped]

# Intake's own largest record (AVIS_INTAKE_MAX_DOCUMENT_BYTES' default).
MAX_PDF_BYTES = 20 * 1024 * 1024
# The pages the viewer draws; the rest is read in the downloaded file.
MAX_PAGES = 50
# 144 dots per inch: sharp on a high-density screen, an A4 page 1190 x 1684 pixels.
SCALE = 2.0
MAX_SIDE = 4096
MAX_PIXELS = 4_000_000
RENDER_SECONDS = 10.0
# Why a PDF is not drawn (each has its words in the catalogues, as review.pdf.<reason>).
REASONS = ("unreadable", "too_large", "too_slow", "no_page")
# PDFium is one library per process and not thread-safe: every call runs on this one thread.
_PDFIUM = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfium")
T = TypeVar("T")


class Unrenderable(Exception):
    """The PDF cannot be drawn here; `reason` says why in a word the catalogues know."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outline:
    """The pages the viewer shows (each one's size in pixels) out of the document's total."""

    sizes: tuple[tuple[int, int], ...]
    total: int


@dataclass(frozen=True)
class Picture:
    """One page drawn: a PNG and its size in pixels."""

    png: bytes
    width: int
    height: int


def fit(width: float, height: float) -> tuple[float, int, int]:
    """The scale a page of this size (in PDF units) is drawn at, and its size in pixels: 144
    dpi, shrunk until within MAX_SIDE and MAX_PIXELS (a page may claim any size)."""
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        raise Unrenderable("unreadable")
    scale = min(
        SCALE, MAX_SIDE / width, MAX_SIDE / height, math.sqrt(MAX_PIXELS / (width * height))
    )
    # PDFium rounds each side up: shrink a hair so the rounding stays within the limits.
    scale *= 0.999 if scale < SCALE else 1.0
    return scale, max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _open(data: bytes) -> pdfium.PdfDocument:
    if len(data) > MAX_PDF_BYTES:
        raise Unrenderable("too_large")
    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # A password asks for a key we do not have; anything else is a damaged file.
        raise Unrenderable("unreadable") from exc


def outline(data: bytes) -> Outline:
    """The document's page count and the pixel size of each page the viewer shows."""
    document = _open(data)
    try:
        total = len(document)
        if total < 1:
            raise Unrenderable("unreadable")
        sizes = []
        for index in range(min(total, MAX_PAGES)):
            try:
                width, height = document.get_page_size(index)
            except pdfium.PdfiumError as exc:
                raise Unrenderable("unreadable") from exc
            _, w, h = fit(float(width), float(height))
            sizes.append((w, h))
        return Outline(tuple(sizes), total)
    finally:
        document.close()


def picture(data: bytes, number: int) -> Picture:
    """Page `number` (from 1) drawn as a PNG, within the limits."""
    document = _open(data)
    try:
        if not 1 <= number <= min(len(document), MAX_PAGES):
            raise Unrenderable("no_page")
        try:
            page = document[number - 1]
            scale, _, _ = fit(float(page.get_width()), float(page.get_height()))
            bitmap = page.render(scale=scale, rev_byteorder=True, draw_annots=False)
        except pdfium.PdfiumError as exc:
            raise Unrenderable("unreadable") from exc
        width, height, stride, channels = bitmap.width, bitmap.height, bitmap.stride, 3
        if width * height > MAX_PIXELS + MAX_SIDE * 2 or bitmap.n_channels != channels:
            raise Unrenderable("unreadable")
        pixels = memoryview(bitmap.buffer).cast("B")
        return Picture(png(width, height, stride, pixels), int(width), int(height))
    finally:
        document.close()


def png(width: int, height: int, stride: int, rgb: memoryview) -> bytes:
    """An 8-bit RGB PNG of these rows (`stride` bytes apart)."""
    rows = b"".join(
        b"\x00" + rgb[y * stride : y * stride + width * 3].tobytes() for y in range(height)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )


async def _bounded(work: Callable[[], T]) -> T:
    """`work` on PDFium's thread, given up after RENDER_SECONDS (a drawing not yet started is
    dropped; one already started ends on its own, within the pixel limit)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RENDER_SECONDS):
            return await loop.run_in_executor(_PDFIUM, work)
    except TimeoutError as exc:
        raise Unrenderable("too_slow") from exc


async def outline_of(data: bytes) -> Outline:
    """`outline`, off the event loop and within the time limit."""
    return await _bounded(lambda: outline(data))


async def picture_of(data: bytes, number: int) -> Picture:
    """`picture`, off the event loop and within the time limit."""
    return await _bounded(lambda: picture(data, number))
