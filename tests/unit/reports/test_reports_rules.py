"""Pure decisions of the reports service: who may read, which versions are composed, what the
client asked for, how the versions page."""

import pytest

from avis.reports.rules import (
    Readers,
    choose_media_type,
    erasable_versions,
    may_read,
    opinions_to_compose,
    page_of_versions,
    report_id_for,
    version_key,
)
from avis.shared.security import Principal, Role

READERS = Readers(
    patient_id="pat-1",
    partner_id="insurer-9",
    consent_scopes=frozenset({"review", "share_with_partner"}),
    reviewer_ids=frozenset({"rev-1"}),
)


def who(sub: str, role: Role, partner_id: str | None = None) -> Principal:
    return Principal(sub=sub, role=role, partner_id=partner_id)


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        (who("pat-1", "patient"), True),
        (who("pat-2", "patient"), False),
        (who("anyone", "partner", "insurer-9"), True),
        (who("anyone", "partner", "insurer-8"), False),
        (who("rev-1", "reviewer"), True),
        (who("rev-2", "reviewer"), False),
        (who("coord", "coordinator"), True),
        (who("pat-1", "service"), False),
        # A subject that matches in another role is not the patient.
        (who("pat-1", "reviewer"), False),
        (who("rev-1", "patient"), False),
    ],
)
def test_who_may_read_a_report(principal: Principal, allowed: bool) -> None:
    assert may_read(principal, READERS) is allowed


def test_the_partner_reads_only_with_the_patients_consent_to_share() -> None:
    without = Readers("pat-1", "insurer-9", frozenset({"review"}), frozenset())
    assert not may_read(who("x", "partner", "insurer-9"), without)
    no_partner = Readers("pat-1", None, frozenset({"review", "share_with_partner"}), frozenset())
    assert not may_read(who("x", "partner", "insurer-9"), no_partner)


def test_a_case_filed_by_a_partner_has_no_patient_reader() -> None:
    partner_filed = Readers(None, "insurer-9", frozenset({"share_with_partner"}), frozenset())
    assert not may_read(who("pat-1", "patient"), partner_filed)


@pytest.mark.parametrize(
    ("received", "composed", "known", "withdrawn", "due"),
    [
        ([1], [], True, False, [1]),
        ([1], [], False, False, []),  # the case is not known yet: the opinion waits
        ([1], [1], True, False, []),  # a redelivery makes nothing new
        ([1, 2], [1], True, False, [2]),  # a correction
        ([2, 1, 3], [], True, False, [1, 2, 3]),  # parked versions, oldest first
        ([1, 2], [2], True, False, []),  # an older version arriving late
        ([1, 2], [1], True, True, []),  # withdrawn: nothing more
    ],
)
def test_which_opinion_versions_become_report_versions(
    received: list[int], composed: list[int], known: bool, withdrawn: bool, due: list[int]
) -> None:
    assert opinions_to_compose(received, composed, case_known=known, withdrawn=withdrawn) == due


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/pdf", "application/pdf"),
        ("APPLICATION/PDF", "application/pdf"),
        ("application/fhir+json", "application/fhir+json"),
        ("application/fhir+json; fhirVersion=4.3", "application/fhir+json"),
        ("text/html, application/pdf;q=0.9, */*;q=0.1", "application/pdf"),
        ("application/json;q=0.5, application/pdf", "application/pdf"),
        ("application/pdf;q=0.5, application/fhir+json;q=0.8", "application/fhir+json"),
        ("application/*", "application/json"),
        ("text/html", None),
        ("application/pdf;q=0", None),
        ("image/png, text/plain", None),
        ("garbage", None),
    ],
)
def test_the_representation_follows_accept(accept: str | None, chosen: str | None) -> None:
    assert choose_media_type(accept) == chosen


def test_versions_page_newest_first() -> None:
    assert page_of_versions([1, 2, 3, 4, 5], None, 2) == ([5, 4], 4)
    assert page_of_versions([1, 2, 3, 4, 5], 4, 2) == ([3, 2], 2)
    assert page_of_versions([1, 2, 3, 4, 5], 2, 2) == ([1], None)
    assert page_of_versions([1], None, 20) == ([1], None)


def test_report_ids_are_stable_per_case_and_versions_are_keyed() -> None:
    assert report_id_for("case-1") == report_id_for("case-1") != report_id_for("case-2")
    assert version_key(report_id_for("case-1"), 2).endswith(":v2")


def test_an_erasure_deletes_every_issued_version_and_the_one_an_issue_may_have_kept() -> None:
    assert erasable_versions("r", [1, 2]) == ["r:v1", "r:v2", "r:v3"]
    assert erasable_versions("r", [2, 1, 2]) == ["r:v1", "r:v2", "r:v3"]
    assert erasable_versions("r", []) == ["r:v1"]  # kept, not yet announced
