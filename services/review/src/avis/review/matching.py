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
their turn. A decision checks the fence in the store before its first write
(`Matcher.fence`) and on the copy's own clock before each later one (`Matcher.held`): a copy
paused inside its section past the lease's ttl (a SIGSTOP, a long GC) resumes to find a newer
epoch, or no longer believes in its term, and its write is refused (`lease.Fenced`). A copy that
dies inside holds the others off until its term expires (ttl + skew, about 10 s).

Submitted cases are decided in batches (`Matcher.submitted`): those that reach this copy while it
waits for a section (review handles up to `consumer_in_flight` records of a topic at once, eight
by default, whichever partitions they come from) are decided in one, `BATCH` at most, with one
read of the active reviewers, each reviewer chosen counted for the next decision
(`rules.match_in_turn`), and each step's writes in one request for the whole batch; the next
batch waits for the section before this one leaves it, so the term is handed over.

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

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
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
# The most submitted cases decided in one section: each step's writes for all of them go in one
# request, and the local store stalls on a bulk write of many updates of documents that exist
# (docs/store-contract.md); a round's filing is up to six of them.
BATCH = 10


def _declined(rounds: list[AssignmentDoc]) -> list[str]:
    """The reviewers who declined a case, first round first."""
    return [r.reviewer_id for r in rounds if r.status == AssignmentStatus.DECLINED]


