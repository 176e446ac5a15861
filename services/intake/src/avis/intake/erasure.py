"""Erasure by destroying a case's key, the legal holds that defer it, and the reconciliation
after a restore that keeps an erasure from being undone: intake's use cases that outlive a
case's content."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from avis.intake import rules
from avis.intake.models import CaseView, TimelineKind
from avis.intake.service import CASE_NOT_FOUND, IntakeService, opened
from avis.intake.store import Case, Store, StoredEntry, StoredHold
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys
from avis.shared.clock import now
from avis.shared.events import CaseErased, PatientContact
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Keyring, Sealed
from avis.shared.security import Principal

log = structlog.get_logger("avis.intake")


@dataclass(frozen=True)
class Notice:
    """The patient's contact for the email that tells them their case is erased, and the ring
    of the key of its own it travels under."""

    contact: PatientContact
    ring: Keyring

    def seal(self, event_id: str) -> Sealed:
        """The contact sealed for the erasure's event."""
        return self.ring.seal_json(self.contact, aad=event_id)


class Erasures:
    """Erasure by destroying a case's key (crypto-shredding), and the legal holds that defer it.

    The key goes first, in the key service: from then on nothing of the case opens anywhere, in
    any store, on any topic or in any copy. Then the case keeps only its skeleton (ids, codes,
    times), its records go, and `avis.case.erased.v1` tells the other services to drop their
    copies of the key and what they derived."""

    def __init__(self, intake: IntakeService) -> None:
        self.intake = intake

    async def request(self, *, principal: Principal, case_id: str) -> CaseView:
        """The patient asks for their case's erasure: carried out at once, or when a legal hold
        is lifted; asking again changes nothing."""
        intake = self.intake
        async with intake.locks.hold(intake.emitter.lock(case_id)):
            case = await intake.writable(principal, case_id, erased=True)
            rules.check_erasure_requester(principal)
            if case.erasure_requested_at is None:
                at = now()
                kind = TimelineKind.ERASURE_REQUESTED
                entry = StoredEntry(id=f"{case_id}:{kind}", kind=kind, status=case.status, at=at)
                await intake.store.request_erasure(case_id, at=at, entry=entry)
                await intake.auditor.record(principal, case_id, "case.erasure-request", locked=True)
            decision = rules.decide_erasure(erased=case.erased_at is not None, held=bool(case.hold))
            if decision.erase:
                await self._erase(principal, case, "patient")
        return await self._after(principal, case_id)

    async def erase(self, *, principal: Principal, case_id: str, reason: str) -> CaseView:
        """A coordinator erases a case, saying why; 409 while a legal hold stands."""
        intake = self.intake
        async with intake.locks.hold(intake.emitter.lock(case_id)):
            case = await intake.case_or_none(case_id)
            if case is None:
                raise not_found("case", CASE_NOT_FOUND)
            decision = rules.decide_erasure(erased=case.erased_at is not None, held=bool(case.hold))
            if decision.deferred:
                raise Problem(
                    409,
                    "legal-hold",
                    "Under a legal hold",
                    "a legal hold defers this case's erasure; lift it first, with its reason",
                )
            if decision.erase:
                await self._erase(principal, case, "coordinator", reason=reason)
        return await self._after(principal, case_id)

    async def hold(self, *, principal: Principal, case_id: str, reason: str, on: bool) -> CaseView:
        """A coordinator sets (`on`) or lifts a legal hold with its reason; lifting it carries
        out an erasure the patient asked for meanwhile."""
        intake = self.intake
        async with intake.locks.hold(intake.emitter.lock(case_id)):
            case = await intake.case_or_none(case_id)
            if case is None:
                raise not_found("case", CASE_NOT_FOUND)
            rules.check_not_erased(case.erased_at)
            at = now()
            sealed = intake.keyring.seal(reason.encode(), rules.hold_aad(case_id))
            stored = StoredHold(by=principal.sub, reason=sealed, at=at) if on else None
            await intake.store.set_hold(case_id, stored, at)
            action = "case.hold" if on else "case.release"
            await intake.auditor.record(principal, case_id, action, reason=reason, locked=True)
            if not on and case.erasure_requested_at is not None:
                await self._erase(principal, case, "patient")
        return await self._after(principal, case_id)

    async def _erase(
        self, principal: Principal, case: Case, by: str, *, reason: str | None = None
    ) -> None:
        """Destroy the case's key, then leave its skeleton with its event (under its lock). The
        patient's contact goes on in the event, under a key of its own, for the email that
        tells them it is done; notify destroys that key once the email is sent."""
        intake = self.intake
        notice = await self._notice(case)
        await intake.keys.destroy(case.key_ref)
        at = now()

        def erased(event_id: str) -> CaseErased:
            return CaseErased(
                case_id=case.id,
                key_ref=case.key_ref,
                erased_at=at,
                requested_by=by,
                notice=None if notice is None else notice.seal(event_id),
            )

        event = intake.emitter.event("intake.case.erase", erased, trace=case.traceparent)
        entry = StoredEntry(id=event.id, kind=TimelineKind.ERASED, status=case.status, at=at)
        await intake.emitter.write(
            lambda events: intake.store.erase(case, at=at, entry=entry, events=events),
            [event],
            aggregate=case.id,
        )
        await intake.auditor.record(principal, case.id, "case.erase", reason=reason, locked=True)
        log.info("case erased", case_id=case.id, requested_by=by)

    async def _notice(self, case: Case) -> Notice | None:
        """The patient's contact under a new key of its own (None: the case's key is gone
        already, and the contact with it)."""
        try:
            content = opened(await self.intake.keys.ring(case.key_ref), case)
        except Problem:  # CaseKeyDestroyed: an erasure interrupted after the key went
            return None
        contact = PatientContact.model_validate(content.patient.model_dump())
        ref = await self.intake.keys.create(f"{case.id}:erasure-notice")
        return Notice(contact, await self.intake.keys.ring(ref))

    async def _after(self, principal: Principal, case_id: str) -> CaseView:
        case = await self.intake.case_or_none(case_id)
        if case is None:
            raise not_found("case", CASE_NOT_FOUND)
        return await self.intake.view(case, principal)


