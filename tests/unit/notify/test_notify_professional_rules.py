"""The professionals' emails as pure rules: which events give a professional work, the page
each links to, and the language each is written in."""

from datetime import UTC, datetime

import pytest

from avis.notify.emails import CATALOGUED
from avis.notify.models import Template
from avis.notify.rules import professional_language, professional_work
from avis.shared.events import (
    FollowUpAnswered,
    FollowUpAsked,
    Language,
    SecondReadingCommented,
    SecondReadingRequested,
)
from avis.shared.sealing import Sealed

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
SEALED = Sealed(alg="A256GCM", kid="k1", nonce="bm9uY2U", ct="Y2lwaGVydGV4dA")
PAGES = "https://avis.example/"


def asked(recipient: Sealed | None) -> FollowUpAsked:
    return FollowUpAsked(
        case_id="c-1",
        assignment_id="a-1",
        reviewer_id="onc-1",
        follow_up_id="a-1.f1",
        number=1,
        asked_at=AT,
        due_at=AT,
        question=SEALED,
        recipient=recipient,
        seq=3,
    )


def requested(recipient: Sealed | None) -> SecondReadingRequested:
    return SecondReadingRequested(
        case_id="c-1",
        assignment_id="a/1",
        reviewer_id="onc-1",
        second_reader_id="onc-2",
        version=1,
        requested_at=AT,
        reason="coordinator_rule",
        recipient=recipient,
        seq=2,
    )


def commented(recipient: Sealed | None) -> SecondReadingCommented:
    return SecondReadingCommented(
        case_id="c-1",
        assignment_id="a-1",
        reviewer_id="onc-1",
        second_reader_id="onc-2",
        version=1,
        commented_at=AT,
        comments=SEALED,
        recipient=recipient,
        seq=3,
    )


def test_each_work_links_to_the_page_where_it_is_done() -> None:
    follow_up = professional_work(asked(SEALED), PAGES)
    reading = professional_work(requested(SEALED), PAGES)
    comments = professional_work(commented(SEALED), PAGES)
    assert follow_up is not None and reading is not None and comments is not None
    assert (follow_up.template, follow_up.link) == (
        Template.PRO_FOLLOW_UP,
        "https://avis.example/follow-ups/a-1.f1",
    )
    assert (reading.template, reading.link) == (
        Template.PRO_SECOND_READING,
        "https://avis.example/second-readings/a%2F1",
    )
    assert (comments.template, comments.link) == (
        Template.PRO_COMMENTS,
        "https://avis.example/review/a-1",
    )
    assert follow_up.recipient == SEALED


@pytest.mark.parametrize("event", [asked, requested, commented])
def test_no_address_no_email(event) -> None:  # type: ignore[no-untyped-def]
    assert professional_work(event(None), PAGES) is None


def test_an_event_without_work_for_a_professional_sends_them_nothing() -> None:
    answered = FollowUpAnswered(
        case_id="c-1",
        assignment_id="a-1",
        reviewer_id="onc-1",
        follow_up_id="a-1.f1",
        number=1,
        answered_at=AT,
        answer=SEALED,
        seq=4,
    )
    assert professional_work(answered, PAGES) is None


def test_written_in_the_first_of_their_languages_with_a_catalogue() -> None:
    assert set(CATALOGUED) == {Language.EN, Language.FR}
    assert professional_language([Language.FR, Language.EN], CATALOGUED) is Language.FR
    assert professional_language([Language.EN, Language.FR], CATALOGUED) is Language.EN
    assert professional_language([Language.FR], (Language.EN,)) is Language.EN
    assert professional_language([], CATALOGUED) is Language.EN
