"""Properties of intake's access policy over generated cases and callers (no store)."""

import string

from hypothesis import given
from hypothesis import strategies as st

from avis.intake.models import CaseStatus
from avis.intake.rules import (
    REVIEWER_READABLE,
    Access,
    listing_scope,
    may_read,
    may_read_clinical,
    owns,
)
from avis.shared.security import Principal

IDS = st.sampled_from(["a", "b", "c"]) | st.text(string.ascii_lowercase, min_size=1, max_size=4)
ROLES = st.sampled_from(["patient", "partner", "reviewer", "coordinator", "service"])


@st.composite
def principals(draw: st.DrawFn) -> Principal:
    role = draw(ROLES)
    partner = draw(IDS) if role == "partner" else None
    return Principal(sub=draw(IDS), role=role, partner_id=partner)


cases = st.builds(
    Access,
    status=st.sampled_from(list(CaseStatus)),
    patient_id=st.none() | IDS,
    partner_id=st.none() | IDS,
    reviewer_id=st.none() | IDS,
)


@given(principals(), cases)
def test_clinical_content_is_never_wider_than_the_case_itself(
    principal: Principal, case: Access
) -> None:
    if may_read_clinical(principal, case):
        assert may_read(principal, case)
    if principal.role == "service":
        assert may_read(principal, case) and not may_read_clinical(principal, case)


@given(principals(), cases)
def test_only_its_owner_its_current_reviewer_or_staff_read_a_case(
    principal: Principal, case: Access
) -> None:
    readable = may_read(principal, case)
    if principal.role == "patient":
        assert readable == (case.patient_id == principal.sub)
    elif principal.role == "partner":
        assert readable == (case.partner_id == principal.partner_id)
    elif principal.role == "reviewer":
        reviewing = case.reviewer_id == principal.sub and case.status in REVIEWER_READABLE
        assert readable == reviewing
    else:
        assert readable
    assert not (owns(principal, case) and principal.role not in ("patient", "partner"))


@given(principals(), cases, st.none() | st.sampled_from(list(CaseStatus)))
def test_a_list_holds_only_cases_the_caller_may_read(
    principal: Principal, case: Access, status: CaseStatus | None
) -> None:
    """A case the list scope selects is one the caller may read (the store applies the scope)."""
    scope = listing_scope(principal, status)
    if scope is None:
        return
    selected = (scope.field is None or getattr(case, scope.field) == scope.value) and (
        scope.statuses is None or case.status in scope.statuses
    )
    if selected:
        assert may_read(principal, case)
