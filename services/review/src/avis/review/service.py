"""The review service's decisions and state transitions: triage, matching, SLA, accept, decline,
opinion and correction.

The pure rules come first (`match`, `due_at`, `opinion_digest`, ...), testable without Kafka or
HTTP; `ReviewService` applies them to the store.

Concurrency: the store does not serialise concurrent writers, so every write holds its
aggregate's lock (`case:<id>`, the assignment id, `reviewer:<id>`), and every matching decision
(read the loads, pick, write the assignment) runs under the one `matching` lock of the process.
Locks are always taken in the order matching -> case -> assignment. Across several review
instances this relies on a single active matcher: review runs as one consumer of
`case-submitted` with one HTTP instance for coordinators and reviewers, or, when scaled out,
all writers of a reviewer's load must be routed to one instance.
"""

import asyncio
import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import structlog
from prometheus_client import Gauge
from pymongo.errors import DuplicateKeyError, PyMongoError

from avis.review.models import (
    ACTIVE,
    AssignBody,
    Assignment,
    AssignmentPage,
    AssignmentStatus,
    CaseStatus,
    Considered,
    DeclineBody,
    Opinion,
    OpinionVersion,
    QueuedCase,
    QueuePage,
    Rationale,
    Reviewer,
    ReviewerIn,
    ReviewerPage,
    ReviewerPatch,
)
from avis.review.settings import Settings
from avis.review.store import Store, not_overdue_query, now, overdue_query, reviewer_doc
from avis.shared.envelope import Event, new_event_id
from avis.shared.events import (
    CaseSubmitted,
    CaseWithdrawn,
    CompletedOpinion,
    Language,
    ReviewAccepted,
    ReviewAssigned,
    ReviewCompleted,
    ReviewDeclined,
    Specialty,
    Urgency,
)
from avis.shared.mongo import Document
from avis.shared.observability import case_span, current_traceparent
from avis.shared.outbox import new_with_events, with_events
from avis.shared.problems import Problem
from avis.shared.runtime import Runtime
from avis.shared.sealing import Keyring
from avis.shared.security import Principal

log = structlog.get_logger("avis.review")

SOURCE = "/avis/review"
MATCHING_LOCK = "matching"
MATCHER = "matcher"
# Assignment ids are derived from the case id and round, so replaying a cause never adds one.
_ASSIGNMENT_NAMESPACE = uuid.UUID("5d0c8a3e-6f1b-4f0e-9a57-2b8c1f3d4e60")
_ENDED = (AssignmentStatus.DECLINED, AssignmentStatus.CANCELLED)

OVERDUE_ASSIGNMENTS = Gauge(
    "avis_review_overdue_assignments",
    "Assignments past their due date and not yet answered",
    ["service"],
)


# --- pure rules -----------------------------------------------------------------------------


class Rule(StrEnum):
    """The rule that decided a matching."""

    ONLY_CANDIDATE = "only_candidate"
    LEAST_LOAD = "least_load"
    TIE_BREAK_BY_ID = "tie_break_by_id"
    NOBODY_FITS = "nobody_fits"
    COORDINATOR = "coordinator"


class Exclusion(StrEnum):
    """Why a reviewer cannot take a case."""

    INACTIVE = "inactive"
    SPECIALTY = "specialty"
    LANGUAGE = "language"
    INSTITUTION_CONFLICT = "institution_conflict"
    DECLINED_BEFORE = "declined_before"
    AT_CAPACITY = "at_capacity"


_EXCLUSION_TEXT = {
    Exclusion.INACTIVE: "the reviewer is not active",
    Exclusion.SPECIALTY: "the reviewer does not practise the case's specialty",
    Exclusion.LANGUAGE: "the reviewer does not read the patient's language",
    Exclusion.INSTITUTION_CONFLICT: "the reviewer works at the treating physician's institution",
    Exclusion.DECLINED_BEFORE: "the reviewer already declined this case",
    Exclusion.AT_CAPACITY: "the reviewer is at capacity",
}


@dataclass(frozen=True)
class CaseNeeds:
    """What matching needs to know of a case."""

    specialty: str
    language: str
    physician_institution: str | None = None
    declined_by: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReviewerFit:
    """What matching needs to know of a reviewer, with their current load."""

    id: str
    specialties: frozenset[str]
    languages: frozenset[str]
    institution_code: str | None
    capacity: int
    load: int
    active: bool = True


@dataclass(frozen=True)
class Decision:
    """The outcome of matching: who (or nobody), by which rule, among which candidates."""

    chosen: str | None
    rule: Rule
    candidates: tuple[Considered, ...]


