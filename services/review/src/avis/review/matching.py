"""The matcher: which reviewer takes a case, under every reviewer's capacity, or the queue.

One matching decision at a time across every copy of review: reading the loads, choosing and
writing the round all happen inside `Matcher.deciding()`, since a reviewer's load only grows
there. Inside one process that is the matching lock (`MATCHING_LOCK`); across copies it is a
section of the `matcher` lease (`avis.shared.lease.Lease.section`): a copy claims the lease by
inserting the next epoch document (the duplicate key decides between two copies, since the
store does not arbitrate conditional updates), renews it while inside and releases it on the
way out, so another copy's section starts at once. A decision that ends while another of this
copy waits hands it the term instead (about seven store requests saved per decision in a burst),
for at most a third of the ttl before the lease goes back to the store and the other copies get
their turn. Every decision write first checks the fence
(`Matcher.fence`): a copy paused inside its section past the lease's ttl (a SIGSTOP, a long
GC) resumes to find a newer epoch, and its write is refused (`lease.Fenced`). A copy that dies
inside holds the others off until its term expires (ttl + skew, about 10 s).

Why a lease section and not a holder that matches for everyone, or a partition of the work:
every copy receives cases (its share of `case-submitted`'s partitions) and HTTP writes that
change a reviewer's load (a decline, an opinion, a coordinator's assignment, the directory),
and each must be decided at once, with its answer. With a section each copy decides its own,
without handing work over to another process and waiting for it. Partitioning by specialty
would not do: a reviewer may cover several specialties, so one load is shared across
partitions, and `case-submitted` is keyed by case, not by specialty. docs/replicas.md has the
whole argument.

The use cases of service.py enter `deciding()` and take the case's lock, then call the matcher;
the matcher takes the locks of the round it writes and of the reviewer it counts it against.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime
from typing import Protocol

import structlog

from avis.review import rules
from avis.review.models import AssignmentStatus, CaseStatus, Considered, Rationale
from avis.review.rules import Sla
from avis.review.store import AssignmentDoc, CaseDoc, ReviewerDoc, Store, TranslationEntry
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.envelope import Event
from avis.shared.events import ReviewAssigned
from avis.shared.lease import Lease
from avis.shared.mongo import STORE_ERRORS, AggregateLocks, lock_key
from avis.shared.observability import stage_reached

log = structlog.get_logger("avis.review")

# The process-wide lock of matching decisions (not one aggregate's: every reviewer's load).
MATCHING_LOCK = lock_key("matching", "all")


def _declined(rounds: list[AssignmentDoc]) -> list[str]:
    """The reviewers who declined a case, first round first."""
    return [r.reviewer_id for r in rounds if r.status == AssignmentStatus.DECLINED]


class QueuedTranslation(Protocol):
    """A translation to write with a round, and its event (translation.py's `Queued`)."""

    @property
    def entry(self) -> TranslationEntry: ...

    @property
    def event(self) -> Event: ...


class Translating(Protocol):
    """What matching asks of the translation step (translation.py's `Translations`)."""

    async def first(self, doc: AssignmentDoc, *, at: datetime, seq: int) -> QueuedTranslation: ...

    async def back(
        self, doc: AssignmentDoc, version: int, *, at: datetime, seq: int
    ) -> tuple[QueuedTranslation, list[TranslationEntry]] | None: ...

    async def counted(self, entry: TranslationEntry) -> None: ...

    async def closed(self, rounds: Iterable[AssignmentDoc]) -> None: ...

    async def recounted(self, doc: AssignmentDoc) -> None: ...


class Matcher:
    """Assigns cases to reviewers under capacity, or leaves them waiting in the queue."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        emitter: Emitter,
        sla: Sla,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.sla = sla
        self.lease = lease  # None: this process is the only matcher (unit tests)
        # The second readings nobody fitted, offered again with the queue (second_reading.py).
        # (Given the ids of those waiting, read with the queue.)
        self.waiting_readings: Callable[[list[str]], Awaitable[int]] | None = None
        # International rounds' translations (translation.py sets itself here).
        self.translating: Translating | None = None

    @contextlib.asynccontextmanager
    async def deciding(self) -> AsyncIterator[None]:
        """One matching decision (or a write of a reviewer's load) at a time, across copies.
        The lease's section comes first, so this copy's decisions wait in it and a section
        hands its term to the next (`Lease.section`); the matching lock inside it is then free,
        and serialises alone when there is no lease."""
        if self.lease is None:
            async with self.locks.hold(MATCHING_LOCK):
                yield
            return
        async with self.lease.section(), self.locks.hold(MATCHING_LOCK):
            yield

    async def fence(self) -> None:
        """Refuse a decision write (`lease.Fenced`) if this copy's section was taken over."""
        if self.lease is not None:
            await self.lease.check()

    async def match(
        self, case: CaseDoc, *, from_queue: bool = False, fresh: bool = False
    ) -> str | None:
        """Assign `case` to the best reviewer or leave it waiting; the caller is inside
        `deciding()` and holds the case (`fresh`: inserted by this decision, so it has no
        rounds yet: a round is only written once its case is)."""
        rounds = [] if fresh else await self.store.assignments_of(case.id, case.round)
        ended = [r for r in rounds if r.status in rules.ENDED]
        for gone in ended:
            # A stop between an end and its release left the reviewer's load too high.
            await self.release(gone.reviewer_id, gone.id)
        if self.translating is not None:  # and its translations open, the translators' loads
            await self.translating.closed(ended)
        live = next((r for r in rounds if r.status not in rules.ENDED), None)
        if live is not None:
            # A round survives from an attempt that stopped half-way: keep it, counted once.
            await self.fence()
            if self.translating is not None:
                await self.translating.recounted(live)
            async with self.locks.hold(lock_key("reviewer", live.reviewer_id)):
                await self.store.add_open(live.reviewer_id, live.id)
            await self.store.set_case_assigned(
                case.id, assignment_id=live.id, round_=live.round, left_queue=False
            )
            return live.id
        # Loads only grow under the matching lock the caller holds, so the reviewers' own
        # documents read now stay an upper bound until this decision is written.
        reviewers = await self.store.active_reviewers_of(case.triage().specialty.value)
        decision = rules.match(case.needs(_declined(rounds)), [r.fit() for r in reviewers])
        at = now()
        rationale = Rationale(
            rule=decision.rule.value,
            chosen=decision.chosen,
            candidates=list(decision.candidates),
            decided_at=at,
            decided_by=rules.MATCHER,
        )
        if decision.chosen is None:
            if not (from_queue and case.status == CaseStatus.WAITING):
                await self.fence()
                await self.store.set_case_waiting(
                    case.id, since=case.waiting_since or at, last_attempt=rationale
                )
                log.info("case waits in the queue", case_id=case.id)
            return None
        round_ = rules.next_round(case.round, (r.round for r in rounds))
        seq = rules.next_seq(r.seq for r in rounds)
        abroad = decision.rule is rules.Rule.INTERNATIONAL_NO_READER_AVAILABLE
        return await self._assign(case, (round_, seq), decision.chosen, rationale, at, abroad)

    async def assign_by_hand(self, case: CaseDoc, reviewer: ReviewerDoc, *, by: str) -> str:
        """A coordinator's choice for a case: every rule holds but capacity (409 otherwise);
        caller is inside `deciding()` and holds the case."""
        rounds = await self.store.assignments_of(case.id, case.round)
        fit = reviewer.fit()
        rules.check_eligible(case.needs(_declined(rounds)), fit)
        at = now()
        rationale = Rationale(
            rule=rules.Rule.COORDINATOR.value,
            chosen=fit.id,
            candidates=[
                Considered(reviewer_id=fit.id, load=fit.load, capacity=fit.capacity, excluded=None)
            ],
            decided_at=at,
            decided_by=by,
        )
        round_ = rules.next_round(case.round, (r.round for r in rounds))
        seq = rules.next_seq(r.seq for r in rounds)
        abroad = rules.needs_translation(case.triage().language.value, fit.languages)
        return await self._assign(case, (round_, seq), fit.id, rationale, at, abroad)

    async def _assign(
        self,
        case: CaseDoc,
        numbers: tuple[int, int],
        reviewer_id: str,
        rationale: Rationale,
        at: datetime,
        international: bool = False,
    ) -> str:
        """Write a new round (`numbers`: its round and the case's sequence number) with its
        `assigned` event (`international`: and its translation); the caller holds the case."""
        round_, seq = numbers
        triage = case.triage()
        assignment_id = rules.assignment_id_for(case.id, round_)
        due = rules.due_at(at, triage.urgency, self.sla)
        assignment = AssignmentDoc(
            id=assignment_id,
            case_id=case.id,
            round=round_,
            reviewer_id=reviewer_id,
            status=AssignmentStatus.ASSIGNED,
            reference=case.reference,
            specialty=triage.specialty,
            urgency=triage.urgency,
            language=triage.language,
            case_url=case.case_url,
            traceparent=case.traceparent,
            assigned_at=at,
            due_at=due,
            sort_key=rules.sort_key(due, assignment_id),
            rationale=rationale,
            seq=seq,
            international=international,
        )
        assigned = ReviewAssigned(
            case_id=case.id,
            assignment_id=assignment_id,
            reviewer_id=reviewer_id,
            specialty=triage.specialty,
            assigned_at=at,
            due_at=due,
            seq=seq,
            international=international,
        )
        events = [self.emitter.event("review.assign", assigned, trace=case.traceparent)]
        translation = None
        if international and self.translating is not None:  # written with its translation
            translation = await self.translating.first(assignment, at=at, seq=seq + 1)
            events.append(translation.event)
            changes = {"translations": [translation.entry], "seq": seq + 1}
            assignment = assignment.model_copy(update=changes)
        await self.fence()
        await self.store.file_due(assignment)
        # The round's lock is the emitter's: the key the relay holds while it publishes its outbox.
        async with self.locks.hold(self.emitter.lock(assignment_id)):
            await self.emitter.write(
                lambda out: self.store.insert_assignment(assignment, out),
                events,
                aggregate=assignment_id,
            )
        if translation is not None and self.translating is not None:
            await self.translating.counted(translation.entry)
        # Counted after the round exists (a stop in between: the next matching of this case
        # finds the round live and counts it), before the case leaves matching.
        await self.fence()
        async with self.locks.hold(lock_key("reviewer", reviewer_id)):
            await self.store.add_open(reviewer_id, assignment_id)
        await self.store.set_case_assigned(
            case.id, assignment_id=assignment_id, round_=round_, left_queue=True
        )
        if round_ == 1:  # a reassignment is not the case's first wait
            stage_reached("submitted_to_assigned", since=triage.submitted_at, at=at)
        log.info(
            "case assigned",
            case_id=case.id,
            assignment_id=assignment_id,
            reviewer_id=reviewer_id,
            rule=rationale.rule,
        )
        return assignment_id

    async def release(
        self, reviewer_id: str, assignment_id: str, *, read: ReviewerDoc | None = None
    ) -> bool:
        """Stop counting an ended assignment in its reviewer's load (if it still is: True); the
        caller is inside `deciding()`. `read`: the reviewer as the caller read it inside this
        same section (a load changes only inside one), so it is not read again."""
        async with self.locks.hold(lock_key("reviewer", reviewer_id)):
            reviewer = read if read is not None else await self.store.reviewer(reviewer_id)
            if reviewer is not None and assignment_id in reviewer.open_assignments:
                await self.fence()
                await self.store.remove_open(reviewer_id, assignment_id)
                return True
        return False

    async def offer_queue(self) -> int:
        """Offer every waiting case, in queue order, to reviewers; caller is inside `deciding()`.
        Returns how many were assigned."""
        assigned = 0
        # Matching a case files no reading as waiting: both lists are read at once, up front.
        queue, readings = await self.store.queue_and_readings()
        for waiting in queue:
            async with self.locks.hold(lock_key("case", waiting.id)):
                case = await self.store.case(waiting.id)
                if case is not None and case.status == CaseStatus.WAITING:
                    assigned += await self.match(case, from_queue=True) is not None
        if self.waiting_readings is not None:
            await self.waiting_readings(readings)
        return assigned

    async def drain_queue(self) -> int:
        """Offer the queue to reviewers who may have freed up; returns how many were assigned."""
        async with self.deciding():
            return await self.offer_queue()

    async def recover(self) -> None:
        """Finish matchings a stopped process left half-way, then offer the queue.

        Store outages propagate (start-up retries them); anything else is logged and left for
        the next start, so one odd case never keeps the service from connecting.
        """
        async with self.deciding():
            for pending in await self.store.cases_in(CaseStatus.MATCHING):
                async with self.locks.hold(lock_key("case", pending.id)):
                    try:
                        case = await self.store.case(pending.id)
                        if case is not None and case.status == CaseStatus.MATCHING:
                            await self.match(case)
                    except STORE_ERRORS:
                        raise
                    except Exception as exc:
                        log.error(
                            "matching not recovered", case_id=pending.id, error=type(exc).__name__
                        )
            await self.offer_queue()
