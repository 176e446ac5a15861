"""Intake's tighter reading policy as pure rules: a filing partner and the patient's consent, a
reviewer's access after their last report."""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from avis.intake.models import CaseStatus
from avis.intake.rules import (
    Access,
    may_read,
    may_read_clinical,
    reviewer_access_lapsed,
    sees_progress,
)
from avis.shared.access_log import check_reason
from avis.shared.events import ConsentScope
from avis.shared.security import Principal

PARTNER = Principal(sub="desk-1", role="partner", partner_id="insurer-1")
SCOPES = st.none() | st.frozensets(st.sampled_from(list(ConsentScope)))


@given(st.sampled_from(list(CaseStatus)), SCOPES)
def test_a_filing_partner_sees_clinical_content_only_with_consent_to_share(
    status: CaseStatus, scopes: frozenset[ConsentScope] | None
) -> None:
    case = Access(status, patient_id=None, partner_id="insurer-1", consent_scopes=scopes)
    sees = scopes is None or ConsentScope.SHARE_WITH_PARTNER in scopes
    assert may_read(PARTNER, case), "the partner always knows its case exists"
    assert may_read_clinical(PARTNER, case) == sees
    assert sees_progress(PARTNER, case) == sees


@given(st.sampled_from(["patient", "coordinator", "reviewer", "service"]), SCOPES)
def test_the_consent_to_share_concerns_partners_only(
    role: str, scopes: frozenset[ConsentScope] | None
) -> None:
    principal = Principal(sub="p-1", role=role)  # type: ignore[arg-type]
    case = Access(CaseStatus.ASSIGNED, "p-1", "insurer-1", "p-1", consent_scopes=scopes)
    assert sees_progress(principal, case)
    assert may_read_clinical(principal, case) == (role != "service")


def test_a_reviewers_access_lapses_a_set_time_after_their_last_report() -> None:
    window, done = timedelta(days=30), datetime(2026, 1, 1, tzinfo=UTC)
    reviewer = Principal(sub="rev-1", role="reviewer")

    def lapsed(at: datetime, *, last: datetime | None = done, open_: bool = False) -> bool:
        return reviewer_access_lapsed(last_active=last, request_open=open_, at=at, window=window)

    assert not lapsed(done + window - timedelta(seconds=1))
    assert lapsed(done + window)
    assert not lapsed(done + 10 * window, last=None), "no report yet: the review is on"
    assert not lapsed(done + 10 * window, open_=True), "a question of theirs is open"
    case = Access(CaseStatus.REPORT_READY, reviewer_id="rev-1", reviewer_lapsed=True)
    assert not may_read(reviewer, case) and not may_read_clinical(reviewer, case)


def test_a_coordinators_reason_is_read_as_the_utf8_it_was_sent_in() -> None:
    coordinator = Principal(sub="nurse-1", role="coordinator")
    sent = "contrôle qualité".encode().decode("latin-1")  # how the server hands the header over
    assert check_reason(coordinator, sent) == "contrôle qualité"
    assert check_reason(coordinator, "plain reason ") == "plain reason"
    assert check_reason(Principal(sub="p-1", role="patient"), None) is None
