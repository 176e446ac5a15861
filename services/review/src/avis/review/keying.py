"""A case filed before per-case keys given its key (`avis.case.keyed.v1`, from intake's
migration, `avis-case-keys`): review seals its opinions and decline reasons of the case under
that key, bound as they are when written (`rules.opinion_aad`, `rules.decline_aad`), and keeps
the key's reference on the case, so that erasing the case reaches them too."""

from __future__ import annotations

import structlog

from avis.review import rules
from avis.review.models import Opinion
from avis.review.store import AssignmentDoc, Decline, OpinionEntry, Store
from avis.shared.case_keys import CaseKeys, resealed, takes_key
from avis.shared.emit import Emitter
from avis.shared.events import CaseKeyed
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.sealing import Keyring

log = structlog.get_logger("avis.review")


class CaseKeying:
    """Review's copies of a case brought under the case's own key."""

    def __init__(
        self, *, store: Store, locks: AggregateLocks, emitter: Emitter, keys: CaseKeys
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keys = keys

    async def case_keyed(self, *, keyed: CaseKeyed) -> None:
        """Seal each round's opinions and decline reason under the case's key, then record the
        key on the case; a redelivery finds them sealed and goes on where it stopped, an event
        naming another key than the case's changes nothing."""
        case_id = keyed.case_id
        async with self.locks.hold(lock_key("case", case_id)):
            case = await self.store.case(case_id)
            erased = case is not None and case.erased_at is not None
            if case is None or not takes_key(case.key_ref, keyed.key_ref, erased=erased):
                log.info("keyed event changes nothing", case_id=case_id)
                return
            ring = await self.keys.ring(keyed.key_ref)
            for round_ in await self.store.assignments_of(case_id, case.round):
                async with self.locks.hold(self.emitter.lock(round_.id)):
                    doc = await self.store.assignment(round_.id)
                    if doc is not None:
                        opinions, decline = sealed_round(ring, doc)
                        await self.store.seal_round(doc.id, opinions, decline)
            await self.store.set_case_key(case_id, keyed.key_ref)
        log.info("case keyed", case_id=case_id)


def sealed_round(ring: Keyring, doc: AssignmentDoc) -> tuple[list[OpinionEntry], Decline | None]:
    """A round's opinion versions and decline, each sealed under the ring's sealing key (those
    stored before sealing, in clear, sealed as they are sealed now)."""
    opinions = []
    for entry in doc.opinions:
        aad = rules.opinion_aad(doc.id, entry.version)
        if entry.sealed is None:
            sealed = ring.seal_json(Opinion.model_validate(entry.opinion), aad)
        else:
            sealed = resealed(ring, entry.sealed, aad)
        opinions.append(entry.model_copy(update={"sealed": sealed, "opinion": None}))
    decline = doc.decline
    if decline is not None:
        aad = rules.decline_aad(doc.id)
        if decline.sealed_reason is not None:
            reason = resealed(ring, decline.sealed_reason, aad)
            decline = decline.model_copy(update={"sealed_reason": reason})
        elif decline.reason is not None:
            reason = ring.seal(decline.reason.encode(), aad)
            decline = decline.model_copy(update={"sealed_reason": reason, "reason": None})
    return opinions, decline
