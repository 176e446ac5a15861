"""The professionals' work addresses: kept sealed in the directory under the service's keyring
(they are no case's data), and sealed again under the case's key, for one event, when that
event tells a professional that work waits for them (a follow-up question, a reading to do,
comments to answer). Notify opens them there; they are never in clear on Kafka, in logs or in
traces. A translator is told the same way: a `ProfessionalContact` in their own event."""

from __future__ import annotations

from typing import Any

import structlog

from avis.review import rules
from avis.review.models import TranslatorIn
from avis.review.store import ReviewerDoc, Store
from avis.shared.events import ProfessionalContact
from avis.shared.sealing import Keyring, Sealed, SealingError

log = structlog.get_logger("avis.review")


def sealed_contact(keyring: Keyring, reviewer_id: str, email: str | None) -> Sealed | None:
    """A new reviewer's address as the directory keeps it (None: none given)."""
    if email is None:
        return None
    contact = ProfessionalContact(email=email, languages=[])
    return keyring.seal_json(contact, rules.reviewer_contact_aad(reviewer_id))


def sealed_translator_contact(
    keyring: Keyring, translator_id: str, translator: TranslatorIn
) -> Sealed | None:
    """A translator's address and languages as the directory keeps them (None: none given)."""
    if translator.email is None:
        return None
    contact = ProfessionalContact(email=translator.email, languages=list(translator.languages))
    return keyring.seal_json(contact, rules.translator_contact_aad(translator_id))


def sealed_changes(keyring: Keyring, reviewer_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A patch's stored changes, a new address (or none: null) sealed as `contact`."""
    if "email" not in changes:
        return changes
    kept = dict(changes)
    sealed = sealed_contact(keyring, reviewer_id, kept.pop("email"))
    kept["contact"] = sealed.model_dump(mode="json") if sealed is not None else None
    return kept


def contact_of(keyring: Keyring, doc: ReviewerDoc) -> ProfessionalContact | None:
    """The reviewer's address and their current languages (None: none kept, or it cannot be
    opened any more: the email is then not sent, the work still waits)."""
    if doc.contact is None:
        return None
    try:
        kept = keyring.open_model(
            doc.contact, rules.reviewer_contact_aad(doc.id), ProfessionalContact
        )
    except SealingError:
        log.warning("reviewer address cannot be opened", reviewer_id=doc.id)
        return None
    return kept.model_copy(update={"languages": list(doc.languages)})


async def recipient(
    store: Store, keyring: Keyring, reviewer_id: str | None
) -> ProfessionalContact | None:
    """The professional to tell that work waits, read from the directory by id."""
    doc = await store.reviewer(reviewer_id) if reviewer_id is not None else None
    return contact_of(keyring, doc) if doc is not None else None


def for_event(ring: Keyring, contact: ProfessionalContact | None, event_id: str) -> Sealed | None:
    """The address sealed for the one event that carries it (under the case's key)."""
    return ring.seal_json(contact, aad=event_id) if contact is not None else None


async def reseal_directory(store: Store, keyring: Keyring, _db: object = None) -> None:
    """At start-up, once AVIS_SEALING_KEYS has a new first key: the reviewers' and translators'
    addresses an earlier key sealed, sealed again under it, so that the earlier key can be
    retired (docs/operations.md). The directories are small: read whole. (`_db`: as the
    runtime calls a start-up step.)"""
    people = [
        ("reviewers", d.id, d.contact, rules.reviewer_contact_aad(d.id))
        for d in await store.all_reviewers()
    ]
    people += [
        ("translators", d.id, d.contact, rules.translator_contact_aad(d.id))
        for d in await store.translations.all_translators()
    ]
    resealed = 0
    for directory, person_id, sealed, aad in people:
        if sealed is None or sealed.kid == keyring.primary_kid:
            continue
        try:
            fresh = keyring.seal(keyring.open(sealed, aad), aad)
        except SealingError:  # its key already left the keyring: nothing to open it with
            log.warning("address cannot be sealed again", person_id=person_id)
            continue
        resealed += await store.reseal_contact(directory, person_id, sealed, fresh)
    if resealed:
        log.info("addresses sealed again", resealed=resealed, key_id=keyring.primary_kid)
