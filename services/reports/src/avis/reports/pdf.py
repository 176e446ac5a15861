"""The report as a PDF, laid out with ReportLab.

ReportLab was chosen by measurement (`bench/bench_report_pdf.py`): a report renders in about
11 ms warm (its C accelerators, the `rl_accel` package, take a fifth off the pure-Python 14 ms
and change no byte), with fonts it ships (Bitstream Vera, embedded and subset, so French
accents and typographic quotes print and extract as text) and no system library. The output
is invariant (no creation time or random id inside), so the same report version always
gives the same bytes and its ETag is stable.
"""

import functools
import io
import pathlib
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from xml.sax.saxutils import escape

import reportlab
from reportlab.lib.colors import Color, HexColor
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from avis.reports.models import AddendumSection, Report, ReportSection

FONT_DIR = pathlib.Path(reportlab.__file__).resolve().parent / "fonts"
REGULAR, BOLD, ITALIC, BOLD_ITALIC = "AvisSans", "AvisSans-Bold", "AvisSans-Italic", "AvisSans-BI"
INK = HexColor("#1f2933")
ACCENT = HexColor("#0b4f6c")
MUTED = HexColor("#5f6c7b")
RULE = HexColor("#c9d3dc")
TINT = HexColor("#eef4f8")
MARGIN = 20 * mm
PAGE_WIDTH, PAGE_HEIGHT = A4


@functools.cache
def _fonts() -> frozenset[int]:
    """Register the shipped fonts once; returns the code points they can draw."""
    files = {
        REGULAR: "Vera.ttf",
        BOLD: "VeraBd.ttf",
        ITALIC: "VeraIt.ttf",
        BOLD_ITALIC: "VeraBI.ttf",
    }
    for name, file in files.items():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / file)))
    pdfmetrics.registerFontFamily(
        REGULAR, normal=REGULAR, bold=BOLD, italic=ITALIC, boldItalic=BOLD_ITALIC
    )
    font = pdfmetrics.getFont(REGULAR)
    assert isinstance(font, TTFont)
    return frozenset(font.face.charToGlyph)


def printable(text: str) -> str:
    """`text` with any character the font cannot draw replaced by its unaccented form
    (Ș -> S), so a name never prints as an empty box; anything else is kept as it is."""
    drawable = _fonts()
    if all(ord(c) in drawable for c in text):
        return text
    out = []
    for char in text:
        if ord(char) in drawable:
            out.append(char)
            continue
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        out.append(base if base and all(ord(c) in drawable for c in base) else char)
    return "".join(out)


def _markup(text: str) -> str:
    return escape(printable(text))


@functools.cache
def _styles() -> dict[str, ParagraphStyle]:
    _fonts()
    body = ParagraphStyle(
        "body",
        fontName=REGULAR,
        fontSize=10.5,
        leading=15,
        textColor=INK,
        alignment=TA_LEFT,
        spaceAfter=6,
        hyphenationLang="",
    )
    return {
        "body": body,
        "title": ParagraphStyle(
            "title", parent=body, fontName=BOLD, fontSize=20, leading=25, textColor=ACCENT
        ),
        "subtitle": ParagraphStyle(
            "subtitle", parent=body, fontName=ITALIC, fontSize=11, textColor=MUTED, spaceAfter=10
        ),
        "h2": ParagraphStyle(
            "h2",
            parent=body,
            fontName=BOLD,
            fontSize=13,
            leading=17,
            textColor=ACCENT,
            spaceBefore=12,
            spaceAfter=6,
        ),
        "lead": ParagraphStyle("lead", parent=body, fontName=BOLD),
        "label": ParagraphStyle(
            "label", parent=body, fontSize=8.5, leading=11, textColor=MUTED, spaceAfter=0
        ),
        "value": ParagraphStyle("value", parent=body, spaceAfter=0),
        "question": ParagraphStyle("question", parent=body, leftIndent=10, spaceAfter=1),
        "answer": ParagraphStyle(
            "answer", parent=body, fontName=ITALIC, leftIndent=10, textColor=MUTED, spaceAfter=6
        ),
        "note": ParagraphStyle("note", parent=body, fontName=ITALIC, textColor=MUTED),
        "small": ParagraphStyle("small", parent=body, fontSize=9, leading=12.5, spaceAfter=0),
        "small_bold": ParagraphStyle(
            "small_bold", parent=body, fontName=BOLD, fontSize=9, leading=12.5, spaceAfter=3
        ),
    }


