"""The emails as composed: texts from both catalogues, headers, parts, no name, no content."""

from datetime import UTC, datetime

import pytest

from avis.notify import emails
from avis.notify.emails import catalogue_keys, compose
from avis.notify.mailer import SmtpTarget
from avis.notify.models import Template
from avis.notify.settings import Settings
from avis.shared.events import Language, Specialty

PARAMS = {
    "reference": "AV-2026-000042",
    "case_url": "http://127.0.0.1:8001/v1/cases/c-1",
    "specialty": "oncology",
    "due_date": "2026-03-09",
    "expires_date": "2026-03-15",
    "report_url": "http://127.0.0.1:8003/v1/reports/r-1?a=1&b=2",
    "version": "2",
    "work_url": "http://127.0.0.1:8000/follow-ups/f-1",
}


def test_both_catalogues_hold_the_same_keys_every_one_translated() -> None:
    fr, en = catalogue_keys(Language.FR), catalogue_keys(Language.EN)
    assert set(fr) == set(en)
    assert all(fr.values()) and all(en.values())
    for template in Template:
        for part in ("subject", "body", "next"):
            assert f"{template.value}.{part}" in fr
    for specialty in Specialty:
        assert f"specialty.{specialty.value}" in fr


@pytest.mark.parametrize("template", list(Template))
@pytest.mark.parametrize("language", list(Language))
def test_every_email_composes_with_its_headers(template: Template, language: Language) -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    msg = compose(
        template=template,
        language=language,
        params=PARAMS,
        to="patient@exemple.fr",
        sender="Avis <no-reply@avis.local>",
        message_id="<e-1@avis.local>",
        queued_at=at,
    )
    assert msg["Message-ID"] == "<e-1@avis.local>"
    assert msg["Content-Language"] == language.value
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] == "Sun, 01 Mar 2026 09:30:00 +0000"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "AV-2026-000042" in text and "AV-2026-000042" in str(msg["Subject"])
    assert text.startswith("Bonjour," if language is Language.FR else "Hello,")
    if template in (Template.REVIEW_ASSIGNED, Template.EXPECTED_DATE_CHANGED):
        assert ("9 mars 2026" if language is Language.FR else "March 9, 2026") in text
    if template in (Template.REPORT_READY, Template.REPORT_UPDATED):
        assert PARAMS["report_url"] in text
        assert 'href="http://127.0.0.1:8003/v1/reports/r-1?a=1&amp;b=2"' in html
    if template in (
        Template.PRO_FOLLOW_UP,
        Template.PRO_SECOND_READING,
        Template.PRO_COMMENTS,
        Template.PRO_TRANSLATION,
    ):
        assert PARAMS["work_url"] in text and PARAMS["work_url"] in html
    if template is Template.REVIEW_ASSIGNED:
        assert ("oncologie" if language is Language.FR else "oncology") in text
    else:
        assert "oncolog" not in text  # the specialty is told once, with the assignment


def test_a_missing_text_is_an_error_not_a_key_in_an_email() -> None:
    with pytest.raises(emails.MissingText):
        emails.text(Language.FR, "nope.subject")


def test_html_escapes_every_text() -> None:
    msg = compose(
        template=Template.CASE_RECEIVED,
        language=Language.EN,
        params={**PARAMS, "reference": "<b>AV</b>"},
        to="patient@exemple.fr",
        sender="Avis <no-reply@avis.local>",
        message_id="<e-2@avis.local>",
        queued_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<b>AV</b>" not in html and "&lt;b&gt;AV&lt;/b&gt;" in html


def test_smtp_settings() -> None:
    t = SmtpTarget.from_settings(Settings(smtp_url="smtp://u%40x:p%21@mail.example:587"))
    assert (t.hostname, t.port, t.username, t.password, t.use_tls) == (
        "mail.example",
        587,
        "u@x",
        "p!",
        False,
    )
    assert t.start_tls is None  # when offered
    t = SmtpTarget.from_settings(Settings(smtp_url="smtps://mail.example", smtp_starttls="always"))
    assert (t.port, t.use_tls, t.start_tls) == (465, True, False)
    t = SmtpTarget.from_settings(Settings(smtp_starttls="always", smtp_username="a"))
    assert t.start_tls is True and t.username == "a"
    with pytest.raises(ValueError, match="AVIS_SMTP_URL"):
        SmtpTarget.from_settings(Settings(smtp_url="http://x"))
