"""The pure parts of the migration to per-case keys: which cases and copies it changes, a value
sealed again under a case key (bound as before), a key found again rather than made twice, and
review's and notify's copies of a case sealed under its key, those in clear included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from avis.intake.rules import needs_keying
from avis.notify.keying import sealed_case as notify_sealed
from avis.notify.store import CaseDoc as NotifyCase
from avis.notify.store import claim_aad, contact_aad
from avis.review import rules as review_rules
from avis.review.keying import sealed_round
from avis.review.models import DeclineReason, Opinion
from avis.review.store import AssignmentDoc, Decline, OpinionEntry
from avis.shared.case_keys import CaseKeys, case_kid, resealed, takes_key
from avis.shared.sealing import Keyring, SealingError, generate_key
from tests.support.samples import OPINION

SERVICE = Keyring.parse(f"k0:{generate_key()}")
CASE = SERVICE.led_by(case_kid("ref-1"), bytes(range(32)))
AT = datetime(2026, 1, 5, tzinfo=UTC)


def test_the_migration_works_on_cases_without_a_key_or_stopped_part_way() -> None:
    assert needs_keying(key_ref=None, keying=False, erased=False)
    assert needs_keying(key_ref="r", keying=True, erased=False), "stopped part way: go on"
    assert not needs_keying(key_ref="r", keying=False, erased=False), "keyed, or made with it"
    assert not needs_keying(key_ref=None, keying=False, erased=True), "erased: nothing left"


def test_a_copy_takes_the_key_once_and_an_older_or_foreign_event_changes_nothing() -> None:
    assert takes_key(None, "r", erased=False)
    assert takes_key("r", "r", erased=False), "a redelivery goes on where it stopped"
    assert not takes_key("s", "r", erased=False)
    assert not takes_key(None, "r", erased=True)


def test_a_value_is_sealed_again_under_the_case_key_bound_as_before() -> None:
    old = SERVICE.seal(b"Dr Prud'homme", "intake:case:c1")
    new = resealed(CASE, old, "intake:case:c1")
    assert new.kid == case_kid("ref-1")
    assert CASE.open(new, "intake:case:c1") == b"Dr Prud'homme"
    assert resealed(CASE, new, "intake:case:c1") is new, "under the case key: left as it is"
    with pytest.raises(SealingError):
        resealed(CASE, old, "intake:case:c2")


class Names:
    """A key service that knows which key was made for which case."""

    def __init__(self) -> None:
        self.made: dict[str, str] = {}

    async def create_key(self, case_id: str) -> str:
        self.made[case_id] = f"key-{len(self.made) + 1}"
        return self.made[case_id]

    async def find_key(self, case_id: str) -> str | None:
        return self.made.get(case_id)

    async def key(self, key_id: str) -> bytes:
        return bytes(32)

    async def destroy(self, key_id: str) -> None:
        return None

    def forget(self, key_id: str) -> None:
        return None

    def close(self) -> None:
        return None


async def test_a_key_made_but_not_recorded_is_found_again_not_made_twice() -> None:
    names = Names()
    keys = CaseKeys(SERVICE, names)
    first = await keys.made("c1")
    assert await keys.made("c1") == first
    assert names.made == {"c1": first}
    assert await CaseKeys(SERVICE, None).made("c1") is None


def round_in_clear() -> AssignmentDoc:
    opinion = Opinion.model_validate(OPINION)
    sealed = OpinionEntry(
        version=2,
        digest="d",
        completed_at=AT,
        event_id="e2",
        sealed=SERVICE.seal_json(opinion, review_rules.opinion_aad("a1", 2)),
    )
    clear = OpinionEntry(version=1, digest="d", completed_at=AT, event_id="e1", opinion=OPINION)
    return AssignmentDoc.model_validate(
        {
            "_id": "a1",
            "case_id": "c1",
            "round": 1,
            "reviewer_id": "r1",
            "status": "completed",
            "specialty": "oncology",
            "urgency": "routine",
            "language": "fr",
            "assigned_at": AT,
            "due_at": AT,
            "sort_key": "k",
            "opinions": [clear.model_dump(), sealed.model_dump()],
            "decline": Decline(
                reason_code=DeclineReason.OTHER, reason="the patient's sister"
            ).model_dump(),
        }
    )


def test_review_seals_opinions_and_a_decline_reason_in_clear_or_under_its_keyring() -> None:
    opinions, decline = sealed_round(CASE, round_in_clear())
    for entry in opinions:
        assert entry.opinion is None and entry.sealed is not None
        assert entry.sealed.kid == case_kid("ref-1")
        aad = review_rules.opinion_aad("a1", entry.version)
        assert CASE.open_model(entry.sealed, aad, Opinion) == Opinion.model_validate(OPINION)
    assert decline is not None and decline.reason is None and decline.sealed_reason is not None
    reason = CASE.open(decline.sealed_reason, review_rules.decline_aad("a1"))
    assert reason == b"the patient's sister"


def test_notify_seals_the_contact_it_uses_and_the_claim_under_the_case_key() -> None:
    whole = {"email": "a@example.org", "preferred_language": "fr", "family_name": "Vasseur"}
    case = NotifyCase(
        id="c1",
        contact=SERVICE.seal_json(whole, contact_aad("c1")),
        claim=SERVICE.seal(b"{}", claim_aad("c1")),
    )
    keyed = notify_sealed(CASE, case, "ref-1")
    assert keyed.key_ref == "ref-1"
    assert keyed.contact is not None and keyed.claim is not None
    kept = CASE.open_json(keyed.contact, contact_aad("c1"))
    assert kept == {"email": "a@example.org", "preferred_language": "fr"}, "only what it uses"
    assert CASE.open(keyed.claim, claim_aad("c1")) == b"{}"
    assert {keyed.contact.kid, keyed.claim.kid} == {case_kid("ref-1")}
