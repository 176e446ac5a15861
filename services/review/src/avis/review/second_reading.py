"""The second reading: before an opinion is released, a second specialist reads it.

Coordinators set the specialties and urgencies whose opinions are read twice (kept in review's
`settings`), or the first specialist asks for it when submitting. The first opinion version is
then kept in review instead of being published as `avis.review.completed.v1`: the second
reader, matched like the first (the matcher's rules and reasons, under capacity, never the
first specialist, never with a conflict of interest), is told by
`avis.review.second-reading-requested.v1`. They agree, and the opinion is released naming both
(`avis.review.second-reading-agreed.v1`, then `avis.review.completed.v1`, in one write); or they
return comments (`avis.review.second-reading-commented.v1`, sealed) that the first answers with
a new version (a correction), which goes back to the second reader.

The reading lives on the first specialist's assignment, whose outbox carries its events, and
counts in the second reader's load as `second:<assignment id>` until they agree. Its comments
are health data: sealed under the case's key at rest (bound to the assignment and their
number) and on the topic (bound to the event id); every read and write by a person is an entry
of the case's access trail. Every write runs inside the matcher's section and holds the
assignment, as every write of an assignment's state does (service.py's docstring).
"""

from collections.abc import Callable
from datetime import datetime

import structlog

from avis.review import contacts, rules
from avis.review.matching import Matcher
from avis.review.models import (
    Opinion,
    SecondReading,
    SecondReadingBody,
    SecondReadingPage,
    SecondReadingReason,
    SecondReadingRules,
    SecondReadingRulesBody,
    SecondReadingState,
    TranslationWay,
)
from avis.review.rules import CaseNeeds
from avis.review.store import AssignmentDoc, CommentEntry, ReadingEntry, Store
from avis.shared.access_log import TrailWriter, check_reason
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.events import (
    ProfessionalContact,
    ReviewCompleted,
    SecondReadingAgreed,
    SecondReadingCommented,
    SecondReadingComments,
    SecondReadingRequested,
)
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.problems import Problem, not_found
from avis.shared.sealing import Keyring
from avis.shared.security import Principal

log = structlog.get_logger("avis.review")