def same_institution(a: str | None, b: str | None) -> bool:
    """Whether two institution codes name the same institution (case and spaces ignored)."""
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def exclusion(
    case: CaseNeeds, reviewer: ReviewerFit, *, override_capacity: bool = False
) -> Exclusion | None:
    """Why `reviewer` cannot take `case`, or None if they can."""
    if not reviewer.active:
        return Exclusion.INACTIVE
    if case.specialty not in reviewer.specialties:
        return Exclusion.SPECIALTY
    if case.language not in reviewer.languages:
        return Exclusion.LANGUAGE
    if same_institution(case.physician_institution, reviewer.institution_code):
        return Exclusion.INSTITUTION_CONFLICT
    if reviewer.id in case.declined_by:
        return Exclusion.DECLINED_BEFORE
    if not override_capacity and reviewer.load >= reviewer.capacity:
        return Exclusion.AT_CAPACITY
    return None


def match(case: CaseNeeds, reviewers: Iterable[ReviewerFit]) -> Decision:
    """The eligible reviewer with the least load; equal loads go to the smallest reviewer id."""
    pool = sorted(reviewers, key=lambda r: r.id)
    candidates = tuple(
        Considered(
            reviewer_id=r.id,
            load=r.load,
            capacity=r.capacity,
            excluded=why.value if (why := exclusion(case, r)) is not None else None,
        )
        for r in pool
    )
    eligible = sorted(
        (r for r, c in zip(pool, candidates, strict=True) if c.excluded is None),
        key=lambda r: (r.load, r.id),
    )
    if not eligible:
        return Decision(None, Rule.NOBODY_FITS, candidates)
    if len(eligible) == 1:
        rule = Rule.ONLY_CANDIDATE
    elif eligible[0].load < eligible[1].load:
        rule = Rule.LEAST_LOAD
    else:
        rule = Rule.TIE_BREAK_BY_ID
    return Decision(eligible[0].id, rule, candidates)


@dataclass(frozen=True)
class Sla:
    """Days from assignment until the opinion is due, by urgency."""

    routine_days: float = 7.0
    urgent_days: float = 3.0