@dataclass
class Reconciled:
    """What a reconciliation after a restore did: cases seen, skeletons made again for cases
    erased after the copy, keys destroyed again."""

    cases: int = 0
    erased: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)


class Reconciliation:
    """After intake's store or the key service is restored from a copy, no erasure is undone.

    Every case is read once: one erased after the copy was taken (its key is gone, the copy
    holds it whole) gets its skeleton again, its records removed, as its erasure left it (no
    event: the other services heard of the erasure when it happened); one whose skeleton says
    it is erased while its key exists (the key service restored from before the erasure) has
    the key destroyed again. docs/operations.md, "Backup and restore"."""

    def __init__(self, store: Store, keys: CaseKeys) -> None:
        self.store = store
        self.keys = keys

    async def run(self) -> Reconciled:
        done = Reconciled()
        async for case in self.store.every_case():
            done.cases += 1
            exists = await self._exists(case.key_ref)
            action = rules.after_restore(
                erased=case.erased_at is not None, key_ref=case.key_ref, key_exists=exists
            )
            if action is rules.AfterRestore.ERASE:
                at = now()
                kind = TimelineKind.ERASED
                entry = StoredEntry(
                    id=f"{case.id}:{kind}:restore", kind=kind, status=case.status, at=at
                )
                await self.store.erase(case, at=at, entry=entry, events=[])
                done.erased.append(case.id)
            elif action is rules.AfterRestore.DESTROY:
                await self.keys.destroy(case.key_ref)
                done.destroyed.append(case.id)
        log.info(
            "reconciled after a restore",
            cases=done.cases,
            erased=len(done.erased),
            destroyed=len(done.destroyed),
        )
        return done

    async def _exists(self, key_ref: str | None) -> bool:
        """Whether the key service still gives the case's key (never this process's cache)."""
        if key_ref is None:
            return False
        self.keys.forget(key_ref)
        try:
            await self.keys.ring(key_ref)
        except CaseKeyDestroyed:
            return False
        finally:
            self.keys.forget(key_ref)
        return True
