"""The physician's copy as pure rules: the physician's email and the consent to send them the
report come together, and the submission event names only the scopes its readers know."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avis.intake.rules import check_physician_consent, published_scopes
from avis.shared.events import ConsentScope, SubmittedScope
from avis.shared.problems import Problem

SCOPES = st.lists(st.sampled_from(list(ConsentScope)), unique=True)


@given(SCOPES, st.booleans())
def test_an_email_and_its_consent_come_together(
    scopes: list[ConsentScope], has_email: bool
) -> None:
    share = ConsentScope.SHARE_WITH_PHYSICIAN in scopes
    if share == has_email:
        check_physician_consent(scopes, has_email=has_email)
        return
    with pytest.raises(Problem) as refused:
        check_physician_consent(scopes, has_email=has_email)
    assert refused.value.status == 422
    expected = "physician-contact-required" if share else "physician-consent-required"
    assert refused.value.type.endswith(expected)


@given(SCOPES)
def test_the_event_names_only_the_scopes_its_readers_know(scopes: list[ConsentScope]) -> None:
    published = published_scopes(scopes)
    assert set(published) <= {s.value for s in SubmittedScope}
    told_apart = {ConsentScope.SHARE_WITH_PHYSICIAN, ConsentScope.INTERNATIONAL_REVIEW}
    assert published == [s.value for s in scopes if s not in told_apart]
