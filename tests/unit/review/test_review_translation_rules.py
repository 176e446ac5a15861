"""International review's translation step: its languages, ids, due date, the translators'
queue by language pair, who writes it, the specialist waiting for it, and when it is overdue."""

from datetime import UTC, datetime, timedelta

import pytest

from avis.review import rules
from avis.review.models import AssignmentStatus, Opinion, TranslationBody
from avis.review.rules import (
    TranslationState,
    TranslationWay,
    TranslatorFit,
    check_specialist_may_start,
    check_translation_access,
    check_translation_open,
    choose_translator,
    may_take_translation,
    may_write_translation,
    translation_aad,
    translation_due,
    translation_id_for,
    translation_languages,
    translation_overdue,
)
from avis.review.settings import Settings
from avis.review.store import AssignmentDoc, TranslationEntry
from avis.shared.events import Language
from avis.shared.problems import Problem
from avis.shared.security import Principal
from tests.support.samples import OPINION

AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def translator(
    tid: str, *, languages: tuple[str, ...] = ("fr", "en"), load: int = 0
) -> TranslatorFit:
    return TranslatorFit(id=tid, languages=frozenset(languages), capacity=2, load=load)


def person(sub: str, role: str) -> Principal:
    return Principal(sub=sub, role=role)


def test_both_ways_are_the_same_pair_reversed() -> None:
    there = translation_languages(TranslationWay.TO_SPECIALIST, "fr", ["en", "de"])
    back = translation_languages(TranslationWay.TO_PATIENT, "fr", ["de", "en"])
    assert there == ("fr", "de")
    assert back == ("de", "fr")


def test_ids_and_bindings_are_derived_so_a_replay_adds_nothing() -> None:
    there = translation_id_for("a-0001", TranslationWay.TO_SPECIALIST)
    back = translation_id_for("a-0001", TranslationWay.TO_PATIENT)
    assert there != back
    assert there == translation_id_for("a-0001", TranslationWay.TO_SPECIALIST)
    assert translation_aad(there) != translation_aad(back)


def test_its_own_due_date_from_the_setting() -> None:
    assert translation_due(AT, 2.0) - AT == timedelta(days=2)
    assert Settings().translation_due_days == 2.0


def test_the_translator_of_the_pair_with_the_least_load() -> None:
    pool = [
        translator("b", load=1),
        translator("a", load=1),
        translator("c", languages=("fr", "de")),
        translator("d", load=2),
    ]
    assert choose_translator(("fr", "en"), pool) == "a"
    assert choose_translator(("en", "fr"), pool) == "a", "a pair is translated both ways"
    assert choose_translator(("fr", "it"), pool) is None, "waits in its pair's queue"


def test_only_the_translator_who_took_it_writes_it() -> None:
    assert may_take_translation(TranslationState.QUEUED, None, "t1")
    assert not may_take_translation(TranslationState.TAKEN, "t1", "t1")
    with pytest.raises(Problem):
        may_take_translation(TranslationState.TAKEN, "t2", "t1")
    assert may_write_translation(TranslationState.TAKEN, "t1", "t1")
    assert not may_write_translation(TranslationState.DONE, "t1", "t1"), "a replay"
    with pytest.raises(Problem):
        may_write_translation(TranslationState.TAKEN, "t2", "t1")
    with pytest.raises(Problem):
        may_write_translation(TranslationState.QUEUED, None, "t1")


@pytest.mark.parametrize(
    ("status", "state", "refusal"),
    [
        (AssignmentStatus.CANCELLED, TranslationState.QUEUED, "translation-cancelled"),
        (AssignmentStatus.DECLINED, TranslationState.TAKEN, "translation-closed"),
        (AssignmentStatus.DECLINED, TranslationState.CLOSED, "translation-closed"),
        (AssignmentStatus.ASSIGNED, TranslationState.CLOSED, "translation-closed"),
    ],
)
def test_a_translation_closes_with_its_round(
    status: AssignmentStatus, state: TranslationState, refusal: str
) -> None:
    """Declined by the specialist or withdrawn: the round's translation is taken and written no
    more (409)."""
    with pytest.raises(Problem) as refused:
        check_translation_open(status, state)
    assert (refused.value.status, refused.value.type.rsplit("/", 1)[-1]) == (409, refusal)
    assert TranslationState.CLOSED not in rules.OPEN_TRANSLATION


@pytest.mark.parametrize("status", [AssignmentStatus.ASSIGNED, AssignmentStatus.COMPLETED])
def test_a_live_rounds_translation_is_open(status: AssignmentStatus) -> None:
    for state in rules.OPEN_TRANSLATION:
        check_translation_open(status, state)


