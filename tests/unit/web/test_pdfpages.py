"""A PDF's pages drawn on the server within bounds: the pixel size whatever the page claims,
the pages drawn, the bytes read, and a damaged file said in a word, never an error."""

import pytest

from avis.web import pdfpages
from avis.web.pdfpages import MAX_PAGES, MAX_PIXELS, MAX_SIDE, Unrenderable
from tests.support.samples import pdf
from tests.support.specialist import pdf_page

A4 = b"/MediaBox [0 0 595 842]"


def sized(box: bytes) -> bytes:
    return pdf_page("Resting ECG").replace(A4, box)


def many_pages(count: int) -> bytes:
    """A PDF whose page tree lists `count` pages (the same page object, as a hostile file may)."""
    kids = b" ".join([b"3 0 R"] * count)
    return pdf_page("One").replace(
        b"/Kids [3 0 R] /Count 1", b"/Kids [" + kids + b"] /Count %d" % count
    )


def test_an_a4_page_is_drawn_at_144_dpi() -> None:
    drawn = pdfpages.picture(pdf_page("Resting ECG"), 1)
    assert (drawn.width, drawn.height) == (1190, 1684)
    assert drawn.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert pdfpages.outline(pdf_page("x")).sizes == ((1190, 1684),)


@pytest.mark.parametrize(
    "box",
    [
        b"/MediaBox [0 0 14400 14400]",  # the largest page PDF allows, 200 inches a side
        b"/MediaBox [0 0 14400 2]",
        b"/MediaBox [0 0 3 14400]",
        b"/MediaBox [0 0 1000000000 1000000000]",
    ],
)
def test_a_page_claiming_a_huge_size_is_drawn_within_the_pixel_limits(box: bytes) -> None:
    drawn = pdfpages.picture(sized(box), 1)
    assert drawn.width <= MAX_SIDE and drawn.height <= MAX_SIDE
    assert drawn.width * drawn.height <= MAX_PIXELS
    (width, height), *_ = pdfpages.outline(sized(box)).sizes
    assert width * height <= MAX_PIXELS


def test_only_the_first_pages_are_drawn() -> None:
    document = many_pages(MAX_PAGES + 30)
    seen = pdfpages.outline(document)
    assert seen.total == MAX_PAGES + 30 and len(seen.sizes) == MAX_PAGES
    assert pdfpages.picture(document, MAX_PAGES).width == 1190
    with pytest.raises(Unrenderable) as beyond:
        pdfpages.picture(document, MAX_PAGES + 1)
    assert beyond.value.reason == "no_page"


@pytest.mark.parametrize(
    "data",
    [
        pdf("no pages"),
        b"",
        b"%PDF-1.7\n" + b"\x00" * 500,
        pdf_page("cut")[:200],
    ],
)
def test_a_damaged_pdf_is_unreadable_not_an_error(data: bytes) -> None:
    with pytest.raises(Unrenderable) as failed:
        pdfpages.picture(data, 1)
    assert failed.value.reason in ("unreadable", "no_page")
    with pytest.raises(Unrenderable):
        pdfpages.outline(data)


def test_a_pdf_over_the_byte_limit_is_not_opened() -> None:
    with pytest.raises(Unrenderable) as failed:
        pdfpages.outline(b"%PDF-1.4\n" + b" " * pdfpages.MAX_PDF_BYTES)
    assert failed.value.reason == "too_large"


async def test_a_drawing_that_takes_too_long_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdfpages, "RENDER_SECONDS", 0.0)
    with pytest.raises(Unrenderable) as failed:
        await pdfpages.picture_of(pdf_page("slow"), 1)
    assert failed.value.reason == "too_slow"
    monkeypatch.undo()
    assert (await pdfpages.picture_of(pdf_page("now"), 1)).height == 1684
