"""Review's pure decisions: matching (who may take a case, who is chosen), the SLA, the life of
an assignment (what accept, decline and an opinion may do), who may see what, and the ids and
sort keys the store orders by. No I/O: tested without a store, a broker or HTTP
(tests/unit/review)."""

import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from avis.review.models import (
    ACTIVE,
    AssignmentStatus,
    Considered,
    Opinion,
    Rationale,
    SecondReadingReason,
    SecondReadingState,
    TranslationBody,
    TranslationState,
    TranslationTexts,
    TranslationWay,
)
from avis.shared.clock import to_millis
from avis.shared.events import CompletedOpinion, Urgency
from avis.shared.problems import Problem
from avis.shared.security import Principal

MATCHER = "matcher"
# Assignment ids are derived from the case id and round, so replaying a cause never adds one.
_ASSIGNMENT_NAMESPACE = uuid.UUID("5d0c8a3e-6f1b-4f0e-9a57-2b8c1f3d4e60")
# Assignments that ended without an opinion (ACTIVE ones count against capacity).
ENDED = (AssignmentStatus.DECLINED, AssignmentStatus.CANCELLED)


# --- matching -------------------------------------------------------------------------------


class Rule(StrEnum):
    """The rule that decided a matching."""

    ONLY_CANDIDATE = "only_candidate"
    LEAST_LOAD = "least_load"
    TIE_BREAK_BY_ID = "tie_break_by_id"
    NOBODY_FITS = "nobody_fits"
    COORDINATOR = "coordinator"
    # The patient accepted it and nobody who reads their language fits today: a specialist who
    # does not read it takes the case, through a translator both ways.
    INTERNATIONAL_NO_READER_AVAILABLE = "international_no_reader_available"


class Exclusion(StrEnum):
    """Why a reviewer cannot take a case."""

    INACTIVE = "inactive"
    SPECIALTY = "specialty"
    LANGUAGE = "language"
    INSTITUTION_CONFLICT = "institution_conflict"
    DECLINED_BEFORE = "declined_before"
    FIRST_READER = "first_reader"
    OPINION_LANGUAGE = "opinion_language"
    AT_CAPACITY = "at_capacity"


EXCLUSION_TEXT = {
    Exclusion.INACTIVE: "the reviewer is not active",
    Exclusion.SPECIALTY: "the reviewer does not practise the case's specialty",
    Exclusion.LANGUAGE: "the reviewer does not read the patient's language",
    Exclusion.INSTITUTION_CONFLICT: "the reviewer works at the treating physician's institution",
    Exclusion.DECLINED_BEFORE: "the reviewer already declined this case",
    Exclusion.FIRST_READER: "the reviewer wrote the opinion to be read",
    Exclusion.OPINION_LANGUAGE: "the reviewer does not read the language of the opinion to be read",
    Exclusion.AT_CAPACITY: "the reviewer is at capacity",
}


@dataclass(frozen=True)
class CaseNeeds:
    """What matching needs to know of a case."""

    specialty: str
    language: str
    physician_institution: str | None = None
    declined_by: frozenset[str] = frozenset()
    # The patient accepted a specialist who does not read their language (default no).
    international_review: bool = False
    first_reader: str | None = None  # a second reading: who wrote the opinion


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

    def rationale(self, at: datetime) -> Rationale:
        """The matcher's account of this decision made at `at`, kept with its round, its wait in
        the queue or its second reading."""
        return Rationale(
            rule=self.rule.value,
            chosen=self.chosen,
            candidates=list(self.candidates),
            decided_at=at,
            decided_by=MATCHER,
        )


def same_institution(a: str | None, b: str | None) -> bool:
    """Whether two institution codes name the same institution (case and spaces ignored)."""
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def exclusion(
    case: CaseNeeds,
    reviewer: ReviewerFit,
    *,
    override_capacity: bool = False,
    through_translator: bool = False,
) -> Exclusion | None:
    """Why `reviewer` cannot take `case`, or None if they can (`through_translator`: the
    patient's language is no bar, a translator carries the case both ways)."""
    if not reviewer.active:
        return Exclusion.INACTIVE
    if case.specialty not in reviewer.specialties:
        return Exclusion.SPECIALTY
    if not through_translator and case.language not in reviewer.languages:
        # A second reading (`first_reader` set) is matched on the opinion's language.
        return Exclusion.LANGUAGE if case.first_reader is None else Exclusion.OPINION_LANGUAGE
    if same_institution(case.physician_institution, reviewer.institution_code):
        return Exclusion.INSTITUTION_CONFLICT
    if reviewer.id == case.first_reader:
        return Exclusion.FIRST_READER
    if reviewer.id in case.declined_by:
        return Exclusion.DECLINED_BEFORE
    if not override_capacity and reviewer.load >= reviewer.capacity:
        return Exclusion.AT_CAPACITY
    return None


