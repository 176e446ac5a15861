"""A case filed before per-case keys given its key (`avis.case.keyed.v1`, from intake's
migration, `avis-case-keys`): notify seals the case's contact (only its `Recipient` part: a
contact kept whole by an earlier version loses its name, phone and birth date) and claim secret
under that key, bound as they are when kept (`store.contact_aad`, `store.claim_aad`), and
records the key's reference on the case, so that erasing the case reaches them too."""

from __future__ import annotations

import structlog

from avis.notify.store import CaseDoc, Recipient, Store, claim_aad, contact_aad, physician_aad
from avis.shared.case_keys import CaseKeys, resealed, takes_key
from avis.shared.events import CaseKeyed
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.sealing import Keyring

log = structlog.get_logger("avis.notify")


class CaseKeying:
    """Notify's copy of a case brought under the case's own key."""

    def __init__(self, *, store: Store, locks: AggregateLocks, keys: CaseKeys) -> None:
        self.store = store
        self.locks = locks
        self.keys = keys

    async def case_keyed(self, *, keyed: CaseKeyed) -> None:
        """Seal the case's contact and claim secret under its key, with the key's reference, in
        one write; a redelivery finds it done, an event naming another key than the case's (or
        an erased case, whose address is under its notice's own key) changes nothing."""
        case_id = keyed.case_id
        async with self.locks.hold(lock_key("case", case_id)):
            case = await self.store.case(case_id)
            erased = case is not None and case.erased_at is not None
            if case is None or not takes_key(case.key_ref, keyed.key_ref, erased=erased):
                log.info("keyed event changes nothing", case_id=case_id)
                return
            ring = await self.keys.ring(keyed.key_ref)
            await self.store.save_case(sealed_case(ring, case, keyed.key_ref))
        log.info("case keyed", case_id=case_id)


def sealed_case(ring: Keyring, case: CaseDoc, key_ref: str) -> CaseDoc:
    """The case with its contact (as a `Recipient`) and claim secret under the ring's sealing
    key."""
    sealed = case.model_copy(update={"key_ref": key_ref})
    aad = contact_aad(case.id)
    if case.contact is not None and case.contact.kid != ring.primary_kid:
        sealed.contact = ring.seal_json(ring.open_model(case.contact, aad, Recipient), aad)
    if case.claim is not None:
        sealed.claim = resealed(ring, case.claim, claim_aad(case.id))
    if case.physician is not None:
        sealed.physician = resealed(ring, case.physician, physician_aad(case.id))
    return sealed