def due_at(assigned_at: datetime, urgency: Urgency | str, sla: Sla) -> datetime:
    """When an assignment made at `assigned_at` is due (at the store's millisecond precision)."""
    days = sla.urgent_days if Urgency(urgency) is Urgency.URGENT else sla.routine_days
    due = assigned_at + timedelta(days=days)
    return due.replace(microsecond=due.microsecond // 1000 * 1000)


def opinion_digest(opinion: Opinion) -> str:
    """A fingerprint of an opinion's content, to tell a replay from a different opinion."""
    canonical = json.dumps(opinion.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sealed_content(
    opinion: Opinion, version: int, display_name: str, specialty: str
) -> CompletedOpinion:
    """What `avis.review.completed.v1` carries sealed: the opinion and who wrote it."""
    return CompletedOpinion.model_validate(
        {
            **opinion.model_dump(mode="json"),
            "version": version,
            "reviewer_display_name": display_name,
            "reviewer_specialty": specialty,
        }
    )


def assignment_id_for(case_id: str, round_: int) -> str:
    """The id of a case's assignment round: `<uuid of the case>-<round>`.

    The relay publishes pending aggregates in `_id` order, so a case's rounds sort by round:
    a round's `declined` goes out before the next round's `assigned`.
    """
    return f"{uuid.uuid5(_ASSIGNMENT_NAMESPACE, case_id)}-{round_:04d}"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def queue_key(urgency: Urgency | str, submitted_at: datetime, case_id: str) -> str:
    """The queue's order as one sortable string: urgent first, then oldest first."""
    rank = 0 if Urgency(urgency) is Urgency.URGENT else 1
    return f"{rank}|{_stamp(submitted_at)}|{case_id}"


def sort_key(due: datetime, assignment_id: str) -> str:
    """The assignment list's order as one sortable string: soonest due first."""
    return f"{_stamp(due)}|{assignment_id}"


def next_cursor(items: Sequence[Document], limit: int, key: str) -> str | None:
    """The cursor after a page: the sort key of its last item, if more items follow.

    Any string is a position in the order, so a cursor is never refused; a client passes
    `next_cursor` back as it came.
    """
    return str(items[limit - 1][key]) if len(items) > limit else None


# --- views ----------------------------------------------------------------------------------


def needs_of(case: Document, declined_by: Iterable[str] = ()) -> CaseNeeds:
    """The matching needs of a stored case."""
    return CaseNeeds(
        specialty=case["specialty"],
        language=case["language"],
        physician_institution=case.get("physician_institution"),
        declined_by=frozenset(declined_by),
    )


def fit_of(reviewer: Document, load: int) -> ReviewerFit:
    """The matching view of a stored reviewer."""
    return ReviewerFit(
        id=reviewer["_id"],
        specialties=frozenset(reviewer.get("specialties", ())),
        languages=frozenset(reviewer.get("languages", ())),
        institution_code=reviewer.get("institution_code"),
        capacity=int(reviewer.get("capacity", 0)),
        load=load,
        active=bool(reviewer.get("active", False)),
    )


def reviewer_view(doc: Document, load: int) -> Reviewer:
    """The API view of a stored reviewer."""
    return Reviewer(id=doc["_id"], load=load, **{k: v for k, v in doc.items() if k != "_id"})


def assignment_view(doc: Document, at: datetime, *, coordinator: bool) -> Assignment:
    """The API view of a stored assignment; rationale and free-text reason for coordinators."""
    decline = doc.get("decline") or {}
    return Assignment(
        id=doc["_id"],
        case_id=doc["case_id"],
        reference=doc.get("reference", ""),
        round=doc["round"],
        reviewer_id=doc["reviewer_id"],
        status=doc["status"],
        specialty=doc["specialty"],
        urgency=doc["urgency"],
        language=doc["language"],
        assigned_at=doc["assigned_at"],
        due_at=doc["due_at"],
        overdue=doc["status"] in ACTIVE and doc["due_at"] < at,
        accepted_at=doc.get("accepted_at"),
        declined_at=doc.get("declined_at"),
        decline_reason_code=decline.get("reason_code"),
        decline_reason=decline.get("reason") if coordinator else None,
        completed_at=doc.get("completed_at"),
        cancelled_at=doc.get("cancelled_at"),
        opinion_version=doc.get("opinion_version"),
        case_url=doc.get("case_url", ""),
        rationale=doc.get("rationale") if coordinator else None,
    )


def opinion_view(doc: Document, entry: Document) -> OpinionVersion:
    """The API view of one stored opinion version."""
    return OpinionVersion(
        assignment_id=doc["_id"],
        case_id=doc["case_id"],
        reviewer_id=doc["reviewer_id"],
        version=entry["version"],
        completed_at=entry["completed_at"],
        opinion=Opinion.model_validate(entry["opinion"]),
    )


def case_lock(case_id: str) -> str:
    """The lock key of a case."""
    return f"case:{case_id}"


def reviewer_lock(reviewer_id: str) -> str:
    """The lock key of a reviewer."""
    return f"reviewer:{reviewer_id}"


def _not_found(what: str, slug: str) -> Problem:
    return Problem(404, slug, "Not found", f"No {what} with this id.")


def _state(detail: str, slug: str = "assignment-state") -> Problem:
    return Problem(409, slug, "Conflict", detail)


# --- the service ----------------------------------------------------------------------------


class ReviewService:
    """Review's operations over its store, its locks and its outbox relay."""

    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.store = Store(runtime.db)
        self.locks = runtime.locks
        self.relay = runtime.relay
        self.keyring = Keyring.from_settings(settings)
        self.sla = Sla(settings.sla_routine_days, settings.sla_urgent_days)
        self.intake_base_url = settings.intake_base_url.rstrip("/")
        self.service = settings.service_name
        runtime.relay.watch(self.store.assignments)

    # --- events in ---------------------------------------------------------------------------

    async def case_submitted(self, case: CaseSubmitted, traceparent: str) -> None:
        """Triage a submitted case and match it, or queue it; a replay changes nothing."""
        doc = {
            "_id": case.case_id,
            "reference": case.reference,
            "specialty": case.specialty.value,
            "urgency": case.urgency.value,
            "language": case.language.value,
            "physician_institution": case.physician_institution,
            "submitted_at": case.submitted_at,
            "case_url": case.case_url or f"{self.intake_base_url}/v1/cases/{case.case_id}",
            # Without a trace from intake, the trace this consumer runs in becomes the case's.
            "traceparent": traceparent or current_traceparent().get("traceparent", ""),
            "status": CaseStatus.MATCHING.value,
            "round": 0,
            "queue_key": queue_key(case.urgency, case.submitted_at, case.case_id),
            "received_at": now(),
        }
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case.case_id)):
            # Seen before, or withdrawn before it reached us: the stored case decides.
            with contextlib.suppress(DuplicateKeyError):
                await self.store.cases.insert_one(doc)
            stored = await self.store.case(case.case_id)
            if stored is not None and stored["status"] == CaseStatus.MATCHING:
                await self._match(stored)
        self.relay.wake()

    async def case_withdrawn(self, withdrawal: CaseWithdrawn) -> None:
        """Close a withdrawn case: leave the queue, cancel its assignment, free its reviewer."""
        case_id = withdrawal.case_id
        at = now()
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case_id)):
            case = await self.store.case(case_id)
            if case is None:
                # A tombstone, so a submission arriving after its withdrawal is ignored.
                tombstone = {
                    "_id": case_id,
                    "status": CaseStatus.WITHDRAWN.value,
                    "round": 0,
                    "withdrawn_at": withdrawal.withdrawn_at,
                    "received_at": at,
                }
                with contextlib.suppress(DuplicateKeyError):
                    await self.store.cases.insert_one(tombstone)
            elif case["status"] != CaseStatus.WITHDRAWN:
                await self.store.cases.update_one(
                    {"_id": case_id},
                    {
                        "$set": {
                            "status": CaseStatus.WITHDRAWN.value,
                            "withdrawn_at": withdrawal.withdrawn_at,
                        }
                    },
                )
            for round_ in await self.store.assignments_of(case_id):
                if round_["status"] not in ACTIVE:
                    continue
                async with self.locks.hold(round_["_id"]):
                    fresh = await self.store.assignment(round_["_id"])
                    if fresh is not None and fresh["status"] in ACTIVE:
                        await self.store.assignments.update_one(
                            {"_id": fresh["_id"]},
                            {
                                "$set": {
                                    "status": AssignmentStatus.CANCELLED.value,
                                    "cancelled_at": at,
                                }
                            },
                        )
                        log.info("assignment cancelled", assignment_id=fresh["_id"])
            await self._drain_locked()
        self.relay.wake()

    # --- matching ----------------------------------------------------------------------------

    async def _match(self, case: Document, *, from_queue: bool = False) -> str | None:
        """Assign `case` to the best reviewer or leave it waiting; caller holds matching+case."""
        rounds = await self.store.assignments_of(case["_id"])
        live = next((r for r in rounds if r["status"] not in _ENDED), None)
        if live is not None:
            # A round survives from an attempt that stopped half-way: keep it.
            await self.store.cases.update_one(
                {"_id": case["_id"]},
                {
                    "$set": {
                        "status": CaseStatus.ASSIGNED.value,
                        "assignment_id": live["_id"],
                        "round": live["round"],
                    }
                },
            )
            return str(live["_id"])
        declined = [r["reviewer_id"] for r in rounds if r["status"] == AssignmentStatus.DECLINED]
        reviewers = await self.store.active_reviewers_of(case["specialty"])
        loads = await self.store.loads([r["_id"] for r in reviewers])
        decision = match(needs_of(case, declined), [fit_of(r, loads[r["_id"]]) for r in reviewers])
        at = now()
        rationale = Rationale(
            rule=decision.rule.value,
            chosen=decision.chosen,
            candidates=list(decision.candidates),
            decided_at=at,
            decided_by=MATCHER,
        )
        if decision.chosen is None:
            if not (from_queue and case["status"] == CaseStatus.WAITING):
                await self.store.cases.update_one(
                    {"_id": case["_id"]},
                    {
                        "$set": {
                            "status": CaseStatus.WAITING.value,
                            "waiting_since": case.get("waiting_since") or at,
                            "last_attempt": rationale.model_dump(mode="python"),
                        }
                    },
                )
                log.info("case waits in the queue", case_id=case["_id"])
            return None
        next_round = max([int(case.get("round", 0)), *(int(r["round"]) for r in rounds)]) + 1
        return await self._assign(case, next_round, decision.chosen, rationale, at)

    async def _assign(
        self, case: Document, round_: int, reviewer_id: str, rationale: Rationale, at: datetime
    ) -> str:
        """Write a new assignment round with its `assigned` event; caller holds matching+case."""
        case_id = case["_id"]
        assignment_id = assignment_id_for(case_id, round_)
        due = due_at(at, case["urgency"], self.sla)
        with case_span("review.assign", case.get("traceparent", "")):
            event = Event.new(
                ReviewAssigned(
                    case_id=case_id,
                    assignment_id=assignment_id,
                    reviewer_id=reviewer_id,
                    specialty=Specialty(case["specialty"]),
                    assigned_at=at,
                    due_at=due,
                ),
                SOURCE,
            )
        doc = {
            "_id": assignment_id,
            "case_id": case_id,
            "round": round_,
            "reviewer_id": reviewer_id,
            "status": AssignmentStatus.ASSIGNED.value,
            "reference": case.get("reference", ""),
            "specialty": case["specialty"],
            "urgency": case["urgency"],
            "language": case["language"],
            "case_url": case.get("case_url", ""),
            "traceparent": case.get("traceparent", ""),
            "assigned_at": at,
            "due_at": due,
            "sort_key": sort_key(due, assignment_id),
            "rationale": rationale.model_dump(mode="python"),
            "opinions": [],
        }
        async with self.locks.hold(assignment_id):
            # A duplicate was written by an attempt that stopped before updating the case.
            with contextlib.suppress(DuplicateKeyError):
                async with self.relay.publishing(self.store.assignments, assignment_id):
                    await self.store.assignments.insert_one(new_with_events(doc, [event]))
        await self.store.cases.update_one(
            {"_id": case_id},
            {
                "$set": {
                    "status": CaseStatus.ASSIGNED.value,
                    "assignment_id": assignment_id,
                    "round": round_,
                },
                "$unset": {"waiting_since": "", "last_attempt": ""},
            },
        )
        log.info(
            "case assigned",
            case_id=case_id,
            assignment_id=assignment_id,
            reviewer_id=reviewer_id,
            rule=rationale.rule,
        )
        return assignment_id

    async def _drain_locked(self) -> int:
        """Offer every waiting case, in queue order, to reviewers; caller holds matching."""
        assigned = 0
        for waiting in await self.store.cases_in(CaseStatus.WAITING):
            async with self.locks.hold(case_lock(waiting["_id"])):
                case = await self.store.case(waiting["_id"])
                if case is not None and case["status"] == CaseStatus.WAITING:
                    assigned += await self._match(case, from_queue=True) is not None
        return assigned

    async def drain_queue(self) -> int:
        """Offer the queue to reviewers who may have freed up; returns how many were assigned."""
        async with self.locks.hold(MATCHING_LOCK):
            assigned = await self._drain_locked()
        self.relay.wake()
        return assigned

    async def recover(self) -> None:
        """Finish matchings a stopped process left half-way, then offer the queue.

        Store outages propagate (start-up retries them); anything else is logged and left for
        the next start, so one odd case never keeps the service from connecting.
        """
        async with self.locks.hold(MATCHING_LOCK):
            for pending in await self.store.cases_in(CaseStatus.MATCHING):
                async with self.locks.hold(case_lock(pending["_id"])):
                    try:
                        case = await self.store.case(pending["_id"])
                        if case is not None and case["status"] == CaseStatus.MATCHING:
                            await self._match(case)
                    except PyMongoError:
                        raise
                    except Exception as exc:
                        log.error(
                            "matching not recovered",
                            case_id=pending["_id"],
                            error=type(exc).__name__,
                        )
            await self._drain_locked()
        self.relay.wake()

    # --- reviewer directory ------------------------------------------------------------------

    async def create_reviewer(self, body: ReviewerIn) -> tuple[Reviewer, bool]:
        """Add a reviewer; the same reviewer again is a no-op. Returns it and whether it is new."""
        doc = reviewer_doc(body, now())
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(reviewer_lock(body.id)):
            try:
                await self.store.reviewers.insert_one(doc)
                created = True
            except DuplicateKeyError:
                existing = await self.store.reviewer(body.id)
                fields = body.model_dump(mode="json", exclude={"id"})
                if existing is None or any(existing.get(k) != v for k, v in fields.items()):
                    raise Problem(
                        409,
                        "reviewer-exists",
                        "Conflict",
                        f"Reviewer {body.id} already exists with other details; "
                        "change them with PATCH.",
                    ) from None
                doc, created = existing, False
            if created:
                await self._drain_locked()
        self.relay.wake()
        load = (await self.store.loads([body.id]))[body.id]
        return reviewer_view(doc, load), created

    async def update_reviewer(self, reviewer_id: str, patch: ReviewerPatch) -> Reviewer:
        """Change a reviewer; a freed or widened reviewer is offered the queue."""
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(reviewer_lock(reviewer_id)):
            if await self.store.reviewer(reviewer_id) is None:
                raise _not_found("reviewer", "reviewer-not-found")
            changes = patch.changes()
            if changes:
                await self.store.reviewers.update_one(
                    {"_id": reviewer_id}, {"$set": {**changes, "updated_at": now()}}
                )
                await self._drain_locked()
            doc = await self.store.reviewer(reviewer_id)
        self.relay.wake()
        assert doc is not None
        return reviewer_view(doc, (await self.store.loads([reviewer_id]))[reviewer_id])

    async def reviewer(self, principal: Principal, reviewer_id: str) -> Reviewer:
        """One reviewer: coordinators see anyone, a reviewer themself."""
        if principal.role == "reviewer" and principal.sub != reviewer_id:
            raise Problem(403, "forbidden", "Forbidden", "A reviewer may only read themself.")
        doc = await self.store.reviewer(reviewer_id)
        if doc is None:
            raise _not_found("reviewer", "reviewer-not-found")
        return reviewer_view(doc, (await self.store.loads([reviewer_id]))[reviewer_id])

    async def reviewers(
        self,
        specialty: Specialty | None,
        language: Language | None,
        active: bool | None,
        cursor: str | None,
        limit: int,
    ) -> ReviewerPage:
        """A page of the directory, by id."""
        query: dict[str, Any] = {}
        if specialty is not None:
            query["specialties"] = specialty.value
        if language is not None:
            query["languages"] = language.value
        if active is not None:
            query["active"] = active
        docs = await self.store.reviewers_page(query, cursor, limit + 1)
        loads = await self.store.loads([d["_id"] for d in docs[:limit]])
        return ReviewerPage(
            items=[reviewer_view(d, loads[d["_id"]]) for d in docs[:limit]],
            next_cursor=next_cursor(docs, limit, "_id"),
        )

    # --- queue -------------------------------------------------------------------------------

    async def queue(
        self,
        specialty: Specialty | None,
        urgency: Urgency | None,
        cursor: str | None,
        limit: int,
    ) -> QueuePage:
        """A page of the cases nobody fits yet, urgent first, then oldest."""
        query: dict[str, Any] = {}
        if specialty is not None:
            query["specialty"] = specialty.value
        if urgency is not None:
            query["urgency"] = urgency.value
        docs = await self.store.queue_page(query, cursor, limit + 1)
        page = docs[:limit]
        declined: dict[str, list[str]] = {d["_id"]: [] for d in page}
        if page:
            ended = self.store.assignments.find(
                {"case_id": {"$in": list(declined)}, "status": AssignmentStatus.DECLINED.value},
                {"case_id": 1, "reviewer_id": 1, "round": 1},
            )
            async for row in ended.sort("round", 1):
                declined[row["case_id"]].append(row["reviewer_id"])
        items = [
            QueuedCase(
                case_id=d["_id"],
                reference=d.get("reference", ""),
                specialty=d["specialty"],
                urgency=d["urgency"],
                language=d["language"],
                physician_institution=d.get("physician_institution"),
                submitted_at=d["submitted_at"],
                waiting_since=d.get("waiting_since"),
                declined_by=declined[d["_id"]],
                last_attempt=d.get("last_attempt"),
            )
            for d in page
        ]
        return QueuePage(items=items, next_cursor=next_cursor(docs, limit, "queue_key"))

    async def assign_from_queue(
        self, principal: Principal, case_id: str, body: AssignBody
    ) -> Assignment:
        """A coordinator assigns a waiting case by hand: every rule holds except capacity."""
        async with self.locks.hold(MATCHING_LOCK), self.locks.hold(case_lock(case_id)):
            case = await self.store.case(case_id)
            if case is None:
                raise _not_found("case", "case-not-found")
            if case["status"] != CaseStatus.WAITING:
                raise _state(
                    f"The case is {case['status']}, not waiting in the queue.", "case-not-waiting"
                )
            reviewer = await self.store.reviewer(body.reviewer_id)
            if reviewer is None:
                raise Problem(
                    404,
                    "reviewer-not-found",
                    "Not found",
                    f"There is no reviewer {body.reviewer_id}.",
                    errors=[{"field": "body.reviewer_id", "message": "unknown reviewer"}],
                )
            rounds = await self.store.assignments_of(case_id)
            declined = [r["reviewer_id"] for r in rounds if r["status"] == "declined"]
            load = (await self.store.loads([body.reviewer_id]))[body.reviewer_id]
            fit = fit_of(reviewer, load)
            why = exclusion(needs_of(case, declined), fit, override_capacity=True)
            if why is not None:
                raise Problem(
                    409,
                    "reviewer-not-eligible",
                    "Reviewer cannot take this case",
                    f"Reviewer {body.reviewer_id} cannot take this case: {_EXCLUSION_TEXT[why]}.",
                    errors=[{"field": "body.reviewer_id", "message": why.value}],
                )
            at = now()
            rationale = Rationale(
                rule=Rule.COORDINATOR.value,
                chosen=body.reviewer_id,
                candidates=[
                    Considered(reviewer_id=fit.id, load=load, capacity=fit.capacity, excluded=None)
                ],
                decided_at=at,
                decided_by=principal.sub,
            )
            next_round = max([int(case.get("round", 0)), *(int(r["round"]) for r in rounds)]) + 1
            assignment_id = await self._assign(case, next_round, body.reviewer_id, rationale, at)
        self.relay.wake()
        return await self.assignment(principal, assignment_id)

    # --- assignments -------------------------------------------------------------------------

    async def assignments(
        self,
        principal: Principal,
        *,
        status: AssignmentStatus | None,
        overdue: bool | None,
        reviewer_id: str | None,
        case_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> AssignmentPage:
        """A page of assignments, soonest due first: a reviewer's own, or all for coordinators."""
        coordinator = principal.role == "coordinator"
        if not coordinator:
            if reviewer_id is not None and reviewer_id != principal.sub:
                raise Problem(
                    403, "forbidden", "Forbidden", "A reviewer sees their own assignments only."
                )
            reviewer_id = principal.sub
        at = now()
        clauses: list[dict[str, Any]] = []
        if reviewer_id is not None:
            clauses.append({"reviewer_id": reviewer_id})
        if status is not None:
            clauses.append({"status": status.value})
        if case_id is not None:
            clauses.append({"case_id": case_id})
        if overdue is not None:
            clauses.append(overdue_query(at) if overdue else not_overdue_query(at))
        query = clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else {}
        docs = await self.store.assignments_page(query, cursor, limit + 1)
        if overdue:
            OVERDUE_ASSIGNMENTS.labels(self.service).set(await self.store.count_overdue(at))
        return AssignmentPage(
            items=[assignment_view(d, at, coordinator=coordinator) for d in docs[:limit]],
            next_cursor=next_cursor(docs, limit, "sort_key"),
        )

    async def _visible(self, principal: Principal, assignment_id: str) -> Document:
        doc = await self.store.assignment(assignment_id)
        if doc is None:
            raise _not_found("assignment", "assignment-not-found")
        if principal.role != "coordinator" and doc["reviewer_id"] != principal.sub:
            raise Problem(
                403,
                "not-your-assignment",
                "Forbidden",
                "This assignment belongs to another reviewer.",
            )
        return doc

    async def assignment(self, principal: Principal, assignment_id: str) -> Assignment:
        """One assignment, if the caller may see it."""
        doc = await self._visible(principal, assignment_id)
        return assignment_view(doc, now(), coordinator=principal.role == "coordinator")

    async def accept(self, principal: Principal, assignment_id: str) -> Assignment:
        """The assigned reviewer accepts; accepting twice is a no-op."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            if doc["status"] == AssignmentStatus.ASSIGNED:
                at = now()
                with case_span("review.accept", doc.get("traceparent", "")):
                    event = Event.new(
                        ReviewAccepted(
                            case_id=doc["case_id"],
                            assignment_id=assignment_id,
                            reviewer_id=doc["reviewer_id"],
                            accepted_at=at,
                        ),
                        SOURCE,
                    )
                async with self.relay.publishing(self.store.assignments, assignment_id):
                    await self.store.assignments.update_one(
                        {"_id": assignment_id},
                        with_events(
                            {
                                "$set": {
                                    "status": AssignmentStatus.ACCEPTED.value,
                                    "accepted_at": at,
                                }
                            },
                            [event],
                        ),
                    )
                log.info("assignment accepted", assignment_id=assignment_id)
            elif doc["status"] != AssignmentStatus.ACCEPTED:
                raise _state(
                    f"This assignment is {doc['status']}; only an assigned one can be accepted."
                )
        self.relay.wake()
        return await self.assignment(principal, assignment_id)

    async def decline(
        self, principal: Principal, assignment_id: str, body: DeclineBody
    ) -> Assignment:
        """The assigned reviewer declines; the case goes to the next best reviewer, or waits."""
        async with self.locks.hold(MATCHING_LOCK):
            case_id = (await self._visible(principal, assignment_id))["case_id"]
            async with self.locks.hold(case_lock(case_id)):
                async with self.locks.hold(assignment_id):
                    doc = await self._visible(principal, assignment_id)
                    if doc["status"] == AssignmentStatus.ASSIGNED:
                        await self._write_decline(doc, body)
                    elif doc["status"] != AssignmentStatus.DECLINED:
                        raise _state(
                            f"This assignment is {doc['status']}; "
                            "only an assigned one can be declined."
                        )
                case = await self.store.case(case_id)
                if case is not None and case["status"] == CaseStatus.MATCHING:
                    await self._match(case)
        self.relay.wake()
        return await self.assignment(principal, assignment_id)

    async def _write_decline(self, doc: Document, body: DeclineBody) -> None:
        # The case is marked for matching first: if we stop before the decline is written, the
        # restart finds the round still assigned and puts the case back as it was.
        case = await self.store.case(doc["case_id"])
        if (
            case is not None
            and case["status"] == CaseStatus.ASSIGNED
            and case.get("assignment_id") == doc["_id"]
        ):
            await self.store.cases.update_one(
                {"_id": doc["case_id"]}, {"$set": {"status": CaseStatus.MATCHING.value}}
            )
        at = now()
        with case_span("review.decline", doc.get("traceparent", "")):
            event = Event.new(
                ReviewDeclined(
                    case_id=doc["case_id"],
                    assignment_id=doc["_id"],
                    reviewer_id=doc["reviewer_id"],
                    declined_at=at,
                    reason_code=body.reason_code.value,
                ),
                SOURCE,
            )
        async with self.relay.publishing(self.store.assignments, doc["_id"]):
            await self.store.assignments.update_one(
                {"_id": doc["_id"]},
                with_events(
                    {
                        "$set": {
                            "status": AssignmentStatus.DECLINED.value,
                            "declined_at": at,
                            "decline": {
                                "reason_code": body.reason_code.value,
                                "reason": body.reason,
                            },
                        }
                    },
                    [event],
                ),
            )
        log.info("assignment declined", assignment_id=doc["_id"], reason_code=body.reason_code)

    # --- opinion -----------------------------------------------------------------------------

    async def post_opinion(
        self, principal: Principal, assignment_id: str, opinion: Opinion
    ) -> tuple[OpinionVersion, bool]:
        """The accepted reviewer's opinion (version 1); the same one again is a replay."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            status = doc["status"]
            if status == AssignmentStatus.COMPLETED:
                first = doc["opinions"][0]
                if first["digest"] != opinion_digest(opinion):
                    raise _state(
                        "An opinion was already recorded for this assignment; "
                        "send a correction with PUT on the same URL.",
                        "opinion-exists",
                    )
                return opinion_view(doc, first), False
            if status == AssignmentStatus.ASSIGNED:
                raise _state("Accept the assignment before writing its opinion.", "not-accepted")
            if status != AssignmentStatus.ACCEPTED:
                raise _state(f"This assignment is {status}; it takes no opinion.")
            entry = await self._write_opinion(doc, opinion, 1)
        self.relay.wake()
        await self.drain_queue()  # the reviewer has one case less
        return opinion_view(doc, entry), True

    async def correct_opinion(
        self, principal: Principal, assignment_id: str, opinion: Opinion
    ) -> OpinionVersion:
        """A correction: a new version, unless it repeats the latest one."""
        async with self.locks.hold(assignment_id):
            doc = await self._visible(principal, assignment_id)
            if doc["status"] != AssignmentStatus.COMPLETED:
                raise _state(
                    "There is no opinion to correct yet; POST the first version.", "no-opinion"
                )
            latest = doc["opinions"][-1]
            if latest["digest"] == opinion_digest(opinion):
                return opinion_view(doc, latest)
            entry = await self._write_opinion(doc, opinion, int(latest["version"]) + 1)
        self.relay.wake()
        return opinion_view(doc, entry)

    async def opinion(
        self, principal: Principal, assignment_id: str, version: int | None
    ) -> OpinionVersion:
        """The latest (or a given) version of an assignment's opinion."""
        doc = await self._visible(principal, assignment_id)
        versions = doc.get("opinions") or []
        chosen = [v for v in versions if version is None or v["version"] == version]
        if not chosen:
            raise _not_found("opinion" if version is None else "opinion version", "no-opinion")
        return opinion_view(doc, chosen[-1])

    async def _write_opinion(self, doc: Document, opinion: Opinion, version: int) -> Document:
        """Store an opinion version and its sealed `completed` event in one write."""
        reviewer = await self.store.reviewer(doc["reviewer_id"])
        display_name = reviewer["display_name"] if reviewer else doc["reviewer_id"]
        at = now()
        event_id = new_event_id()
        sealed = self.keyring.seal_json(
            sealed_content(opinion, version, display_name, doc["specialty"]), aad=event_id
        )
        with case_span("review.opinion", doc.get("traceparent", "")):
            event = Event.new(
                ReviewCompleted(
                    case_id=doc["case_id"],
                    assignment_id=doc["_id"],
                    reviewer_id=doc["reviewer_id"],
                    specialty=Specialty(doc["specialty"]),
                    version=version,
                    completed_at=at,
                    opinion=sealed,
                ),
                SOURCE,
                event_id=event_id,
            )
        entry = {
            "version": version,
            "digest": opinion_digest(opinion),
            "completed_at": at,
            "event_id": event_id,
            "opinion": opinion.model_dump(mode="json"),
        }
        changes: dict[str, Any] = {
            "status": AssignmentStatus.COMPLETED.value,
            "opinion_version": version,
        }
        changes["completed_at" if version == 1 else "corrected_at"] = at
        async with self.relay.publishing(self.store.assignments, doc["_id"]):
            await self.store.assignments.update_one(
                {"_id": doc["_id"]},
                with_events({"$set": changes, "$push": {"opinions": entry}}, [event]),
            )
        log.info("opinion recorded", assignment_id=doc["_id"], version=version)
        return entry

    # --- SLA ---------------------------------------------------------------------------------

    async def refresh_overdue(self) -> int:
        """Recount overdue assignments into the gauge; returns the count."""
        count = await self.store.count_overdue(now())
        OVERDUE_ASSIGNMENTS.labels(self.service).set(count)
        return count

    async def watch_overdue(self, interval: float) -> None:
        """Keep the overdue gauge fresh until cancelled."""
        while True:
            try:
                await self.refresh_overdue()
            except PyMongoError as exc:
                log.warning("overdue count failed", error=type(exc).__name__)
            await asyncio.sleep(interval)
