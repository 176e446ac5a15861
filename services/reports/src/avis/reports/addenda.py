"""Addenda: the specialist's answers to follow-up questions become report versions.

Review publishes each answer, with its question, sealed (`avis.review.follow-up-answered.v1`).
Reports keeps it on the case's aggregate, sealed again under the case's key, and issues a new
report version: the last version issued, with every answer received so far in its addendum and
a note saying what it adds. The earlier versions stay served as they were. A redelivered answer
finds itself kept, and a version carrying it issued (a stop between the two: the redelivery
issues it). An answer for a case reports has no report of is a dead letter at once: the question
was asked about an issued report, so only a restore of reports' data can cause it.
"""

import structlog

from avis.reports.i18n import texts
from avis.reports.models import Report
from avis.reports.rules import (
    addendum_aad,
    addendum_due,
    addendum_section,
    report_aad,
    version_key,
    with_addenda,
)
from avis.reports.service import ReportsService
from avis.reports.store import CaseDoc, ReceivedAddendum, VersionDoc, VersionEntry
from avis.shared.clock import now
from avis.shared.envelope import Event, PoisonMessage
from avis.shared.events import FollowUpAnswer, FollowUpAnswered
from avis.shared.kafka import RetryLater

log = structlog.get_logger("avis.reports.addenda")


class Addenda:
    """The answers to follow-up questions, each issued as a report version with an addendum."""

    def __init__(self, reports: ReportsService) -> None:
        self.reports = reports

    async def follow_up_answered(self, *, event: Event, answered: FollowUpAnswered) -> None:
        """Keep the answer (sealed for reports) and issue the version that adds it; the case's
        report comes first (the question is asked about it), so an answer before it waits."""
        reports = self.reports
        case_id = answered.case_id
        content = await reports.opened(answered.answer, event.id, FollowUpAnswer, "answer")
        async with reports.locks.hold(reports.emitter.lock(case_id)):
            case = await reports.store.case(case_id)
            if case is None or not case.versions:
                # Asked about an issued report, so reports knows the case: only a restore of its
                # own data can make it unknown (a dead letter, replayed then).
                raise PoisonMessage("an answer to a follow-up question of a case with no report")
            if case.withdrawn_at is not None or case.erased_at is not None:
                log.info("answer of a withdrawn or erased case ignored", case_id=case_id)
                return
            if answered.follow_up_id not in {a.follow_up_id for a in case.addenda}:
                kept = ReceivedAddendum(
                    follow_up_id=answered.follow_up_id,
                    number=answered.number,
                    event_id=event.id,
                    reviewer_id=answered.reviewer_id,
                    answered_at=answered.answered_at,
                    sealed=(await reports.keys.ring(case.key_ref)).seal_json(
                        content, addendum_aad(case_id, answered.follow_up_id)
                    ),
                    seq=answered.seq,
                )
                await reports.store.add_addendum(case_id, kept)
                case = case.model_copy(update={"addenda": [*case.addenda, kept]})
            if addendum_due(len(case.addenda), (v.addenda for v in case.versions)):
                await self._issue(case)

    async def _issue(self, case: CaseDoc) -> None:
        """Issue the version that carries every answer kept so far; the caller holds the case."""
        reports = self.reports
        last = max(case.versions, key=lambda v: v.version)
        version = last.version + 1
        key = version_key(case.report_id, version)
        stored = await reports.store.version(key) or await self._keep(case, last, version)
        received = case.addenda[-1]
        entry = VersionEntry(
            version=version,
            opinion_version=stored.opinion_version,
            reviewer_id=received.reviewer_id,
            language=stored.language,
            issued_at=stored.issued_at,
            seq=received.seq,
            addenda=len(case.addenda),
        )
        await reports.announce(case, stored, entry)
        log.info("report addendum issued", case_id=case.id, version=version)

    async def _keep(self, case: CaseDoc, last: VersionEntry, version: int) -> VersionDoc:
        """Compose the version from the last one and the answers, and keep it, sealed."""
        reports = self.reports
        base_doc = await reports.store.version(version_key(case.report_id, last.version))
        if base_doc is None:
            raise RetryLater("the last report version is not readable yet")
        base_key = version_key(case.report_id, last.version)
        base = await reports.opened(base_doc.report, report_aad(base_key), Report, "report")
        t = texts(base.language)
        sections = []
        for kept in case.addenda:
            answer = await reports.opened(
                kept.sealed, addendum_aad(case.id, kept.follow_up_id), FollowUpAnswer, "answer"
            )
            sections.append(addendum_section(t, kept.number, answer, kept.answered_at))
        report = with_addenda(t, base, sections, version=version, issued_at=now())
        return await reports.keep(case, report, opinion_version=base_doc.opinion_version)
