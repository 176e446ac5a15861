"""Review's access-trail decisions, without a store: which repeats fold into the last entry, who
gives a reason, and who reads a case's trail in review."""

from avis.review import rules
from avis.shared.access_log import describe
from avis.shared.audit import fhir_action
from avis.shared.security import Principal


def test_repeated_reads_fold_but_writes_and_reads_for_a_reason_never_do() -> None:
    assert rules.fold_window("opinion.read") == rules.REPEATED_READ_FOLD
    assert rules.fold_window("decline.read") == rules.REPEATED_READ_FOLD
    for write in ("opinion.create", "opinion.correct", "review.decline"):
        assert rules.fold_window(write) is None


def test_a_coordinator_gives_a_reason_for_the_opinion_only() -> None:
    assert rules.needs_reason("opinion.read")
    assert not rules.needs_reason("decline.read")


def test_coordinators_and_the_cases_patient_read_its_trail() -> None:
    assert rules.may_read_trail(Principal(sub="c-1", role="coordinator"), None)
    assert rules.may_read_trail(Principal(sub="pat-1", role="patient"), "pat-1")
    assert not rules.may_read_trail(Principal(sub="pat-2", role="patient"), "pat-1")
    assert not rules.may_read_trail(Principal(sub="pat-1", role="patient"), None)
    assert not rules.may_read_trail(Principal(sub="pat-1", role="reviewer"), "pat-1")


def test_every_action_has_its_words_and_a_fhir_verb() -> None:
    verbs = {action: fhir_action(action) for action in rules.ACTIONS}
    assert verbs == {
        "opinion.read": "R",
        "opinion.create": "C",
        "opinion.correct": "U",
        "decline.read": "R",
        "review.decline": "U",
        "information.create": "C",
        "second-reading.read": "R",
        "second-reading.comment": "U",
        "translation.read": "R",
        "translation.write": "U",
        "second-reading.agree": "U",
        "follow-up.create": "C",
        "follow-up.read": "R",
        "follow-up.answer": "U",
    }
    said = describe(
        rules.ACTIONS,
        role="coordinator",
        you=False,
        action="opinion.read",
        outcome="refused",
        status=428,
        at="2026-01-01 10:00 UTC",
    )
    assert said == (
        "A coordinator tried to read the specialist's opinion on 2026-01-01 10:00 UTC "
        "and was refused (428)."
    )