class SecondReadings:
    """The second reading of opinions: the coordinators' rules, the choice of the second
    reader, their agreement or comments, and the reads of the reading."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        keys: CaseKeys,
        matcher: Matcher,
        access: TrailWriter,
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keys = keys
        self.matcher = matcher
        self.access = access
        matcher.waiting_readings = self.rematch  # offered again where the queue is

    # --- the coordinators' rules ------------------------------------------------------------------

    async def rules(self) -> SecondReadingRules:
        """The specialties and urgencies whose opinions are read twice."""
        return await self.store.readings.rules()

    async def set_rules(
        self, *, principal: Principal, body: SecondReadingRulesBody
    ) -> SecondReadingRules:
        """Replace the rules; they apply to the opinions submitted from now on."""
        changed = SecondReadingRules(
            specialties=body.specialties,
            urgencies=body.urgencies,
            updated_at=now(),
            updated_by=principal.sub,
        )
        await self.store.readings.set_rules(changed)
        log.info("second reading rules set", specialties=len(body.specialties))
        return changed

    # --- an opinion version goes to the second reader ---------------------------------------------

    async def plan(
        self, doc: AssignmentDoc, version: int, *, asked: bool, at: datetime
    ) -> ReadingEntry | None:
        """The reading an opinion version goes to, as it is to be written with it, or None
        when the version is released at once; the caller is inside the matcher's section and
        holds the assignment."""
        current = doc.second_reading
        if current is None:
            if version != 1:
                return None  # a correction of an opinion released without a reading
            settings = await self.store.readings.rules()
            reason = rules.second_reading_reason(
                asked=asked,
                specialty=doc.specialty.value,
                urgency=doc.urgency.value,
                specialties=(s.value for s in settings.specialties),
                urgencies=(u.value for u in settings.urgencies),
            )
            if reason is None:
                return None
            return await self._choose(doc, reason, version, at)
        if current.state is SecondReadingState.AGREED:
            return await self._again(doc, current, version, at)
        if not rules.holds_opinion(current.state):
            return None
        if current.reviewer_id is None:  # nobody fitted before: a new version is matched again
            return await self._choose(doc, current.reason, version, at)
        answered = [
            c.model_copy(update={"answered_by_version": version})
            if c.answered_by_version is None
            else c
            for c in current.comments
        ]
        state = SecondReadingState.READING
        return current.model_copy(update={"version": version, "state": state, "comments": answered})

    async def _again(
        self, doc: AssignmentDoc, agreed: ReadingEntry, version: int, at: datetime
    ) -> ReadingEntry | None:
        """A correction after the agreement: to the same second reader again while the reason
        for the reading holds (`rules.reads_again`), else None (released at once); when that
        reader no longer fits (at capacity: `rules.reread`), it waits unmatched, as a reading
        nobody fitted at first, until a second reader is free (`rematch`)."""
        settings = await self.store.readings.rules()
        if not rules.reads_again(
            agreed.reason,
            specialty=doc.specialty.value,
            urgency=doc.urgency.value,
            specialties=(s.value for s in settings.specialties),
            urgencies=(u.value for u in settings.urgencies),
        ):
            return None
        update = {"version": version, "state": SecondReadingState.READING, "agreed_at": None}
        update |= {"requested_at": at}
        reader = await self.store.reviewer(agreed.reviewer_id) if agreed.reviewer_id else None
        decision = rules.reread(await _needs(self.store, doc), reader.fit() if reader else None)
        if decision.chosen is None:
            log.info("second reader full", assignment_id=doc.id, rule=decision.rule.value)
            update |= {
                "state": SecondReadingState.UNMATCHED,
                "reviewer_id": None,
                "display_name": None,
                "rationale": decision.rationale(at),
            }
        return agreed.model_copy(update=update)

    async def _choose(
        self, doc: AssignmentDoc, reason: SecondReadingReason, version: int, at: datetime
    ) -> ReadingEntry:
        """Match the second reader as the first was matched, the first excluded."""
        needs = await _needs(self.store, doc)
        reviewers = await self.store.active_reviewers_of(needs.specialty)
        decision = rules.match(needs, [r.fit() for r in reviewers])
        chosen = next((r for r in reviewers if r.id == decision.chosen), None)
        log.info("second reader chosen", assignment_id=doc.id, rule=decision.rule.value)
        return ReadingEntry(
            reason=reason,
            state=SecondReadingState.READING if chosen else SecondReadingState.UNMATCHED,
            reviewer_id=decision.chosen,
            rationale=decision.rationale(at),
            requested_at=at,
            version=version,
            display_name=chosen.display_name if chosen else None,
        )

    def requested(
        self,
        doc: AssignmentDoc,
        reading: ReadingEntry,
        *,
        at: datetime,
        seq: int,
        ring: Keyring,
        to: ProfessionalContact | None,
    ) -> Callable[[str], SecondReadingRequested]:
        """The event telling that `reading`'s version waits for its second reader (`to`: their
        address, sealed for the event)."""

        def held(event_id: str) -> SecondReadingRequested:
            return SecondReadingRequested(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                second_reader_id=reading.reviewer_id,
                version=reading.version,
                requested_at=at,
                reason="first_reader"
                if reading.reason is SecondReadingReason.FIRST_READER
                else "coordinator_rule",
                recipient=contacts.for_event(ring, to, event_id),
                seq=seq,
            )

        return held

    async def file(self, doc: AssignmentDoc, reading: ReadingEntry) -> None:
        """File a reading nobody fitted to be offered again (`rematch`), before its write."""
        if reading.reviewer_id is None:
            await self.store.readings.waiting(doc.id)

    async def count(self, doc: AssignmentDoc, reading: ReadingEntry) -> None:
        """Count the reading in its reader's load, after it is written (again: no change)."""
        if reading.reviewer_id is None:
            return
        await self.matcher.fence()
        async with self.locks.hold(lock_key("reviewer", reading.reviewer_id)):
            await self.store.add_open(reading.reviewer_id, rules.reading_load_id(doc.id))

    async def rematch(self, waiting: list[str]) -> int:
        """Offer the readings nobody fitted (`waiting`: their assignments) to second readers
        again, where review offers its queue (capacity freed, a reader added or changed); the
        caller is inside the matcher's section. Returns how many found a reader."""
        found = 0
        for assignment_id in waiting:
            if not _unmatched(await self.store.assignment(assignment_id)):
                await self.store.readings.matched(assignment_id)  # matched or closed since
                continue
            # Only an unmatched reading's round is held here: a caller holding its own round
            # (an agreement) offers the queue with a reading that is not unmatched.
            async with self.locks.hold(self.emitter.lock(assignment_id)):
                doc = await self.store.assignment(assignment_id)
                if doc is None or doc.second_reading is None or not _unmatched(doc):
                    continue
                reading = doc.second_reading
                chosen = await self._choose(doc, reading.reason, reading.version, now())
                if chosen.reviewer_id is None:
                    continue
                chosen = chosen.model_copy(update={"comments": reading.comments})
                await self._requested_again(doc, chosen)
                found += 1
        return found

    async def _requested_again(self, doc: AssignmentDoc, reading: ReadingEntry) -> None:
        """Write a reading that found its reader and its `second-reading-requested` event."""
        seq = rules.next_seq([doc.seq])
        ring = await self._ring(doc.case_id)
        to = await contacts.recipient(self.store, self.keys.keyring, reading.reviewer_id)
        held = self.requested(doc, reading, at=reading.requested_at, seq=seq, ring=ring, to=to)
        event = self.emitter.event("review.second-reading", held, trace=doc.traceparent)
        await self.matcher.fence()
        await self.emitter.write(
            lambda out: self.store.readings.write(doc.id, reading=reading, seq=seq, events=out),
            [event],
            aggregate=doc.id,
        )
        await self.count(doc, reading)
        await self.store.readings.matched(doc.id)
        log.info("second reader matched again", assignment_id=doc.id)

    async def withdrawn(self, rounds: list[AssignmentDoc]) -> None:
        """A withdrawn case's readings not agreed yet are closed, as its assignment is, and
        leave their readers' loads; the caller is inside the matcher's section."""
        for round_ in rounds:
            if round_.second_reading is None:
                continue
            async with self.locks.hold(self.emitter.lock(round_.id)):
                doc = await self.store.assignment(round_.id)
                reading = doc.second_reading if doc is not None else None
                if reading is None or reading.state is SecondReadingState.AGREED:
                    continue
                if rules.holds_opinion(reading.state):  # not closed yet (again: no change)
                    await self.matcher.fence()
                    closed = reading.model_copy(update={"state": SecondReadingState.WITHDRAWN})
                    await self.store.readings.close(round_.id, reading=closed)
            if reading.reviewer_id is not None:
                await self.matcher.release(reading.reviewer_id, rules.reading_load_id(round_.id))

    # --- the second reader answers ----------------------------------------------------------------

    async def agree(self, *, principal: Principal, assignment_id: str) -> SecondReading:
        """The second reader agrees: the opinion is released naming both (agreeing again writes
        nothing, but takes the reading out of the load if a stop left it there)."""
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(assignment_id)):
            doc, reading = await self._reading(assignment_id)
            rules.check_second_reader(principal, reading.reviewer_id)
            if reading.state is SecondReadingState.AGREED:
                if await self.matcher.release(principal.sub, rules.reading_load_id(doc.id)):
                    await self.matcher.offer_queue()
                return reading.view(doc, coordinator=False)
            rules.check_may_answer(reading.state)
            at = now()
            seq = rules.next_seq([doc.seq])
            latest = doc.opinions[-1]
            opinion = await self._opinion(doc, latest.version)
            first = await self.store.reviewer(doc.reviewer_id)
            sealed = rules.sealed_content(
                opinion,
                latest.version,
                first.display_name if first else doc.reviewer_id,
                doc.specialty,
                second_reader=reading.display_name or reading.reviewer_id,
            )
            ring = await self._ring(doc.case_id)
            agreed = SecondReadingAgreed(
                case_id=doc.case_id,
                assignment_id=doc.id,
                reviewer_id=doc.reviewer_id,
                second_reader_id=principal.sub,
                version=latest.version,
                agreed_at=at,
                seq=seq,
            )

            def completed(event_id: str) -> ReviewCompleted:
                return ReviewCompleted(
                    case_id=doc.case_id,
                    assignment_id=doc.id,
                    reviewer_id=doc.reviewer_id,
                    specialty=doc.specialty,
                    version=latest.version,
                    completed_at=at,
                    opinion=ring.seal_json(sealed, aad=event_id),
                    seq=seq + 1,
                    report_seq=doc.report_seq(seq + 1),
                )

            # An international round's opinion goes on to its translation back, not to the patient.
            translating = self.matcher.translating
            back = None
            if translating is not None:
                back = await translating.back(doc, latest.version, at=at, seq=seq + 1)
            events = [
                self.emitter.event("review.second-reading.agree", agreed, trace=doc.traceparent),
                back[0].event
                if back
                else self.emitter.event("review.opinion", completed, trace=doc.traceparent),
            ]
            done = reading.model_copy(update={"state": SecondReadingState.AGREED, "agreed_at": at})
            await self.matcher.fence()
            await self.emitter.write(
                lambda out: self.store.readings.write(
                    doc.id,
                    reading=done,
                    seq=seq + 1,
                    events=out,
                    translations=back[1] if back else None,
                ),
                events,
                aggregate=doc.id,
            )
            if back and translating is not None:
                await translating.counted(back[0].entry)
            await self.matcher.release(principal.sub, rules.reading_load_id(doc.id))
            await self.matcher.offer_queue()  # the second reader has one reading less
            log.info("second reader agreed", assignment_id=doc.id, version=latest.version)
        await self.access.record(principal, doc.case_id, "second-reading.agree")
        return done.view(doc, coordinator=False)

    async def comment(
        self, *, principal: Principal, assignment_id: str, body: SecondReadingBody
    ) -> SecondReading:
        """The second reader returns comments the first must answer with a new version."""
        async with self.matcher.deciding(), self.locks.hold(self.emitter.lock(assignment_id)):
            doc, reading = await self._reading(assignment_id)
            rules.check_second_reader(principal, reading.reviewer_id)
            rules.check_may_answer(reading.state)
            at = now()
            seq = rules.next_seq([doc.seq])
            number = len(reading.comments) + 1
            comments = SecondReadingComments(text=body.text)
            ring = await self._ring(doc.case_id)
            first = await contacts.recipient(self.store, self.keys.keyring, doc.reviewer_id)

            def commented(event_id: str) -> SecondReadingCommented:
                return SecondReadingCommented(
                    case_id=doc.case_id,
                    assignment_id=doc.id,
                    reviewer_id=doc.reviewer_id,
                    second_reader_id=principal.sub,
                    version=reading.version,
                    commented_at=at,
                    comments=ring.seal_json(comments, aad=event_id),
                    recipient=contacts.for_event(ring, first, event_id),
                    seq=seq,
                )

            event = self.emitter.event(
                "review.second-reading.comment", commented, trace=doc.traceparent
            )
            entry = CommentEntry(
                number=number,
                version=reading.version,
                commented_at=at,
                sealed=ring.seal_json(comments, rules.comments_aad(doc.id, number)),
            )
            changed = reading.model_copy(
                update={
                    "state": SecondReadingState.COMMENTED,
                    "comments": [*reading.comments, entry],
                }
            )
            await self.matcher.fence()
            await self.emitter.write(
                lambda out: self.store.readings.write(doc.id, reading=changed, seq=seq, events=out),
                [event],
                aggregate=doc.id,
            )
            log.info("second reader commented", assignment_id=doc.id, number=number)
        await self.access.record(principal, doc.case_id, "second-reading.comment")
        return changed.view(doc, coordinator=False, texts={number: body.text})

    # --- reads ------------------------------------------------------------------------------------

    async def reading(
        self, *, principal: Principal, assignment_id: str, reason: str | None = None
    ) -> SecondReading:
        """The reading with the version to read and the comments: its two specialists, or a
        coordinator for a stated reason (428 without one); the read, or its refusal, is an
        entry of the case's trail."""
        doc, reading = await self._reading(assignment_id)
        action = "second-reading.read"
        try:
            if not rules.may_read_reading(principal, doc.reviewer_id, reading.reviewer_id):
                raise Problem(403, "not-your-reading", "Forbidden", "This reading is another's.")
            given = check_reason(principal, reason)
        except Problem as refused:
            if refused.status in rules.AUDITED_REFUSALS:
                await self.access.record(principal, doc.case_id, action, refused=refused.status)
            raise
        texts = {c.number: await self._comments(doc, c) for c in reading.comments}
        opinion = await self._opinion(doc, reading.version)
        ring = None if given is None else await self._ring(doc.case_id)
        await self.access.record(principal, doc.case_id, action, reason=given, ring=ring)
        coordinator = rules.is_coordinator(principal)
        return reading.view(doc, coordinator=coordinator, texts=texts, opinion=opinion)

    async def listed(
        self,
        *,
        principal: Principal,
        reviewer_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> SecondReadingPage:
        """The open readings (not agreed yet) of a second reader, by assignment id: a reviewer
        their own, coordinators anyone's (all without `reviewer_id`). Never their texts."""
        whose = rules.assignments_reviewer(principal, reviewer_id)
        if whose is not None:
            one = await self.store.reviewer(whose)
            reviewers = [one] if one is not None else []
        else:
            reviewers = await self.store.all_reviewers()
        ids = sorted(
            {
                found
                for r in reviewers
                for entry in r.open_assignments
                if (found := rules.reading_of_load(entry)) is not None
                and (cursor is None or found > cursor)
            }
        )
        docs = [d for d in await self.store.listed(ids[: limit + 1]) if d is not None]
        coordinator = rules.is_coordinator(principal)
        return SecondReadingPage.of(
            [d for d in docs if d.second_reading is not None],
            limit,
            key=lambda d: d.id,
            view=lambda d: _view(d, coordinator),
        )

    # --- helpers ----------------------------------------------------------------------------------

    async def _reading(self, assignment_id: str) -> tuple[AssignmentDoc, ReadingEntry]:
        doc = await self.store.assignment(assignment_id)
        if doc is None or doc.second_reading is None:
            raise not_found("second reading", "second-reading-not-found")
        return doc, doc.second_reading

    async def _ring(self, case_id: str) -> Keyring:
        case = await self.store.case(case_id)
        return await self.keys.ring(case.key_ref if case is not None else None)

    async def _opinion(self, doc: AssignmentDoc, version: int) -> Opinion:
        entry = next(e for e in doc.opinions if e.version == version)
        if entry.sealed is None:
            return Opinion.model_validate(entry.opinion)
        aad = rules.opinion_aad(doc.id, entry.version)
        return (await self.keys.opening(entry.sealed)).open_model(entry.sealed, aad, Opinion)

    async def _comments(self, doc: AssignmentDoc, entry: CommentEntry) -> str | None:
        try:
            ring = await self.keys.opening(entry.sealed)
        except CaseKeyDestroyed:
            return None
        aad = rules.comments_aad(doc.id, entry.number)
        return ring.open_model(entry.sealed, aad, SecondReadingComments).text


async def _needs(store: Store, doc: AssignmentDoc) -> CaseNeeds:
    """What matching a second reader needs to know of the round's case, its first reader
    excluded, in the language of the opinion they read (`rules.reading_needs`)."""
    case = await store.case(doc.case_id)
    needs = CaseNeeds(specialty=doc.specialty.value, language=doc.language.value)
    if case is not None and case.specialty is not None:
        needs = case.needs([])
    first = await store.reviewer(doc.reviewer_id) if doc.international else None
    to_specialist = doc.translation(TranslationWay.TO_SPECIALIST)
    language = rules.opinion_language(
        doc.language.value,
        international=doc.international,
        to_specialist=to_specialist.to_language.value if to_specialist else None,
        first_reader_languages=[lang.value for lang in first.languages] if first else [],
    )
    return rules.reading_needs(needs, first_reader=doc.reviewer_id, language=language)


def _view(doc: AssignmentDoc, coordinator: bool) -> SecondReading:
    assert doc.second_reading is not None
    return doc.second_reading.view(doc, coordinator=coordinator)


def _unmatched(doc: AssignmentDoc | None) -> bool:
    """Whether the round's reading waits for a second reader nobody fitted yet."""
    reading = doc.second_reading if doc is not None else None
    return reading is not None and reading.state is SecondReadingState.UNMATCHED
