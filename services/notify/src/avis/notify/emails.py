"""The patient's emails: texts from the message catalogues (`locales/<lang>/LC_MESSAGES/
notify.po`, read as they are, no compile step), laid out as text and HTML. Pure: no I/O beyond
reading the catalogues once.

An email names no one and holds no clinical content: the salutation is generic, the address
appears only in `To`, and a report is a link, never its content.
"""

import functools
import html
import pathlib
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from babel.dates import format_date
from babel.support import Translations

from avis.notify.models import Template
from avis.notify.rules import TO_PROFESSIONALS
from avis.shared import i18n
from avis.shared.events import Language
from avis.shared.i18n import MissingText as MissingText  # what `text` raises

LOCALES = pathlib.Path(__file__).resolve().parent / "locales"
DOMAIN = "notify"
# Templates with a link, and which link they carry.
LINKS = {
    Template.CASE_RECEIVED: "case_url",
    Template.INFORMATION_REQUESTED: "case_url",
    Template.FOLLOW_UP_RECEIVED: "case_url",
    Template.FOLLOW_UP_ANSWERED: "case_url",
    Template.REPORT_READY: "report_url",
    Template.REPORT_UPDATED: "report_url",
    Template.PHYSICIAN_REPORT: "report_url",
    Template.PRO_FOLLOW_UP: "work_url",
    Template.PRO_SECOND_READING: "work_url",
    Template.PRO_COMMENTS: "work_url",
    Template.PRO_TRANSLATION: "work_url",
}
# The languages a catalogue is kept for: a professional is written to in the first of theirs.
CATALOGUED = tuple(
    language for language in Language if (LOCALES / language.value / "LC_MESSAGES").is_dir()
)


@functools.cache
def catalogue(language: Language) -> Translations:
    """The translations of one language, read from its .po file (compiled in memory)."""
    return i18n.compile_catalogue(LOCALES, DOMAIN, language.value)


def catalogue_keys(language: Language) -> dict[str, str]:
    """Every key of a catalogue and its text (for checks)."""
    return i18n.catalogue_keys(LOCALES, DOMAIN, language.value)


def text(language: Language, key: str, **params: str) -> str:
    """The catalogue's text for `key`, with `%(name)s` parameters filled in."""
    return i18n.translate(catalogue(language), key, **params)


@dataclass(frozen=True)
class Parts:
    """What an email says, before layout: no name, no clinical content."""

    subject: str
    paragraphs: tuple[str, ...]
    link: tuple[str, str] | None  # (label, url)
    signature: str
    footer: str


def display_params(language: Language, params: dict[str, str]) -> dict[str, str]:
    """Stored parameters as they read in `language`: dates spelled out, codes translated."""
    shown = dict(params)
    for dated in ("due_date", "expires_date"):
        if dated in params:
            shown[dated] = format_date(
                date.fromisoformat(params[dated]), format="long", locale=language.value
            )
    if "specialty" in params:
        shown["specialty"] = text(language, f"specialty.{params['specialty']}")
    return shown


def parts(template: Template, language: Language, params: dict[str, str]) -> Parts:
    """The texts of one email in one language."""
    shown = display_params(language, params)
    key = template.value
    link = None
    if template in LINKS and params.get(LINKS[template]):
        link = (text(language, f"{key}.link"), params[LINKS[template]])
    return Parts(
        subject=text(language, f"{key}.subject", **shown),
        paragraphs=(
            text(language, "greeting"),
            text(language, f"{key}.body", **shown),
            text(language, f"{key}.next", **shown),
        ),
        link=link,
        signature=text(language, "signature"),
        footer=text(language, "footer.professional" if template in TO_PROFESSIONALS else "footer"),
    )


def plain_text(p: Parts, language: Language) -> str:
    """The text/plain body."""
    blocks = list(p.paragraphs)
    if p.link:  # "label: url" as the language writes it (French puts a space before the colon)
        blocks.append(text(language, "link.line", label=p.link[0], url=p.link[1]))
    blocks += [p.signature, "-- ", p.footer]
    return "\n\n".join(blocks) + "\n"


def html_text(p: Parts, language: Language) -> str:
    """The text/html body; every text is escaped."""
    e = html.escape
    body = "".join(f"<p>{e(t)}</p>" for t in p.paragraphs)
    if p.link:
        body += f'<p><a href="{e(p.link[1], quote=True)}">{e(p.link[0])}</a></p>'
    body += f"<p>{e(p.signature)}</p>"
    body += f'<hr><p style="color:#666;font-size:small">{e(p.footer)}</p>'
    return (
        f'<!DOCTYPE html><html lang="{language.value}"><head><meta charset="utf-8">'
        f"<title>{e(p.subject)}</title></head><body>{body}</body></html>\n"
    )


def compose(
    *,
    template: Template,
    language: Language,
    params: dict[str, str],
    to: str,
    sender: str,
    message_id: str,
    queued_at: datetime,
) -> EmailMessage:
    """The email, multipart text and HTML, with headers stable across repeats of one send."""
    p = parts(template, language, params)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = p.subject
    # Fixed when the send was queued: a repeat is byte-for-byte the same email.
    msg["Date"] = format_datetime(queued_at)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(plain_text(p, language))
    msg.add_alternative(html_text(p, language), subtype="html")
    # After the parts: making the message multipart moves Content-* headers into its first part.
    msg["Content-Language"] = language.value
    return msg
