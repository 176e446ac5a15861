"""Intake's tighter reading policy as pure rules: a filing partner and the patient's consent."""

from hypothesis import given
from hypothesis import strategies as st

from avis.intake.models import CaseStatus
from avis.intake.rules import Access, may_read, may_read_clinical, sees_progress
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
