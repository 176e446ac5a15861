"""International review in notify: the first assignment to a specialist who does not read the
patient's language tells them the review goes abroad, through a translator, with the date; once."""

from datetime import UTC, date, datetime

from avis.notify import rules
from avis.notify.emails import compose
from avis.notify.models import Template
from avis.notify.rules import CaseView
from avis.shared.events import Language

D1, D2 = date(2026, 3, 9), date(2026, 3, 12)
SUBMITTED = CaseView(submitted=True)


def test_the_patient_is_told_the_review_goes_abroad_once() -> None:
    abroad = rules.on_assigned(SUBMITTED, D1, international=True)
    assert abroad.send is Template.REVIEW_ABROAD
    assert abroad.then.told_due == D1 and abroad.then.told_abroad
    again = rules.on_assigned(abroad.then, D1, international=True)
    assert again.send is None, "reassigned abroad, same date: nothing"
    moved = rules.on_assigned(abroad.then, D2, international=True)
    assert moved.send is Template.EXPECTED_DATE_CHANGED


def test_abroad_after_a_reader_declined_is_told_too() -> None:
    first = rules.on_assigned(SUBMITTED, D1)
    assert first.send is Template.REVIEW_ASSIGNED and not first.then.told_abroad
    abroad = rules.on_assigned(first.then, D1, international=True)
    assert abroad.send is Template.REVIEW_ABROAD


def test_the_email_says_abroad_and_translator_with_the_date_in_both_languages() -> None:
    for language, words, when in (
        (Language.FR, ("étranger", "traducteur"), "9 mars 2026"),
        (Language.EN, ("abroad", "translator"), "March 9, 2026"),
    ):
        msg = compose(
            template=Template.REVIEW_ABROAD,
            language=language,
            params={"reference": "AV-2026-000042", "due_date": D1.isoformat()},
            to="patient@exemple.fr",
            sender="Avis <no-reply@avis.local>",
            message_id="<e-1@avis.local>",
            queued_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        )
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert all(w in text for w in words), text
        assert when in text and "AV-2026-000042" in text


def test_a_translator_is_told_a_translation_waits_with_its_page() -> None:
    from avis.shared.events import TranslationQueued
    from avis.shared.sealing import Sealed

    sealed = Sealed(
        alg="A256GCM", kid="case.k", nonce="AAAAAAAAAAAAAAAA", ct="AAAAAAAAAAAAAAAAAAAAAAAA"
    )
    queued = TranslationQueued(
        case_id="c-1",
        assignment_id="c-1.r1",
        reviewer_id="rev-en",
        translation_id="c-1.r1-t1",
        way="to_specialist",
        from_language=Language.FR,
        to_language=Language.EN,
        translator_id="tr-1",
        queued_at=datetime(2026, 3, 1, tzinfo=UTC),
        due_at=datetime(2026, 3, 3, tzinfo=UTC),
        recipient=sealed,
        seq=2,
    )
    work = rules.professional_work(queued, "https://avis.example/")
    assert work is not None and work.template is Template.PRO_TRANSLATION
    assert work.link == "https://avis.example/translations/c-1.r1-t1"
    assert rules.professional_work(queued.model_copy(update={"recipient": None}), "x") is None
    assert rules.on_translation(SUBMITTED).send is None, "the patient was told at assignment"


def test_a_translations_webhook_carries_the_cases_status() -> None:
    """To the specialist the case is still assigned (accepted only once translated); back to
    the patient it is in review until the report."""
    from avis.notify.models import WebhookEvent
    from avis.shared.events import TranslationDone

    done = TranslationDone(
        case_id="c-1",
        assignment_id="c-1.r1",
        reviewer_id="rev-en",
        translation_id="c-1.r1-t1",
        way="to_specialist",
        from_language=Language.FR,
        to_language=Language.EN,
        translator_id="tr-1",
        done_at=datetime(2026, 3, 2, tzinfo=UTC),
        seq=3,
    )
    back = done.model_copy(update={"way": "to_patient", "translation_id": "c-1.r1-t2"})
    for payload, status in ((done, "assigned"), (back, "in_review")):
        read = rules.reading(payload, SUBMITTED, UTC)
        body = rules.webhook_payload(
            event_id="evt-1",
            event_type=WebhookEvent.TRANSLATION_DONE,
            source="/avis/review",
            time=datetime(2026, 3, 2, tzinfo=UTC),
            case_id="c-1",
            reference="AV-2026-000001",
            partner_reference=None,
            link="https://avis.example/cases/c-1",
            extra=read.extra,
            status=read.status,
        )
        assert body["data"]["status"] == status, payload.way  # type: ignore[index]