def _paragraphs(text: str, style: ParagraphStyle) -> list[Flowable]:
    """Blank lines separate paragraphs; a single line break stays a line break."""
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n")]
    return [
        Paragraph("<br/>".join(_markup(line) for line in block.split("\n")), style)
        for block in blocks
        if block
    ]


def _facts(report: Report) -> Table:
    """The identification block: patient, birth date, reference, specialty, dates, version."""
    s = _styles()
    labels = report.labels
    patient = report.patient
    born = (
        (labels.born, patient.birth_date_text)
        if patient.birth_date_text is not None
        else (labels.age or "", patient.age_text or "")  # a reviewer's: the age
    )
    cells: list[tuple[str, str]] = [
        (labels.patient, patient.name),
        born,
        (labels.reference, report.reference),
        (labels.specialty, report.specialty_text),
        *((line.label, line.text) for line in report.dates),
        (labels.version, str(report.version)),
    ]
    rows = []
    for i in range(0, len(cells), 2):
        row: list[Any] = []
        for label, value in cells[i : i + 2]:
            row.append(
                [Paragraph(_markup(label), s["label"]), Paragraph(_markup(value), s["value"])]
            )
        rows.append(row + [""] * (2 - len(row)))
    width = (PAGE_WIDTH - 2 * MARGIN) / 2
    table = Table(rows, colWidths=[width, width], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, ACCENT),
                ("LINEBELOW", (0, -1), (-1, -1), 0.8, ACCENT),
                ("LINEBELOW", (0, 0), (-1, -2), 0.3, RULE),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return table


def _box(content: Sequence[Flowable], background: Color | None, border: Color | None) -> Table:
    table = Table([[content]], colWidths=[PAGE_WIDTH - 2 * MARGIN])
    commands: list[Any] = [
        ("LEFTPADDING", (0, 0), (-1, -1), 10),
        ("RIGHTPADDING", (0, 0), (-1, -1), 10),
        ("TOPPADDING", (0, 0), (-1, -1), 8),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
    ]
    if background is not None:
        commands.append(("BACKGROUND", (0, 0), (-1, -1), background))
    if border is not None:
        commands.append(("BOX", (0, 0), (-1, -1), 0.6, border))
    table.setStyle(TableStyle(commands))
    return table


def _section(section: ReportSection) -> list[Flowable]:
    s = _styles()
    title = f"{section.number}. {section.heading}" if section.number else section.heading
    head: list[Flowable] = [Paragraph(_markup(title), s["h2"])]
    if section.lead:
        head.append(Paragraph(_markup(section.lead), s["lead"]))
    body = _paragraphs(section.text, s["body"])
    # A heading never ends a page alone: it keeps its first paragraph with it.
    return [KeepTogether(head + body[:1]), *body[1:]]


def _addendum(addendum: AddendumSection) -> list[Flowable]:
    """One answer to a follow-up question: the question, the answer, who answered and when."""
    s = _styles()
    return [
        Paragraph(_markup(addendum.heading), s["h2"]),
        Paragraph(f"<b>{_markup(addendum.question_label)}</b>", s["body"]),
        *_paragraphs(addendum.question, s["body"]),
        Paragraph(f"<b>{_markup(addendum.answer_label)}</b>", s["body"]),
        *_paragraphs(addendum.answer, s["body"]),
        Paragraph(_markup(addendum.signature), s["small"]),
    ]