def _considered(
    case: CaseNeeds, pool: list[ReviewerFit], *, through_translator: bool
) -> tuple[Considered, ...]:
    return tuple(
        Considered(
            reviewer_id=r.id,
            load=r.load,
            capacity=r.capacity,
            excluded=why.value
            if (why := exclusion(case, r, through_translator=through_translator)) is not None
            else None,
        )
        for r in pool
    )


def _eligible(pool: list[ReviewerFit], candidates: tuple[Considered, ...]) -> list[ReviewerFit]:
    return sorted(
        (r for r, c in zip(pool, candidates, strict=True) if c.excluded is None),
        key=lambda r: (r.load, r.id),
    )


def match(case: CaseNeeds, reviewers: Iterable[ReviewerFit]) -> Decision:
    """The eligible reviewer with the least load; equal loads go to the smallest reviewer id.

    Only when nobody who reads the patient's language fits (at capacity counts: none is
    available within the SLA) and the patient accepted it, a specialist who does not read it
    may take the case, through a translator (`Rule.INTERNATIONAL_NO_READER_AVAILABLE`), chosen
    by the same least-load order; the candidates are then as that path saw them."""
    pool = sorted(reviewers, key=lambda r: r.id)
    candidates = _considered(case, pool, through_translator=False)
    eligible = _eligible(pool, candidates)
    if not eligible and case.international_review:
        abroad = _considered(case, pool, through_translator=True)
        chosen = _eligible(pool, abroad)
        if chosen:
            return Decision(chosen[0].id, Rule.INTERNATIONAL_NO_READER_AVAILABLE, abroad)
    if not eligible:
        return Decision(None, Rule.NOBODY_FITS, candidates)
    if len(eligible) == 1:
        rule = Rule.ONLY_CANDIDATE
    elif eligible[0].load < eligible[1].load:
        rule = Rule.LEAST_LOAD
    else:
        rule = Rule.TIE_BREAK_BY_ID
    return Decision(eligible[0].id, rule, candidates)


def match_in_turn(cases: Sequence[CaseNeeds], reviewers: Iterable[ReviewerFit]) -> list[Decision]:
    """`match` for several cases decided together, in their order: each among the reviewers of
    its specialty, with the loads as the decisions before it in the batch left them (a
    reviewer chosen counts one more for the next), so no capacity is exceeded within it."""
    pool = list(reviewers)
    taken: dict[str, int] = {}
    decisions = []
    for case in cases:
        fits = [
            dataclasses.replace(r, load=r.load + taken.get(r.id, 0))
            for r in pool
            if case.specialty in r.specialties
        ]
        decision = match(case, fits)
        if decision.chosen is not None:
            taken[decision.chosen] = taken.get(decision.chosen, 0) + 1
        decisions.append(decision)
    return decisions


def check_eligible(case: CaseNeeds, reviewer: ReviewerFit) -> None:
    """409 unless a coordinator may hand `case` to `reviewer`: every rule but capacity (and the
    patient's language, when they accepted a review through a translator)."""
    why = exclusion(
        case, reviewer, override_capacity=True, through_translator=case.international_review
    )
    if why is not None:
        raise Problem(
            409,
            "reviewer-not-eligible",
            "Reviewer cannot take this case",
            f"Reviewer {reviewer.id} cannot take this case: {EXCLUSION_TEXT[why]}.",
            errors=[{"field": "body.reviewer_id", "message": why.value}],
        )


def needs_translation(language: str, reviewer_languages: Iterable[str]) -> bool:
    """Whether a case in `language` goes through a translator to a reviewer reading these."""
    return language not in frozenset(reviewer_languages)


def next_round(case_round: int, rounds: Iterable[int]) -> int:
    """The number of a case's next assignment round: after every round it ever had."""
    return max([case_round, *rounds]) + 1


def next_seq(seqs: Iterable[int]) -> int:
    """The sequence number of the next event review publishes for a case (`seq` of the events
    that drive its status): after every one its rounds published, so a new round follows the
    last word of the one before it. Review stamps every event of a case inside its one matching
    section (`Matcher.deciding()`), reading the rounds it keeps it on, so no two are equal; a
    number lost to a stop between the read and the write leaves a gap, which orders the same."""
    return max(seqs, default=0) + 1


# --- SLA and ordering -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sla:
    """Days from assignment until the opinion is due, by urgency."""

    routine_days: float = 7.0
    urgent_days: float = 3.0


