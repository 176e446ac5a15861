"""A case filed before per-case keys given its key (`avis.case.keyed.v1`, from intake's
migration, `avis-case-keys`): reports seals what it keeps of the case under that key (the
contact, the opinions received, each report version and its rendered PDFs), bound as they are
when written (`avis.reports.rules.*_aad`), and records the key's reference on the case, so
that erasing the case reaches them too."""

from __future__ import annotations

import structlog

from avis.reports.rules import contact_aad, erasable_versions, opinion_aad, pdf_aad, report_aad
from avis.reports.store import CaseDoc, PdfCache, Store, VersionDoc
from avis.shared.case_keys import CaseKeys, resealed, takes_key
from avis.shared.emit import Emitter
from avis.shared.events import CaseKeyed
from avis.shared.mongo import AggregateLocks
from avis.shared.sealing import Keyring

log = structlog.get_logger("avis.reports")


class CaseKeying:
    """Reports' copies of a case brought under the case's own key."""

    def __init__(
        self, *, store: Store, locks: AggregateLocks, emitter: Emitter, keys: CaseKeys
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keys = keys

    async def case_keyed(self, *, keyed: CaseKeyed) -> None:
        """Seal the case's report versions, then its contact and opinions, under its key, and
        record the key on the case in that last write; a redelivery goes on where a stop left
        it, an event naming another key than the case's changes nothing."""
        case_id = keyed.case_id
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.store.case(case_id)
            erased = case is not None and case.erased_at is not None
            if case is None or not takes_key(case.key_ref, keyed.key_ref, erased=erased):
                log.info("keyed event changes nothing", case_id=case_id)
                return
            ring = await self.keys.ring(keyed.key_ref)
            issued = [v.version for v in case.versions]
            for key in erasable_versions(case.report_id, issued):
                version = await self.store.version(key)
                if version is not None:
                    await self.store.seal_version(sealed_version(ring, version))
            await self.store.seal_case(sealed_case(ring, case), keyed.key_ref)
        log.info("case keyed", case_id=case_id)


def _pdf(ring: Keyring, pdf: PdfCache | None, aad: str) -> PdfCache | None:
    if pdf is None:
        return None
    return pdf.model_copy(update={"sealed": resealed(ring, pdf.sealed, aad)})


def sealed_version(ring: Keyring, version: VersionDoc) -> VersionDoc:
    """A report version with its report and rendered PDFs under the ring's sealing key."""
    key = version.id
    return version.model_copy(
        update={
            "report": resealed(ring, version.report, report_aad(key)),
            "pdf": _pdf(ring, version.pdf, pdf_aad(key)),
            "reviewer_pdf": _pdf(ring, version.reviewer_pdf, pdf_aad(key, pseudonymised=True)),
        }
    )


def sealed_case(ring: Keyring, case: CaseDoc) -> CaseDoc:
    """A case with its contact and received opinions under the ring's sealing key."""
    record = case.case
    if record is not None and record.contact is not None:
        contact = resealed(ring, record.contact, contact_aad(case.id))
        record = record.model_copy(update={"contact": contact})
    opinions = [
        o.model_copy(update={"sealed": resealed(ring, o.sealed, opinion_aad(case.id, o.version))})
        for o in case.opinions
    ]
    return case.model_copy(update={"case": record, "opinions": opinions})