def story(report: Report) -> list[Flowable]:
    """The report's content, in reading order."""
    s = _styles()
    flow: list[Flowable] = [
        Paragraph(_markup(report.title), s["title"]),
        Paragraph(_markup(report.subtitle), s["subtitle"]),
        _facts(report),
        Spacer(1, 4 * mm),
    ]
    if report.correction_note:
        flow.append(Paragraph(_markup(report.correction_note), s["note"]))
    for section in report.sections:  # the summary in plain words leads
        if section.number is None:
            summary: list[Flowable] = [Paragraph(_markup(section.heading), s["h2"])]
            if section.lead:
                summary.append(Paragraph(f"<b>{_markup(section.lead)}</b>", s["body"]))
            summary += _paragraphs(section.text, s["body"])
            flow += [KeepTogether(_box(summary, TINT, None)), Spacer(1, 3 * mm)]
    if report.questions:
        flow.append(Paragraph(_markup(report.labels.questions), s["h2"]))
        flow.append(Paragraph(_markup(report.labels.questions_intro), s["body"]))
        for question in report.questions:
            flow.append(
                KeepTogether(
                    [
                        Paragraph("\u2022\u00a0" + _markup(question.text), s["question"]),
                        Paragraph(_markup(question.answered_in_text), s["answer"]),
                    ]
                )
            )
    for section in report.sections:
        if section.number is not None:
            flow += _section(section)
    for addendum in report.addenda:  # the answers to follow-up questions, after the opinion
        flow += _addendum(addendum)
    reviewer = report.reviewer
    flow.append(
        KeepTogether(
            [
                Paragraph(_markup(reviewer.heading), s["h2"]),
                Paragraph(f"<b>{_markup(reviewer.name)}</b>", s["value"]),
                Paragraph(_markup(reviewer.specialty_text), s["body"]),
                *(
                    [Paragraph(_markup(reviewer.second_reader_text), s["body"])]
                    if reviewer.second_reader_text
                    else []
                ),
                *(Paragraph(_markup(line), s["body"]) for line in reviewer.translation_text),
            ]
        )
    )
    disclaimer = [
        Paragraph(_markup(report.disclaimer.heading), s["small_bold"]),
        *_paragraphs(report.disclaimer.text, s["small"]),
    ]
    flow += [Spacer(1, 5 * mm), KeepTogether(_box(disclaimer, None, RULE))]
    return flow


def _canvas_for(report: Report) -> Callable[..., Canvas]:
    """A canvas that, once every page is laid out, draws the running header and footer: the
    case reference on every page, and "page n of N" (N is only known at the end)."""
    header_left = printable(report.title)
    header_right = printable(f"{report.reference} \u00b7 {report.labels.version} {report.version}")
    footer_left = printable(f"{report.labels.confidential} \u00b7 {report.patient.name}")
    page_text = report.labels.page

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 (ReportLab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()  # type: ignore[attr-defined]  # ReportLab's own reset

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._decorate(number, total)
                super().showPage()
            super().save()

        def _decorate(self, number: int, total: int) -> None:
            top = PAGE_HEIGHT - 12 * mm
            self.setFont(REGULAR, 8.5)
            self.setFillColor(MUTED)
            self.drawString(MARGIN, top, header_left)
            self.setFont(BOLD, 8.5)
            self.setFillColor(ACCENT)
            self.drawRightString(PAGE_WIDTH - MARGIN, top, header_right)
            self.setStrokeColor(RULE)
            self.setLineWidth(0.5)
            self.line(MARGIN, top - 2.5 * mm, PAGE_WIDTH - MARGIN, top - 2.5 * mm)
            bottom = 10 * mm
            self.line(MARGIN, bottom + 4 * mm, PAGE_WIDTH - MARGIN, bottom + 4 * mm)
            self.setFont(REGULAR, 8.5)
            self.setFillColor(MUTED)
            self.drawString(MARGIN, bottom, footer_left)
            self.drawRightString(
                PAGE_WIDTH - MARGIN, bottom, page_text % {"page": number, "pages": total}
            )

    return NumberedCanvas


def render_pdf(report: Report) -> bytes:
    """The report as PDF bytes (the same report always gives the same bytes)."""
    _fonts()
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN + 4 * mm,
        bottomMargin=MARGIN,
        title=printable(f"{report.title} \u2013 {report.reference}"),
        author="Avis",
        subject=printable(report.subtitle),
        creator="Avis reports",
        lang=report.language.value,
        invariant=1,
    )
    doc.build(story(report), canvasmaker=_canvas_for(report))
    return out.getvalue()
