"""The treating physician's link as pure rules: it opens the report for a set time after the
latest version was issued (a new version opens it anew), then is refused with a plain reason in
both languages."""

from datetime import UTC, datetime, timedelta

from avis.reports.i18n import texts
from avis.reports.rules import physician_link_expired, physician_link_lapsed
from avis.reports.settings import Settings
from avis.shared.events import Language


def test_the_link_lapses_its_window_after_the_latest_version() -> None:
    issued = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    window = timedelta(days=Settings().physician_link_days)
    assert window == timedelta(days=30), "30 days by default"
    assert not physician_link_lapsed(issued_at=issued, at=issued, window=window)
    just_before = issued + window - timedelta(milliseconds=1)
    assert not physician_link_lapsed(issued_at=issued, at=just_before, window=window)
    assert physician_link_lapsed(issued_at=issued, at=issued + window, window=window)
    # A later version (an addendum, a correction), emailed again, opens it for the window again.
    later = issued + timedelta(days=20)
    assert not physician_link_lapsed(issued_at=later, at=issued + window, window=window)
    # The setting moves it.
    short = timedelta(days=Settings(physician_link_days=1).physician_link_days)
    assert physician_link_lapsed(issued_at=issued, at=issued + timedelta(days=1), window=short)


def test_the_refusal_says_why_in_both_languages() -> None:
    title, detail = physician_link_expired(
        timedelta(days=30), [texts(Language.EN), texts(Language.FR)]
    )
    assert title == "Link expired / Lien expiré"
    assert "This link to the report has expired" in detail and "30 days" in detail
    assert "Ce lien vers le rapport a expiré" in detail and "30 jours" in detail