@dataclass
class NewRound:
    """A round decided and not written yet: its document and events, when its case was
    submitted (for the stage's timing) and the rule that chose its reviewer."""

    assignment: AssignmentDoc
    events: list[Event]
    submitted_at: datetime
    rule: str


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
        # Submitted cases waiting to be decided together (`submitted`), and who decides them.
        self._arrivals: list[tuple[CaseDoc, asyncio.Future[None]]] = []
        self._batching: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def deciding(self, *, first: bool = False) -> AsyncIterator[None]:
        """One matching decision (or a write of a reviewer's load) at a time, across copies.
        The lease's section comes first, so this copy's decisions wait in it and a section
        hands its term to the next (`Lease.section`); the matching lock inside it is then free,
        and serialises alone when there is no lease. `first`: ahead of this copy's other writes
        waiting, every other section at most (a batch of submitted cases: a new case's wait for
        a reviewer is the one the platform promises to keep short; a reviewer's accept or
        opinion waits one section more)."""
        if self.lease is None:
            async with self.locks.hold(MATCHING_LOCK):
                yield
            return
        async with self.lease.section(first=first), self.locks.hold(MATCHING_LOCK):
            yield

    async def fence(self) -> None:
        """Refuse a decision write (`lease.Fenced`) if this copy's section was taken over: a
        read of the store, once per decision, before its first write."""
        if self.lease is not None:
            await self.lease.check()

    def held(self) -> None:
        """Refuse a decision's next write (`lease.Fenced`) once this copy no longer believes in
        its section's term, on its own clock (no store request): the writes after the first of
        one decision. The store check is not atomic with any write (a pause between the two
        lets the write through either way); what it adds to this one is a take-over by a copy
        whose clock is more than the lease's skew ahead, and that one is already caught by
        the decision's first check when it came before."""
        if self.lease is not None:
            self.lease.believed()

    async def submitted(self, case: CaseDoc) -> None:
        """Write a submitted case (in matching) and match it, or queue it; a replay changes
        nothing. Decided in one section with every other case submitted to this copy while it
        waited for one (`decide_submitted`); returns once its decision is written, and raises
        what its batch raised (the event is then retried)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrivals.append((case, done))
        if self._batching is None or self._batching.done():
            self._next_batch()
        await done

    def _next_batch(self) -> None:
        self._batching = asyncio.create_task(self._decide_arrivals(), name="matcher-batch")

    async def _decide_arrivals(self) -> None:
        """Decide every submitted case waiting when the section is entered. Cases that came
        meanwhile are the next batch's, which starts waiting for the section before this one
        leaves it, so the section's term is handed over (`Lease.section`) and whatever else of
        this copy waits for a section takes its turn in between."""
        batch: list[tuple[CaseDoc, asyncio.Future[None]]] = []
        try:
            async with self.deciding(first=True):
                batch, self._arrivals = self._arrivals[:BATCH], self._arrivals[BATCH:]
                await self.decide_submitted([case for case, _ in batch])
                if self._arrivals:
                    self._next_batch()
                    await asyncio.sleep(0)  # it waits for the section now
        except Exception as exc:  # each case's event is retried
            if not batch:  # the section was not entered: those waiting fail with it
                batch, self._arrivals = self._arrivals, []
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        except BaseException:
            for _, done in batch:
                done.cancel()
            raise
        else:
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
        if self._arrivals and self._batching is asyncio.current_task():
            self._next_batch()  # came as this one was leaving

    async def decide_submitted(self, cases: list[CaseDoc]) -> None:
        """Write submitted cases and match them, together; the caller is inside `deciding()`.

        The cases new to review are inserted in one request, then decided in their order with
        one read of the reviewers (`rules.match_in_turn` counts each reviewer chosen before
        the next decision), and their rounds written together (`_write_rounds`): a stop half-
        way leaves them in matching, for `recover`. A case seen before (a replay) is left as it
        is, or matched alone if it is still in matching; one that goes abroad (a translator
        chosen as it is written) is written alone, in its turn."""
        unique = list({case.id: case for case in cases}.values())
        async with contextlib.AsyncExitStack() as stack:
            for case_id in sorted(case.id for case in unique):
                await stack.enter_async_context(self.locks.hold(lock_key("case", case_id)))
            # Inserted: the stored case is the one given (nothing else writes it while held).
            written = await self.store.batch.insert_cases(unique)
            for case, new in zip(unique, written, strict=True):
                if not new:  # seen before, or withdrawn before it came (a tombstone)
                    stored = await self.store.case(case.id)
                    if stored is not None and stored.status == CaseStatus.MATCHING:
                        await self.match(stored)
            await self._match_new([c for c, new in zip(unique, written, strict=True) if new])

    async def _match_new(self, cases: list[CaseDoc]) -> None:
        """Match cases inserted by this decision (no rounds yet), in their order, with one read
        of the reviewers; the caller holds them all."""
        if not cases:
            return
        reviewers = await self.store.batch.active_reviewers()
        needs = [case.needs([]) for case in cases]
        decisions = rules.match_in_turn(needs, [r.fit() for r in reviewers])
        at = now()
        rounds: list[NewRound] = []
        await self.fence()
        for case, decision in zip(cases, decisions, strict=True):
            rationale = decision.rationale(at)
            if decision.chosen is None:
                self.held()
                await self.store.set_case_waiting(case.id, since=at, last_attempt=rationale)
                log.info("case waits in the queue", case_id=case.id)
                continue
            numbers = (rules.next_round(case.round, ()), rules.next_seq(()))
            abroad = decision.rule is rules.Rule.INTERNATIONAL_NO_READER_AVAILABLE
            if abroad and self.translating is not None:  # its translator chosen and counted now
                await self._assign(case, numbers, decision.chosen, rationale, at, abroad)
            else:
                rounds.append(self._round(case, numbers, decision.chosen, rationale, at, abroad))
        await self._write_rounds(rounds)

    async def match(self, case: CaseDoc, *, from_queue: bool = False) -> str | None:
        """Assign `case` to the best reviewer or leave it waiting; the caller is inside
        `deciding()` and holds the case (a case just submitted: `decide_submitted`)."""
        rounds = await self.store.assignments_of(case.id, case.round)
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
                self.held()
                await self.store.add_open(live.reviewer_id, live.id)
            self.held()
            await self.store.set_case_assigned(
                case.id, assignment_id=live.id, round_=live.round, left_queue=False
            )
            return live.id
        # Loads only grow under the matching lock the caller holds, so the reviewers' own
        # documents read now stay an upper bound until this decision is written.
        reviewers = await self.store.active_reviewers_of(case.triage().specialty.value)
        decision = rules.match(case.needs(_declined(rounds)), [r.fit() for r in reviewers])
        at = now()
        rationale = decision.rationale(at)
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

    def _round(
        self,
        case: CaseDoc,
        numbers: tuple[int, int],
        reviewer_id: str,
        rationale: Rationale,
        at: datetime,
        international: bool = False,
    ) -> NewRound:
        """A new round of `case` (`numbers`: its round and the case's sequence number) and its
        `assigned` event, not written yet."""
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
        event = self.emitter.event("review.assign", assigned, trace=case.traceparent)
        return NewRound(assignment, [event], triage.submitted_at, rationale.rule)

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
        new = self._round(case, numbers, reviewer_id, rationale, at, international)
        translation = None
        if international and self.translating is not None:  # written with its translation
            seq = new.assignment.seq + 1
            translation = await self.translating.first(new.assignment, at=at, seq=seq)
            new.events.append(translation.event)
            changes = {"translations": [translation.entry], "seq": seq}
            new.assignment = new.assignment.model_copy(update=changes)
        await self.fence()
        await self._write_rounds([new], translation=translation)
        return new.assignment.id

    async def _write_rounds(
        self, rounds: list[NewRound], *, translation: QueuedTranslation | None = None
    ) -> None:
        """Write new rounds of their cases (held by the caller, the fence checked) with their
        events: filed by due date, inserted, counted in their reviewers' loads, their cases
        assigned; each step for every round in one request, each step after the one before
        (a stop in between is finished by `recover`: a round written is found live and
        counted once). Before each step the fence is checked again on this copy's clock alone
        (`Matcher.held`)."""
        if not rounds:
            return
        ids = sorted(r.assignment.id for r in rounds)
        self.held()
        await self.store.file_due(*(r.assignment for r in rounds))
        async with contextlib.AsyncExitStack() as stack:
            # A round's lock is the emitter's: the key the relay holds while it publishes its
            # outbox.
            for assignment_id in ids:
                await stack.enter_async_context(self.locks.hold(self.emitter.lock(assignment_id)))
            self.held()
            written = [(r.assignment, r.events) for r in rounds]
            await self.emitter.write_many(lambda: self.store.batch.insert_assignments(written), ids)
        if translation is not None and self.translating is not None:
            await self.translating.counted(translation.entry)
        # Counted after the round exists (a stop in between: the next matching of this case
        # finds the round live and counts it), before the case leaves matching.
        counted = [(r.assignment.reviewer_id, r.assignment.id) for r in rounds]
        async with contextlib.AsyncExitStack() as stack:
            for reviewer_id in sorted({reviewer_id for reviewer_id, _ in counted}):
                await stack.enter_async_context(self.locks.hold(lock_key("reviewer", reviewer_id)))
            self.held()
            await self.store.batch.add_open_many(counted)
        self.held()
        await self.store.batch.set_cases_assigned(
            [(r.assignment.case_id, r.assignment.id, r.assignment.round) for r in rounds]
        )
        for r in rounds:
            if r.assignment.round == 1:  # a reassignment is not the case's first wait
                at = r.assignment.assigned_at
                stage_reached("submitted_to_assigned", since=r.submitted_at, at=at)
            log.info(
                "case assigned",
                case_id=r.assignment.case_id,
                assignment_id=r.assignment.id,
                reviewer_id=r.assignment.reviewer_id,
                rule=r.rule,
            )

    async def release(
        self,
        reviewer_id: str,
        assignment_id: str,
        *,
        read: ReviewerDoc | None = None,
        fenced: bool = False,
    ) -> bool:
        """Stop counting an ended assignment in its reviewer's load (if it still is: True); the
        caller is inside `deciding()`. `read`: the reviewer as the caller read it inside this
        same section (a load changes only inside one), so it is not read again; `fenced`: the
        caller's decision checked the fence in the store before an earlier write (`fence`), so
        this one checks it on the copy's clock (`held`)."""
        async with self.locks.hold(lock_key("reviewer", reviewer_id)):
            reviewer = read if read is not None else await self.store.reviewer(reviewer_id)
            if reviewer is not None and assignment_id in reviewer.open_assignments:
                if fenced:
                    self.held()
                else:
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