def due_at(assigned_at: datetime, urgency: Urgency | str, sla: Sla) -> datetime:
    """When an assignment made at `assigned_at` is due (at the store's millisecond precision)."""
    days = sla.urgent_days if Urgency(urgency) is Urgency.URGENT else sla.routine_days
    return to_millis(assigned_at + timedelta(days=days))


def is_overdue(
    status: AssignmentStatus, due: datetime, at: datetime, paused_since: datetime | None = None
) -> bool:
    """Past its due date and not answered. While a request for more information is open
    (`paused_since`), the clock stands: the due date moves on with the time paused, so the
    assignment is overdue only if it already was when the clock stopped."""
    return status in ACTIVE and due < (at if paused_since is None else min(at, paused_since))


def is_due_today(status: AssignmentStatus, due: datetime, at: datetime) -> bool:
    """Not answered and due on `at`'s day (UTC), whether that time has passed or not."""
    return status in ACTIVE and due.astimezone(UTC).date() == at.astimezone(UTC).date()


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


def due_day(key: str) -> str:
    """The day (`YYYY-MM-DD`) whose bucket files a sort key: the key begins with it."""
    return key[:10]


def due_month(day: str) -> str:
    """The month (`YYYY-MM`) whose document lists a day of the due walk."""
    return day[:7]


def due_days_enough(days: Sequence[str], counts: Mapping[str, int], wanted: int, most: int) -> bool:
    """Whether the due walk's listed `days` are enough for its next read of buckets (`most`
    days at a time) to find `wanted` entries by their counts, or it must list another month's
    first (a day of unknown count is taken to fill the page alone)."""
    if len(days) >= most:
        return True
    return sum(max(counts.get(day, wanted), 0) for day in days) >= wanted


def due_days_to_read(days: Sequence[str], counts: Mapping[str, int], wanted: int, most: int) -> int:
    """How many of the next `days` (in order) the due walk reads in one request to find
    `wanted` entries: as few as the days' filed counts add up to `wanted`, at least one, at
    most `most`. A day of unknown count (filed before the counts were kept) is taken to fill
    the page alone; an emptied day (0) costs nothing and is read with the next."""
    total = 0
    for n, day in enumerate(days[:most], start=1):
        if day not in counts:
            return n
        total += max(counts[day], 0)
        if total >= wanted:
            return n
    return max(1, min(len(days), most))


# --- the life of an assignment --------------------------------------------------------------


def state_conflict(detail: str, slug: str = "assignment-state") -> Problem:
    """409: the assignment (or case) is not in a state that allows this."""
    return Problem(409, slug, "Conflict", detail)


def may_accept(status: AssignmentStatus) -> bool:
    """Whether accepting writes anything: True if assigned, False if already accepted; 409
    otherwise."""
    if status == AssignmentStatus.ACCEPTED:
        return False
    if status != AssignmentStatus.ASSIGNED:
        raise state_conflict(f"This assignment is {status}; only an assigned one can be accepted.")
    return True


def may_decline(status: AssignmentStatus) -> bool:
    """Whether declining writes anything: True if assigned, False if already declined; 409
    otherwise."""
    if status == AssignmentStatus.DECLINED:
        return False
    if status != AssignmentStatus.ASSIGNED:
        raise state_conflict(f"This assignment is {status}; only an assigned one can be declined.")
    return True


def may_write_first_opinion(status: AssignmentStatus) -> bool:
    """Whether a first opinion is written (False: one is there, compare it); 409 before the
    assignment is accepted or after it ended."""
    if status == AssignmentStatus.COMPLETED:
        return False
    if status == AssignmentStatus.ASSIGNED:
        raise state_conflict("Accept the assignment before writing its opinion.", "not-accepted")
    if status != AssignmentStatus.ACCEPTED:
        raise state_conflict(f"This assignment is {status}; it takes no opinion.")
    return True


def check_correctable(status: AssignmentStatus) -> None:
    """409 unless there is an opinion to correct."""
    if status != AssignmentStatus.COMPLETED:
        raise state_conflict(
            "There is no opinion to correct yet; POST the first version.", "no-opinion"
        )


# What the keyed digest of an opinion is derived for (`Keyring.derive`).
OPINION_DIGEST_PURPOSE = "avis-review:opinion-digest"


