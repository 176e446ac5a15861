"""A reviewer's work address: sealed in the directory under the service's keyring, opened
with their current languages, sealed again under the case's key for one event."""

from datetime import UTC, datetime

from avis.review import contacts, rules
from avis.review.models import ReviewerIn
from avis.review.store import ReviewerDoc
from avis.shared.events import Language, ProfessionalContact, Specialty
from avis.shared.sealing import Keyring, Sealed, generate_key

AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
EMAIL = "dr.onc@hopital.example"


def reviewer(email: str | None = EMAIL) -> ReviewerIn:
    return ReviewerIn(
        id="onc-1",
        display_name="Dr Onc",
        specialties=[Specialty.ONCOLOGY],
        languages=[Language.FR, Language.EN],
        capacity=3,
        email=email,
    )


def test_the_address_is_kept_sealed_and_never_shown_back() -> None:
    keyring = Keyring.parse(f"k1:{generate_key()}")
    body = reviewer()
    doc = ReviewerDoc.new(body, AT, contacts.sealed_contact(keyring, body.id, body.email))
    assert EMAIL not in str(doc.to_doc())
    assert EMAIL not in doc.view().model_dump_json()
    assert doc.same_as(body)
    opened = contacts.contact_of(keyring, doc)
    assert opened == ProfessionalContact(email=EMAIL, languages=[Language.FR, Language.EN])
    assert doc.contact is not None
    assert keyring.open_json(doc.contact, rules.reviewer_contact_aad("onc-1"))["email"] == EMAIL


def test_no_address_no_contact_and_another_key_opens_none() -> None:
    keyring = Keyring.parse(f"k1:{generate_key()}")
    assert contacts.sealed_contact(keyring, "onc-1", None) is None
    body = reviewer()
    doc = ReviewerDoc.new(body, AT, contacts.sealed_contact(keyring, body.id, body.email))
    assert contacts.contact_of(Keyring.parse(f"k1:{generate_key()}"), doc) is None


def test_sealed_for_one_event_only() -> None:
    ring = Keyring.parse(f"k1:{generate_key()}")
    contact = ProfessionalContact(email=EMAIL, languages=[Language.EN])
    sealed = contacts.for_event(ring, contact, "e-1")
    assert sealed is not None and EMAIL not in sealed.model_dump_json()
    assert ring.open_model(sealed, "e-1", ProfessionalContact) == contact
    assert contacts.for_event(ring, None, "e-1") is None


def test_a_patch_seals_a_new_address_or_drops_it() -> None:
    keyring = Keyring.parse(f"k1:{generate_key()}")
    assert contacts.sealed_changes(keyring, "onc-1", {"capacity": 2}) == {"capacity": 2}
    changed = contacts.sealed_changes(keyring, "onc-1", {"email": EMAIL, "capacity": 2})
    assert set(changed) == {"contact", "capacity"} and EMAIL not in str(changed)
    opened = keyring.open_json(
        Sealed.model_validate(changed["contact"]), "review:reviewer-contact:onc-1"
    )
    assert opened["email"] == EMAIL
    assert contacts.sealed_changes(keyring, "onc-1", {"email": None}) == {"contact": None}