def test_the_specialist_gets_the_case_once_it_is_translated() -> None:
    check_specialist_may_start(None)
    check_specialist_may_start(TranslationState.DONE)
    with pytest.raises(Problem) as refused:
        check_specialist_may_start(TranslationState.TAKEN)
    assert refused.value.status == 409


def test_who_reads_a_translation() -> None:
    check_translation_access(person("c1", "coordinator"), "t1")
    check_translation_access(person("t1", "translator"), "t1")
    check_translation_access(person("t2", "translator"), None)
    for sub, role in (("t2", "translator"), ("t1", "reviewer"), ("t1", "patient")):
        with pytest.raises(Problem) as refused:
            check_translation_access(person(sub, role), "t1")
        assert refused.value.status == 403


def test_a_translation_gives_the_text_of_its_way_and_only_it() -> None:
    opinion = Opinion.model_validate(OPINION)
    to_specialist, to_patient = rules.TranslationWay.TO_SPECIALIST, rules.TranslationWay.TO_PATIENT
    assert rules.translation_texts(to_specialist, TranslationBody(summary="Pain.")).summary
    assert rules.translation_texts(to_patient, TranslationBody(opinion=opinion)).opinion == opinion
    for way, body in (
        (to_specialist, TranslationBody(opinion=opinion)),
        (to_specialist, TranslationBody(summary="Pain.", opinion=opinion)),
        (to_patient, TranslationBody(summary="Pain.")),
        (to_patient, TranslationBody()),
    ):
        with pytest.raises(Problem) as refused:
            rules.translation_texts(way, body)
        assert refused.value.status == 422


def test_the_specialist_reads_the_translation_into_their_language_once_done() -> None:
    me = Principal(sub="rev-en", role="reviewer")
    done, taken = rules.TranslationState.DONE, rules.TranslationState.TAKEN
    to_specialist = rules.TranslationWay.TO_SPECIALIST
    assert rules.may_read_translation(me, to_specialist, done, "rev-en")
    assert not rules.may_read_translation(me, to_specialist, taken, "rev-en")
    assert not rules.may_read_translation(me, rules.TranslationWay.TO_PATIENT, done, "rev-en")
    assert not rules.may_read_translation(me, to_specialist, done, "rev-other")


def test_a_translation_id_names_its_assignment() -> None:
    for way in rules.TranslationWay:
        tid = rules.translation_id_for("c-1.r2", way)
        assert rules.assignment_of_translation(tid) == "c-1.r2"


def test_a_round_shows_its_translations_and_where_each_is_never_their_text() -> None:
    sealed = {"alg": "A256GCM", "kid": "case-key-1", "nonce": "bm9uY2U", "ct": "c2VjcmV0"}
    first = TranslationEntry(
        id=translation_id_for("c-1.r1", TranslationWay.TO_SPECIALIST),
        way=TranslationWay.TO_SPECIALIST,
        state=TranslationState.DONE,
        from_language=Language.FR,
        to_language=Language.EN,
        translator_id="tr-1",
        translator_display_name="Tom Translator",
        queued_at=AT,
        due_at=AT + timedelta(days=2),
        done_at=AT + timedelta(hours=3),
    )
    doc = AssignmentDoc.model_validate(
        {
            "_id": "c-1.r1",
            "case_id": "c-1",
            "round": 1,
            "reviewer_id": "rev-en",
            "status": "assigned",
            "specialty": "cardiology",
            "urgency": "routine",
            "language": "fr",
            "assigned_at": AT,
            "due_at": AT + timedelta(days=5),
            "sort_key": "x",
            "international": True,
            "translations": [first.model_dump() | {"sealed": sealed}],
        }
    )
    view = doc.view(at=AT, coordinator=False)
    assert [t.model_dump(mode="json") for t in view.translations] == [
        {
            "id": "c-1.r1-t1",
            "way": "to_specialist",
            "state": "done",
            "from_language": "fr",
            "to_language": "en",
        }
    ]
    assert "c2VjcmV0" not in view.model_dump_json()
    assert first.view(doc, at=AT).translator_display_name == "Tom Translator"
    # Done: never overdue, even read after its due date.
    assert first.view(doc, at=AT + timedelta(days=9)).overdue is False


def test_an_open_translation_past_its_own_due_date_is_overdue_until_done() -> None:
    due = AT + timedelta(days=2)
    for state in (TranslationState.QUEUED, TranslationState.TAKEN):
        assert not translation_overdue(state, due, due), "due at that moment: not yet late"
        assert translation_overdue(state, due, due + timedelta(seconds=1))
    for state in (TranslationState.DONE, TranslationState.CLOSED):
        assert not translation_overdue(state, due, due + timedelta(days=1))