def opinion_digest(kid: str, key: bytes, opinion: Opinion) -> str:
    """A keyed fingerprint of an opinion's content (HMAC-SHA256 under a key derived for this
    purpose, after that key's id), to tell a replay from a different opinion: a plain hash of
    clinical text kept in the store would let anyone who guesses the text confirm it."""
    canonical = json.dumps(opinion.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return f"{kid}:{hmac.new(key, canonical.encode('utf-8'), hashlib.sha256).hexdigest()}"


def digest_key_id(stored: str) -> str | None:
    """The id of the key a stored digest was made with (None: a plain hash of old)."""
    kid, sep, _ = stored.rpartition(":")
    return kid if sep else None


def check_replay(same: bool) -> None:
    """409 if a first opinion is sent again with other content: that is a correction (PUT)."""
    if not same:
        raise state_conflict(
            "An opinion was already recorded for this assignment; "
            "send a correction with PUT on the same URL.",
            "opinion-exists",
        )


def reviewer_contact_aad(reviewer_id: str) -> str:
    """What a reviewer's work address, sealed at rest in the directory, is bound to."""
    return f"review:reviewer-contact:{reviewer_id}"


def opinion_aad(assignment_id: str, version: int) -> str:
    """What a version of an opinion, sealed at rest, is bound to: where it is kept."""
    return f"review:opinion:{assignment_id}:{version}"


def information_aad(assignment_id: str, request_id: str) -> str:
    """What a request for more information's question, sealed at rest, is bound to."""
    return f"review:information:{assignment_id}:{request_id}"


def request_id_for(assignment_id: str, number: int) -> str:
    """The id of an assignment's `number`th request for more information (1, 2...)."""
    return f"{assignment_id}-q{number:02d}"


def assignment_of_request(request_id: str) -> str:
    """The assignment a request for more information belongs to (`request_id_for`)."""
    return request_id.rsplit("-q", 1)[0]


def check_no_open_request(*, open_request: bool) -> None:
    """409 while a request for more information is open: the opinion waits for the answer, or
    for the request's expiry (the due date moves by the pause either way)."""
    if open_request:
        raise state_conflict(
            "A request for more information is open on this assignment; the opinion is written "
            "once it is answered or expires.",
            "information-request-open",
        )


def check_may_ask(status: AssignmentStatus, *, open_request: bool) -> None:
    """409 unless the assignment is accepted and has no request for more information open:
    the specialist asks once they took the review on, one request at a time."""
    if status != AssignmentStatus.ACCEPTED:
        raise state_conflict(
            f"This assignment is {status}; only an accepted one may ask for more information."
        )
    if open_request:
        raise state_conflict(
            "A request for more information is already open on this assignment; it is "
            "answered or expires first.",
            "information-request-open",
        )


def request_expiry(at: datetime, days: float) -> datetime:
    """When a request for more information made at `at` expires unanswered."""
    return to_millis(at + timedelta(days=days))


def resumed_due(due: datetime, paused_since: datetime, at: datetime) -> tuple[datetime, float]:
    """The due date once the clock resumes at `at` after standing since `paused_since`: moved by
    exactly the pause; and the pause's length in seconds."""
    paused = max(at - paused_since, timedelta(0))
    return to_millis(due + paused), paused.total_seconds()


# --- follow-up questions --------------------------------------------------------------------

# How many follow-up questions a case may have after its report.
MAX_FOLLOW_UPS = 3


def follow_up_id_for(assignment_id: str, number: int) -> str:
    """The id of an assignment's `number`th follow-up question (1, 2, 3)."""
    return f"{assignment_id}-f{number:02d}"


def assignment_of_follow_up(follow_up_id: str) -> str:
    """The assignment a follow-up question belongs to (`follow_up_id_for`)."""
    return follow_up_id.rsplit("-f", 1)[0]


def follow_up_aad(follow_up_id: str, part: str) -> str:
    """What a follow-up's question or answer (`part`), sealed at rest, is bound to."""
    return f"review:follow-up:{follow_up_id}:{part}"


def may_ask_follow_up(
    principal: Principal, *, patient_id: str | None, partner_id: str | None
) -> bool:
    """Who asks a follow-up question: the case's patient, or the partner that filed it."""
    if principal.role == "patient":
        return patient_id is not None and principal.sub == patient_id
    if principal.role == "partner":
        return partner_id is not None and principal.partner_id == partner_id
    return False


def check_may_ask_follow_up(
    *, reported_at: datetime | None, asked: int, at: datetime, period_days: float
) -> None:
    """409 unless the case's report was issued, less than `period_days` ago, and fewer than
    MAX_FOLLOW_UPS questions were asked: each refusal says which rule it is."""
    if reported_at is None:
        raise state_conflict(
            "The case has no report yet; a follow-up question is asked about an issued report.",
            "follow-up-no-report",
        )
    if asked >= MAX_FOLLOW_UPS:
        raise state_conflict(
            f"This case had its {MAX_FOLLOW_UPS} follow-up questions already; no more may be "
            "asked.",
            "follow-up-limit",
        )
    if at > reported_at + timedelta(days=period_days):
        raise state_conflict(
            f"Follow-up questions are asked within {period_days:g} days of the report; that "
            "period is over.",
            "follow-up-period-over",
        )


def follow_up_due(at: datetime, days: float) -> datetime:
    """When the answer to a follow-up question asked at `at` is due."""
    return to_millis(at + timedelta(days=days))


FOLLOW_UP_REQUEST_PURPOSE = "avis-review:follow-up-request"


def follow_up_request(kid: str, key: bytes, parts: Iterable[str]) -> str:
    """A keyed digest (HMAC-SHA256 under a key derived for this purpose, after that key's id)
    of a follow-up's request: the asker and their Idempotency-Key, or the question's text (a
    plain hash of it would let anyone who guesses the text confirm it from the store)."""
    canonical = json.dumps(list(parts), ensure_ascii=False).encode("utf-8")
    return f"{kid}:{hmac.new(key, canonical, hashlib.sha256).hexdigest()}"


def check_same_follow_up(same: bool) -> None:
    """422 when an Idempotency-Key that asked a question comes again with another text."""
    if not same:
        raise Problem(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "this Idempotency-Key was used for a different question; use a new key",
            errors=[{"field": "header.Idempotency-Key", "message": "used for another body"}],
        )


def follow_up_report_seq(answer_seq: int, open_asked: Iterable[int]) -> int:
    """The sequence number of the report version that carries an answer: the answer's own
    (`answer_seq`) when no other question of the case is open; else one below the earliest
    open question's asking (`open_asked`), so that the version is ordered before that question
    and the case stays in review until the last open one is answered, in whatever order the
    status's consumer hears of them. An open question asked before its number was kept (0)
    orders nothing: the answer's own."""
    earliest = min(open_asked, default=0)
    return earliest - 1 if earliest > 0 else answer_seq


def check_may_answer_follow_up(*, answered: bool) -> None:
    """409 when the follow-up question was answered already (the addendum is written once)."""
    if answered:
        raise state_conflict("This follow-up question was answered already.", "follow-up-answered")


def decline_aad(assignment_id: str) -> str:
    """What a decline's free-text reason, sealed at rest, is bound to."""
    return f"review:decline:{assignment_id}"


def sealed_content(
    opinion: Opinion,
    version: int,
    display_name: str,
    specialty: str,
    second_reader: str | None = None,
) -> CompletedOpinion:
    """What `avis.review.completed.v1` carries sealed: the opinion and who wrote it (and the
    second specialist who read it and agreed, if one did)."""
    return CompletedOpinion.model_validate(
        {
            **opinion.model_dump(mode="json"),
            "version": version,
            "reviewer_display_name": display_name,
            "reviewer_specialty": specialty,
            "second_reader_display_name": second_reader,
            "second_reader_specialty": specialty if second_reader is not None else None,
        }
    )


# --- the second reading -----------------------------------------------------------------------


def second_reading_reason(
    *,
    asked: bool,
    specialty: str,
    urgency: str,
    specialties: Iterable[str],
    urgencies: Iterable[str],
) -> SecondReadingReason | None:
    """Why a first opinion goes to a second reader before release, or None (released now): the
    coordinators' rules for the case's specialty or urgency come first, then the first
    specialist's own request."""
    if specialty in set(specialties) or urgency in set(urgencies):
        return SecondReadingReason.COORDINATOR_RULE
    return SecondReadingReason.FIRST_READER if asked else None


def holds_opinion(state: SecondReadingState | None) -> bool:
    """Whether a new opinion version stays in review for the second reader (any reading not
    agreed yet, nor closed by the case's withdrawal); after agreement, see `reads_again`."""
    return state is not None and state not in (
        SecondReadingState.AGREED,
        SecondReadingState.WITHDRAWN,
    )


def reads_again(
    reason: SecondReadingReason,
    *,
    specialty: str,
    urgency: str,
    specialties: Iterable[str],
    urgencies: Iterable[str],
) -> bool:
    """Whether a correction of an opinion the second reader agreed with goes back to them
    before its release: when the first specialist asked for the reading, or when the
    coordinators' rule that asked for it still holds for the case (a rule lifted since: the
    correction is released at once, still naming both)."""
    if reason is SecondReadingReason.FIRST_READER:
        return True
    return (
        second_reading_reason(
            asked=False,
            specialty=specialty,
            urgency=urgency,
            specialties=specialties,
            urgencies=urgencies,
        )
        is not None
    )


def opinion_language(
    patient_language: str,
    *,
    international: bool,
    to_specialist: str | None,
    first_reader_languages: Iterable[str],
) -> str:
    """The language the opinion of a round is written in: the patient's, unless the round is an
    international review, where the specialist wrote it in their own (the language the case was
    translated into for them, else the one `translation_languages` gives them)."""
    if not international:
        return patient_language
    if to_specialist is not None:
        return to_specialist
    read = list(first_reader_languages)
    return min(read) if read else patient_language


def reading_needs(case: CaseNeeds, *, first_reader: str, language: str) -> CaseNeeds:
    """What matching a second reader needs: the case's needs, its first reader excluded, in the
    language of the opinion they read (`opinion_language`), not the patient's: the second
    reader reads the opinion as it was written, no translator carries it to them, so the
    patient's consent to an international review never lets one who cannot read it through."""
    return dataclasses.replace(
        case, first_reader=first_reader, language=language, international_review=False
    )


def reread(case: CaseNeeds, reader: ReviewerFit | None) -> Decision:
    """Whether a correction after the agreement goes back to the same second reader now: by the
    rules of the first pick (`exclusion`, capacity included: active, of the specialty, not the
    first reader, no conflict, room in their load). If they do not fit (or are gone from the
    directory), nobody is chosen (`Rule.NOBODY_FITS`), as when nobody fits at the first pick:
    the reading waits, unmatched, until a second reader is free."""
    if reader is None:
        return Decision(None, Rule.NOBODY_FITS, ())
    why = exclusion(case, reader, through_translator=case.international_review)
    seen = Considered(
        reviewer_id=reader.id,
        load=reader.load,
        capacity=reader.capacity,
        excluded=why.value if why is not None else None,
    )
    if why is not None:
        return Decision(None, Rule.NOBODY_FITS, (seen,))
    return Decision(reader.id, Rule.ONLY_CANDIDATE, (seen,))


def reading_load_id(assignment_id: str) -> str:
    """What a second reading counts as in its reader's load (`open_assignments`): never an
    assignment's id, so the lists of assignments skip it."""
    return f"second:{assignment_id}"


def reading_of_load(entry: str) -> str | None:
    """The assignment whose second reading a load entry is, or None for an assignment."""
    return entry.removeprefix("second:") if entry.startswith("second:") else None


def comments_aad(assignment_id: str, number: int) -> str:
    """What a second reader's comments, sealed at rest, are bound to."""
    return f"review:second-reading:{assignment_id}:{number}"


def may_read_reading(principal: Principal, first: str, second: str | None) -> bool:
    """Who reads a second reading: its two specialists, and coordinators (for a reason)."""
    return is_coordinator(principal) or principal.sub in {first, second}


def check_second_reader(principal: Principal, second: str | None) -> None:
    """403 unless `principal` is the reading's second reader."""
    if second is None or principal.sub != second:
        raise Problem(
            403,
            "not-your-reading",
            "Forbidden",
            "Only the second reader of this opinion agrees with it or comments on it.",
        )


def check_may_answer(state: SecondReadingState) -> None:
    """409 unless the second reader has a version to read (agree or comment)."""
    if state is not SecondReadingState.READING:
        detail = {
            SecondReadingState.COMMENTED: "Comments went back: the first specialist answers "
            "them with a new version of the opinion first.",
            SecondReadingState.AGREED: "The opinion is agreed with and released already.",
            SecondReadingState.UNMATCHED: "No second reader was chosen yet.",
            SecondReadingState.WITHDRAWN: "The case was withdrawn: nothing is to be read.",
        }[state]
        raise state_conflict(detail, "second-reading-state")


# --- who may see what -----------------------------------------------------------------------


def is_coordinator(principal: Principal) -> bool:
    """Coordinators see everything, with the matching rationale and the decline reasons."""
    return principal.role == "coordinator"


def check_assignment_access(principal: Principal, reviewer_id: str) -> None:
    """403 unless a coordinator, or the reviewer the assignment belongs to."""
    if not is_coordinator(principal) and reviewer_id != principal.sub:
        raise Problem(
            403, "not-your-assignment", "Forbidden", "This assignment belongs to another reviewer."
        )


def assignments_reviewer(principal: Principal, reviewer_id: str | None) -> str | None:
    """Whose assignments `principal` lists: a reviewer only their own (403 for another's)."""
    if is_coordinator(principal):
        return reviewer_id
    if reviewer_id is not None and reviewer_id != principal.sub:
        raise Problem(403, "forbidden", "Forbidden", "A reviewer sees their own assignments only.")
    return principal.sub


def check_reviewer_access(principal: Principal, reviewer_id: str) -> None:
    """403 if a reviewer reads another reviewer's entry (coordinators read all)."""
    if principal.role == "reviewer" and principal.sub != reviewer_id:
        raise Problem(403, "forbidden", "Forbidden", "A reviewer may only read themself.")


# --- the access trail -----------------------------------------------------------------------

# What review records in a case's access trail (avis.shared.access_log), in plain words: done,
# and tried (a refusal). The opinion is the specialist's clinical free text, and a decline's
# free-text reason may say something of the patient: each read and write of them is an entry.
ACTIONS = {
    "opinion.read": ("read the specialist's opinion", "read the specialist's opinion"),
    "opinion.create": ("wrote the specialist's opinion", "write the specialist's opinion"),
    "opinion.correct": ("corrected the specialist's opinion", "correct the specialist's opinion"),
    "decline.read": (
        "read why a specialist declined to review the case",
        "read why a specialist declined to review the case",
    ),
    "review.decline": ("declined to review the case, saying why", "decline to review the case"),
    "information.create": (
        "asked the patient for more information",
        "ask the patient for more information",
    ),
    "second-reading.read": (
        "read the specialist's opinion and the second reader's comments",
        "read the specialist's opinion and the second reader's comments",
    ),
    "second-reading.comment": (
        "returned comments on the specialist's opinion as its second reader",
        "comment on the specialist's opinion as its second reader",
    ),
    "second-reading.agree": (
        "agreed with the specialist's opinion as its second reader",
        "agree with the specialist's opinion as its second reader",
    ),
    "follow-up.create": ("asked a follow-up question", "ask a follow-up question"),
    "follow-up.read": ("read a follow-up question", "read a follow-up question"),
    "follow-up.answer": ("answered a follow-up question", "answer a follow-up question"),
    "translation.read": ("read a translation of the case", "read a translation of the case"),
    "translation.write": ("translated the case", "translate the case"),
}
# The refusals of a read that go in the trail: another reviewer's assignment, and a
# coordinator's read of clinical content without a reason.
AUDITED_REFUSALS = frozenset({403, 428})
# A read repeated by the same person within this window of the last entry is that entry: the
# specialist's workspace reads the opinion on every view, the board a decline's reason.
REPEATED_READ_FOLD = timedelta(minutes=15)


def fold_window(action: str) -> timedelta | None:
    """How long a repeat of `action` by the same person counts as the last entry (None: never;
    a read for a stated reason is never folded, whatever this says). Writes are each recorded."""
    if not action.endswith(".read"):
        return None
    return REPEATED_READ_FOLD


def needs_reason(action: str) -> bool:
    """Whether a coordinator says why before `action`: a read of the opinion (clinical content);
    a decline's reason is read in the course of coordination."""
    return action in {"opinion.read", "second-reading.read"}


def may_read_trail(principal: Principal, patient_id: str | None) -> bool:
    """Who reads review's access trail of a case: coordinators, and the case's patient (known to
    review from the submission, or from the claim of a case a partner filed)."""
    return principal.role == "coordinator" or (
        principal.role == "patient" and patient_id is not None and principal.sub == patient_id
    )


# --- international review: the translation step ---------------------------------------------

# What a translation's text, sealed at rest under the case key, is bound to (its id says which
# assignment and which way).
TRANSLATION_AAD = "review:translation:{translation_id}"


@dataclass(frozen=True)
class TranslatorFit:
    """What choosing a translator needs to know: the language pairs they translate (both ways)
    and their current load."""

    id: str
    languages: frozenset[str]
    capacity: int
    load: int
    active: bool = True


def translation_languages(
    way: TranslationWay, patient_language: str, specialist_languages: Iterable[str]
) -> tuple[str, str]:
    """The (from, to) languages of a translation: the specialist's language is the smallest
    code they read, so that a case's two translations are the same pair both ways."""
    specialist = min(specialist_languages)
    if way is TranslationWay.TO_SPECIALIST:
        return patient_language, specialist
    return specialist, patient_language


def translation_id_for(assignment_id: str, way: TranslationWay) -> str:
    """The id of an assignment's translation one way: replaying its cause never adds one."""
    return f"{assignment_id}-t{'1' if way is TranslationWay.TO_SPECIALIST else '2'}"


def translation_aad(translation_id: str) -> str:
    """What a translated text, sealed at rest, is bound to: where it is kept."""
    return TRANSLATION_AAD.format(translation_id=translation_id)


def translation_due(at: datetime, days: float) -> datetime:
    """When a translation queued at `at` is due (its own due date, a setting)."""
    return to_millis(at + timedelta(days=days))


def translates(translator: TranslatorFit, pair: tuple[str, str]) -> bool:
    """Whether `translator` may take a translation of this (from, to) pair now."""
    return (
        translator.active
        and set(pair) <= translator.languages
        and translator.load < translator.capacity
    )


def choose_translator(pair: tuple[str, str], translators: Iterable[TranslatorFit]) -> str | None:
    """The translator of the pair with the least load (equal loads: the smallest id), or None:
    the translation waits in the queue of its pair until one frees up."""
    fit = sorted((t for t in translators if translates(t, pair)), key=lambda t: (t.load, t.id))
    return fit[0].id if fit else None


def may_write_translation(state: TranslationState, translator_id: str | None, by: str) -> bool:
    """Whether a translation is written (False: it is done, a replay compares it); 409 unless
    the translation is taken by `by`."""
    if state is TranslationState.DONE:
        return False
    if state is not TranslationState.TAKEN or translator_id != by:
        raise state_conflict(
            "Only the translator who took this translation writes it.", "translation-not-taken"
        )
    return True


def may_take_translation(state: TranslationState, translator_id: str | None, by: str) -> bool:
    """Whether taking a translation writes anything (False: `by` has it already); 409 if
    another translator has it or it is done."""
    if state is TranslationState.TAKEN and translator_id == by:
        return False
    if state is not TranslationState.QUEUED:
        raise state_conflict(f"This translation is {state}; only a queued one can be taken.")
    return True


# Translations not done yet: waiting for a translator, or taken by one (counted in their load).
OPEN_TRANSLATION = (TranslationState.QUEUED, TranslationState.TAKEN)


def translation_overdue(state: TranslationState, due: datetime, at: datetime) -> bool:
    """Whether a translation is past its own due date at `at` and not done yet (a closed one,
    whose round ended, is no longer anyone's work)."""
    return state in OPEN_TRANSLATION and due < at


def check_translation_open(round_status: AssignmentStatus, state: TranslationState) -> None:
    """409 once a translation's round ended without it: its case withdrawn, or the specialist
    declined the case (the translation closed with their round; the next round queues its own)."""
    if round_status is AssignmentStatus.CANCELLED:
        raise state_conflict("The case was withdrawn.", "translation-cancelled")
    if round_status in ENDED or state is TranslationState.CLOSED:
        raise state_conflict(
            "The specialist declined the case; this translation closed with their round.",
            "translation-closed",
        )


def check_specialist_may_start(translation_state: TranslationState | None) -> None:
    """409 while the case's translation to the specialist's language is not done: the specialist
    gets the case in a language they read (None: the case needs no translation)."""
    if translation_state is not None and translation_state is not TranslationState.DONE:
        raise state_conflict(
            "The case is being translated into your language; it opens once translated.",
            "translation-pending",
        )


def check_translation_access(principal: Principal, translator_id: str | None) -> None:
    """403 unless a coordinator, or a translator (a queued translation) or the translator who
    took it (a taken or done one)."""
    if is_coordinator(principal):
        return
    if principal.role != "translator" or translator_id not in (None, principal.sub):
        raise Problem(
            403,
            "not-your-translation",
            "Forbidden",
            "This translation belongs to another translator.",
        )


def translation_texts(way: TranslationWay, body: TranslationBody) -> TranslationTexts:
    """What a translator's body says for a translation of `way`: the summary (to the
    specialist) or the opinion (to the patient), and nothing else (422 otherwise)."""
    if way is TranslationWay.TO_SPECIALIST and body.summary and body.opinion is None:
        return TranslationTexts(summary=body.summary)
    if way is TranslationWay.TO_PATIENT and body.opinion is not None and body.summary is None:
        return TranslationTexts(opinion=body.opinion)
    wanted = "summary" if way is TranslationWay.TO_SPECIALIST else "opinion"
    raise Problem(
        422,
        "translation-mismatch",
        "Unprocessable Content",
        f"A translation {way.value} gives the {wanted}, and only it.",
    )


def assignment_of_translation(translation_id: str) -> str:
    """The assignment a translation id belongs to (`translation_id_for`)."""
    return translation_id.rsplit("-t", 1)[0]


def translator_contact_aad(translator_id: str) -> str:
    """What a translator's work address, sealed at rest in the directory, is bound to."""
    return f"review:translator-contact:{translator_id}"


def may_read_translation(
    principal: Principal, way: TranslationWay, state: TranslationState, specialist: str
) -> bool:
    """Whether `principal` reads a translation as its specialist: the translation into their
    language, once done (its translator and coordinators: `check_translation_access`)."""
    return (
        principal.role == "reviewer"
        and principal.sub == specialist
        and way is TranslationWay.TO_SPECIALIST
        and state is TranslationState.DONE
    )
