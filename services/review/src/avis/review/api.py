"""HTTP routes of the review service (thin: parse, authorise, call service, shape)."""

from typing import Annotated, cast

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi import status as http

from avis.review.followups import FollowUps
from avis.review.models import (
    AssignBody,
    Assignment,
    AssignmentPage,
    AssignmentStatus,
    DeclineBody,
    FollowUp,
    FollowUpBody,
    FollowUpPage,
    FollowUpState,
    InformationRequestBody,
    InformationRequestPage,
    Opinion,
    OpinionVersion,
    QueuePage,
    RequestState,
    Reviewer,
    ReviewerIn,
    ReviewerPage,
    ReviewerPatch,
    SecondReading,
    SecondReadingBody,
    SecondReadingPage,
    SecondReadingRules,
    SecondReadingRulesBody,
    Translation,
    TranslationBody,
    TranslationPage,
    Translator,
    TranslatorIn,
    TranslatorPage,
)
from avis.review.service import DirectoryService, ReviewService
from avis.shared.access_log import FHIR_JSON, AccessLog, Reason, TrailCursor, fhir_response
from avis.shared.events import Language, Specialty, Urgency
from avis.shared.pages import Cursor, Limit, cursor_param
from avis.shared.problems import problem_responses
from avis.shared.security import Principal, authenticated, require_roles
from avis.shared.text import CODE_PATTERN, ID_PATTERN, IDEMPOTENCY_KEY_PATTERN

router = APIRouter(prefix="/v1")


async def _review(request: Request) -> ReviewService:
    return cast(ReviewService, request.app.state.review)


async def _follow_ups(request: Request) -> FollowUps:
    return cast(FollowUps, request.app.state.follow_ups)


async def _directory(request: Request) -> DirectoryService:
    return cast(DirectoryService, request.app.state.directory)


Review = Annotated[ReviewService, Depends(_review)]
Directory = Annotated[DirectoryService, Depends(_directory)]
FollowUpsService = Annotated[FollowUps, Depends(_follow_ups)]
Asker = Annotated[Principal, Depends(require_roles("patient", "partner"))]
Coordinator = Annotated[Principal, Depends(require_roles("coordinator"))]
ReviewerRole = Annotated[Principal, Depends(require_roles("reviewer"))]
Staff = Annotated[Principal, Depends(require_roles("reviewer", "coordinator"))]
# Whether a caller may read a case's access trail is the service's decision (a patient may).
Caller = Annotated[Principal, Depends(authenticated)]

ReviewerIdPath = Annotated[str, Path(pattern=CODE_PATTERN, description="The reviewer's id.")]
AssignmentIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The assignment's id.")]
CaseIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The case's id.")]
FollowUpIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The follow-up's id.")]
# A list sorted by a time and an id (`rules.sort_key`) goes on after such a key.
SORT_KEY_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\|[A-Za-z0-9._:-]{1,200}$"

READ = problem_responses(401, 403, 422, 503)
READ_ONE = problem_responses(401, 403, 404, 422, 503)
ACT = problem_responses(401, 403, 404, 409, 422, 503)
WRITE = problem_responses(400, 401, 403, 404, 409, 422, 503)  # 400: a body that is not JSON


# --- reviewer directory -----------------------------------------------------------------------


@router.post(
    "/reviewers",
    status_code=http.HTTP_201_CREATED,
    summary="Add a reviewer to the directory (coordinators)",
    tags=["reviewers"],
    responses={
        200: {"model": Reviewer, "description": "The same reviewer already existed"},
        **problem_responses(400, 401, 403, 409, 422, 503),
    },
)
async def create_reviewer(
    body: ReviewerIn, response: Response, directory: Directory, _: Coordinator
) -> Reviewer:
    """Add a reviewer; sending the same reviewer again changes nothing."""
    reviewer, created = await directory.create_reviewer(body=body)
    if not created:
        response.status_code = http.HTTP_200_OK
    return reviewer


@router.get(
    "/reviewers",
    summary="List the reviewer directory (coordinators)",
    tags=["reviewers"],
    responses=READ,
)
async def list_reviewers(
    directory: Directory,
    _: Coordinator,
    specialty: Specialty | None = None,
    language: Language | None = None,
    active: bool | None = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> ReviewerPage:
    """Reviewers by id, filtered by specialty, language and active flag."""
    return await directory.reviewers(
        specialty=specialty, language=language, active=active, cursor=cursor, limit=limit
    )


@router.get(
    "/reviewers/{reviewer_id}",
    summary="One reviewer (coordinators, or the reviewer themself)",
    tags=["reviewers"],
    responses=READ_ONE,
)
async def get_reviewer(reviewer_id: ReviewerIdPath, directory: Directory, who: Staff) -> Reviewer:
    """One reviewer and their current load."""
    return await directory.reviewer(principal=who, reviewer_id=reviewer_id)


@router.patch(
    "/reviewers/{reviewer_id}",
    summary="Change a reviewer (coordinators)",
    tags=["reviewers"],
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def patch_reviewer(
    reviewer_id: ReviewerIdPath, body: ReviewerPatch, directory: Directory, _: Coordinator
) -> Reviewer:
    """Change the fields sent; a reviewer with room again is offered the queue."""
    return await directory.update_reviewer(reviewer_id=reviewer_id, patch=body)


# --- queue ------------------------------------------------------------------------------------


@router.get(
    "/queue",
    summary="Cases nobody fits yet (coordinators)",
    tags=["queue"],
    responses=READ,
)
async def list_queue(
    review: Review,
    _: Coordinator,
    specialty: Specialty | None = None,
    urgency: Urgency | None = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> QueuePage:
    """Waiting cases, urgent first, then oldest, with the last matching attempt."""
    return await review.queue(specialty=specialty, urgency=urgency, cursor=cursor, limit=limit)


@router.post(
    "/queue/{case_id}/assign",
    status_code=http.HTTP_201_CREATED,
    summary="Assign a waiting case by hand (coordinators)",
    tags=["queue"],
    responses=WRITE,
)
async def assign_from_queue(
    case_id: CaseIdPath, body: AssignBody, review: Review, who: Coordinator
) -> Assignment:
    """Every matching rule holds except capacity, which a coordinator may override."""
    return await review.assign_from_queue(principal=who, case_id=case_id, body=body)


# --- assignments ------------------------------------------------------------------------------


@router.get(
    "/assignments",
    summary="Assignments: a reviewer's own, or all for coordinators",
    tags=["assignments"],
    responses=READ,
)
async def list_assignments(
    review: Review,
    who: Staff,
    status: Annotated[
        list[AssignmentStatus] | None,
        Query(description="In any of these statuses (repeat the parameter for more than one)."),
    ] = None,
    overdue: Annotated[
        bool | None, Query(description="true: past due and not answered; false: the others.")
    ] = None,
    reviewer_id: Annotated[str | None, Query(pattern=CODE_PATTERN)] = None,
    case_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    brief: Annotated[
        bool,
        Query(
            description="true: rows for a list, without the matcher's rationale and without "
            "decline reasons (so no read of a reason is recorded in the cases' trails)."
        ),
    ] = False,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> AssignmentPage:
    """Soonest due first."""
    return await review.assignments(
        principal=who,
        statuses=frozenset(status or ()),
        overdue=overdue,
        reviewer_id=reviewer_id,
        case_id=case_id,
        brief=brief,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/assignments/{assignment_id}",
    summary="One assignment",
    tags=["assignments"],
    responses=READ_ONE,
)
async def get_assignment(assignment_id: AssignmentIdPath, review: Review, who: Staff) -> Assignment:
    """A reviewer sees their own; coordinators see all, with the matching rationale."""
    return await review.assignment(principal=who, assignment_id=assignment_id)


@router.post(
    "/assignments/{assignment_id}/accept",
    summary="Accept an assignment (its reviewer)",
    tags=["assignments"],
    responses=ACT,
)
async def accept(assignment_id: AssignmentIdPath, review: Review, who: ReviewerRole) -> Assignment:
    """Accepting twice changes nothing."""
    return await review.accept(principal=who, assignment_id=assignment_id)


@router.post(
    "/assignments/{assignment_id}/decline",
    summary="Decline an assignment (its reviewer)",
    tags=["assignments"],
    responses=WRITE,
)
async def decline(
    assignment_id: AssignmentIdPath, body: DeclineBody, review: Review, who: ReviewerRole
) -> Assignment:
    """The reason code is published; the free-text reason stays in review."""
    return await review.decline(principal=who, assignment_id=assignment_id, body=body)


@router.post(
    "/assignments/{assignment_id}/information-requests",
    status_code=http.HTTP_201_CREATED,
    summary="Ask the patient for more information (the accepted reviewer)",
    tags=["information"],
    responses=WRITE,
)
async def ask_information(
    assignment_id: AssignmentIdPath,
    body: InformationRequestBody,
    review: Review,
    who: ReviewerRole,
) -> Assignment:
    """Ask for a missing record or a precision: the SLA clock stands until the patient (or the
    filing partner) answers through intake, or the request expires; the due date then moves by
    the pause. The question is kept sealed and travels sealed; one request open at a time."""
    return await review.requests.ask(principal=who, assignment_id=assignment_id, body=body)


@router.get(
    "/information-requests",
    summary="Requests for more information of the open reviews (coordinators)",
    tags=["information"],
    responses=READ,
)
async def list_information_requests(
    review: Review,
    _: Coordinator,
    state: RequestState | None = None,
    cursor: Annotated[str | None, cursor_param(SORT_KEY_PATTERN)] = None,
    limit: Limit = 20,
) -> InformationRequestPage:
    """Open, answered or expired requests of the reviews still open, soonest to expire first:
    an expired one went unanswered and the review went on without it."""
    return await review.requests.listed(state=state, cursor=cursor, limit=limit)


@router.post(
    "/cases/{case_id}/follow-ups",
    status_code=http.HTTP_201_CREATED,
    summary="Ask a follow-up question about the report (the patient or the filing partner)",
    tags=["follow-ups"],
    responses={
        200: {
            "model": FollowUp,
            "description": "The question an earlier request with this Idempotency-Key asked",
        },
        **WRITE,
    },
)
async def ask_follow_up(
    case_id: CaseIdPath,
    body: FollowUpBody,
    response: Response,
    follow_ups: FollowUpsService,
    who: Asker,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="Retrying with the same key returns the question the first attempt "
            "asked (200), not a second one; with another text, a 422.",
        ),
    ] = None,
) -> FollowUp:
    """Up to three questions within the period after the report (a setting, 30 days by
    default), each to the specialist who wrote the opinion, with a due date of its own; a
    fourth, or one after the period, is a 409 saying which. The question is kept sealed and
    travels sealed; the answer comes as a new report version with an addendum."""
    follow_up, created = await follow_ups.ask(
        principal=who, case_id=case_id, body=body, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = http.HTTP_200_OK
    return follow_up


@router.get(
    "/follow-ups",
    summary="Follow-up questions waiting (a specialist's own; all for coordinators)",
    tags=["follow-ups"],
    responses=READ,
)
async def list_follow_ups(
    follow_ups: FollowUpsService,
    who: Staff,
    state: FollowUpState | None = None,
    cursor: Annotated[str | None, cursor_param(SORT_KEY_PATTERN)] = None,
    limit: Limit = 20,
) -> FollowUpPage:
    """The open follow-up questions, soonest due first, without their texts."""
    return await follow_ups.listed(principal=who, state=state, cursor=cursor, limit=limit)


@router.get(
    "/follow-ups/{follow_up_id}",
    summary="One follow-up question, with its answer (its specialist, patient or partner)",
    tags=["follow-ups"],
    responses=READ_ONE,
)
async def get_follow_up(
    follow_up_id: FollowUpIdPath, follow_ups: FollowUpsService, who: Caller
) -> FollowUp:
    """The question and the answer in clear: a read recorded in the case's access trail."""
    return await follow_ups.read(principal=who, follow_up_id=follow_up_id)


@router.post(
    "/follow-ups/{follow_up_id}/answer",
    summary="Answer a follow-up question (the specialist who wrote the opinion)",
    tags=["follow-ups"],
    responses=WRITE,
)
async def answer_follow_up(
    follow_up_id: FollowUpIdPath,
    body: FollowUpBody,
    follow_ups: FollowUpsService,
    who: ReviewerRole,
) -> FollowUp:
    """Once: the answer travels sealed to reports, which issues a new report version with it as
    an addendum (the earlier versions stay served); a second answer is a 409."""
    return await follow_ups.answer(principal=who, follow_up_id=follow_up_id, body=body)


@router.post(
    "/assignments/{assignment_id}/opinion",
    status_code=http.HTTP_201_CREATED,
    summary="Write the structured opinion (the accepted reviewer)",
    tags=["opinion"],
    responses={
        200: {"model": OpinionVersion, "description": "The same opinion was already recorded"},
        **WRITE,
    },
)
async def post_opinion(
    assignment_id: AssignmentIdPath,
    body: Opinion,
    response: Response,
    review: Review,
    who: ReviewerRole,
    second_reading: Annotated[
        bool,
        Query(description="Ask a second specialist to read the opinion before it is released."),
    ] = False,
) -> OpinionVersion:
    """Version 1 of the opinion; a different one later is a correction (PUT). It goes to a
    second specialist first when the coordinators' rules say so for the case's specialty or
    urgency, or when asked (`second_reading`)."""
    version, created = await review.post_opinion(
        principal=who, assignment_id=assignment_id, opinion=body, second=second_reading
    )
    if not created:
        response.status_code = http.HTTP_200_OK
    return version


@router.put(
    "/assignments/{assignment_id}/opinion",
    summary="Correct the opinion: a new version (the reviewer who wrote it)",
    tags=["opinion"],
    responses=WRITE,
)
async def correct_opinion(
    assignment_id: AssignmentIdPath, body: Opinion, review: Review, who: ReviewerRole
) -> OpinionVersion:
    """A new version, unless it repeats the latest one."""
    return await review.correct_opinion(principal=who, assignment_id=assignment_id, opinion=body)


@router.get(
    "/assignments/{assignment_id}/opinion",
    summary="The opinion of an assignment",
    tags=["opinion"],
    responses=problem_responses(401, 403, 404, 422, 428, 503),
)
async def get_opinion(
    assignment_id: AssignmentIdPath,
    review: Review,
    who: Staff,
    version: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    reason: Reason = None,
) -> OpinionVersion:
    """The latest version, or the one asked for. A coordinator says why (X-Avis-Reason); every
    read is an entry of the case's access trail."""
    return await review.opinion(
        principal=who, assignment_id=assignment_id, version=version, reason=reason
    )


# --- the second reading -------------------------------------------------------------------------


@router.get(
    "/second-reading-rules",
    summary="The specialties and urgencies whose opinions are read twice (coordinators)",
    tags=["second reading"],
    responses=READ,
)
async def get_second_reading_rules(review: Review, _: Coordinator) -> SecondReadingRules:
    """The rules in force: an opinion of these specialties or urgencies goes to a second
    specialist before it is released."""
    return await review.second.rules()


@router.put(
    "/second-reading-rules",
    summary="Set the specialties and urgencies whose opinions are read twice (coordinators)",
    tags=["second reading"],
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def put_second_reading_rules(
    body: SecondReadingRulesBody, review: Review, who: Coordinator
) -> SecondReadingRules:
    """Replace the rules; they apply to the opinions submitted from now on."""
    return await review.second.set_rules(principal=who, body=body)


@router.get(
    "/second-readings",
    summary="The second readings still open (a reviewer their own; coordinators anyone's)",
    tags=["second reading"],
    responses=READ,
)
async def list_second_readings(
    review: Review,
    who: Staff,
    reviewer_id: Annotated[str | None, Query(pattern=CODE_PATTERN)] = None,
    cursor: Annotated[str | None, cursor_param(ID_PATTERN)] = None,
    limit: Limit = 20,
) -> SecondReadingPage:
    """Readings not agreed yet, by assignment id; never the opinion or the comments' texts."""
    return await review.second.listed(
        principal=who, reviewer_id=reviewer_id, cursor=cursor, limit=limit
    )


@router.get(
    "/second-readings/{assignment_id}",
    summary="The second reading of an assignment's opinion, with the version to read",
    tags=["second reading"],
    responses=problem_responses(401, 403, 404, 422, 428, 503),
)
async def get_second_reading(
    assignment_id: AssignmentIdPath, review: Review, who: Staff, reason: Reason = None
) -> SecondReading:
    """For its two specialists, or a coordinator who says why (X-Avis-Reason); every read is an
    entry of the case's access trail."""
    return await review.second.reading(principal=who, assignment_id=assignment_id, reason=reason)


@router.post(
    "/second-readings/{assignment_id}/agreement",
    summary="Agree with the opinion: it is released naming both specialists (the second reader)",
    tags=["second reading"],
    responses=ACT,
)
async def agree_second_reading(
    assignment_id: AssignmentIdPath, review: Review, who: ReviewerRole
) -> SecondReading:
    """The opinion goes to reports; agreeing again changes nothing."""
    return await review.second.agree(principal=who, assignment_id=assignment_id)


@router.post(
    "/second-readings/{assignment_id}/comments",
    status_code=http.HTTP_201_CREATED,
    summary="Return comments the first specialist must answer (the second reader)",
    tags=["second reading"],
    responses=WRITE,
)
async def comment_second_reading(
    assignment_id: AssignmentIdPath, body: SecondReadingBody, review: Review, who: ReviewerRole
) -> SecondReading:
    """The comments are kept sealed and travel sealed; the first answers with a new version of
    the opinion (PUT on the opinion), which comes back to be read."""
    return await review.second.comment(principal=who, assignment_id=assignment_id, body=body)


# --- international review: translators and translations -----------------------------------------


TranslatorRole = Annotated[Principal, Depends(require_roles("translator"))]
Translating = Annotated[Principal, Depends(require_roles("translator", "reviewer", "coordinator"))]
TranslationIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The translation's id.")]


@router.put(
    "/translators/{translator_id}",
    summary="Add or replace a translator of the directory (coordinators)",
    tags=["translation"],
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def put_translator(
    translator_id: ReviewerIdPath, body: TranslatorIn, review: Review, _: Coordinator
) -> Translator:
    """The languages they translate between (every pair, both ways) and their capacity; the
    translations counted in their load are kept."""
    return await review.translations.put_translator(translator_id, body)


@router.get(
    "/translators",
    summary="List the translators' directory (coordinators)",
    tags=["translation"],
    responses=READ,
)
async def list_translators(
    directory: Directory,
    _: Coordinator,
    language: Language | None = None,
    cursor: Annotated[str | None, cursor_param(CODE_PATTERN)] = None,
    limit: Limit = 20,
) -> TranslatorPage:
    """Translators by id (of a language, when given): the languages they translate between,
    their capacity and their load (translations chosen for them or taken, not done yet)."""
    return await directory.translators(language=language, cursor=cursor, limit=limit)


@router.get(
    "/translations",
    summary="The open translations (a translator's own and those of their pairs; coordinators all)",
    tags=["translation"],
    responses=READ,
)
async def list_translations(
    review: Review,
    who: Annotated[Principal, Depends(require_roles("translator", "coordinator"))],
    cursor: Annotated[str | None, cursor_param(ID_PATTERN)] = None,
    limit: Limit = 20,
) -> TranslationPage:
    """Translations not done yet, by id, with their own due dates; never their texts."""
    return await review.translations.listed(principal=who, cursor=cursor, limit=limit)


@router.get(
    "/translations/{translation_id}",
    summary="One translation with its texts (its translator; the specialist once translated)",
    tags=["translation"],
    responses=problem_responses(401, 403, 404, 422, 428, 503),
)
async def get_translation(
    translation_id: TranslationIdPath, review: Review, who: Translating, reason: Reason = None
) -> Translation:
    """The source and the translation for its translator; the translation into their language
    for the specialist, once done; both for a coordinator who says why (X-Avis-Reason). Every
    read is an entry of the case's access trail."""
    return await review.translations.translation(
        principal=who, translation_id=translation_id, reason=reason
    )


@router.post(
    "/translations/{translation_id}/take",
    summary="Take a queued translation (a translator of its pair)",
    tags=["translation"],
    responses=ACT,
)
async def take_translation(
    translation_id: TranslationIdPath, review: Review, who: TranslatorRole
) -> Translation:
    """It counts in the translator's load until done; taking it again changes nothing."""
    return await review.translations.take(principal=who, translation_id=translation_id)


@router.put(
    "/translations/{translation_id}/text",
    summary="Submit the translation (the translator who took it)",
    tags=["translation"],
    responses=WRITE,
)
async def write_translation(
    translation_id: TranslationIdPath, body: TranslationBody, review: Review, who: TranslatorRole
) -> Translation:
    """The summary (to the specialist: they may then accept the case) or the opinion (to the
    patient: it is released, translated); kept sealed. The same submission again is a no-op."""
    return await review.translations.write(principal=who, translation_id=translation_id, body=body)


# --- the access trail -------------------------------------------------------------------------


@router.get(
    "/cases/{case_id}/access-log",
    summary="Who read or wrote the case's opinions and decline reasons",
    tags=["access"],
    response_model=AccessLog,
    responses=READ_ONE,
)
async def get_access_log(
    case_id: CaseIdPath,
    review: Review,
    who: Caller,
    limit: Limit = 20,
    cursor: TrailCursor = None,
) -> AccessLog:
    """Every read and write of the case's opinions and decline reasons by a person, and every
    refused read, oldest first, in plain words: for coordinators and the case's patient (intake
    and reports keep the trails of the case and of the report, at the same path)."""
    return await review.access.access_log(
        principal=who, case_id=case_id, cursor=None if cursor is None else int(cursor), limit=limit
    )


@router.get(
    "/cases/{case_id}/access-log/fhir",
    summary="The case's access trail in review, as FHIR AuditEvents (coordinators)",
    tags=["access"],
    response_class=Response,
    responses={
        200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        **READ_ONE,
    },
)
async def export_access_log(
    case_id: CaseIdPath,
    request: Request,
    review: Review,
    who: Coordinator,
    limit: Limit = 50,
    cursor: TrailCursor = None,
) -> Response:
    """The trail for coordinators, as a FHIR R4B Bundle of `AuditEvent`s (oldest first; the
    chain's hashes in each event's entity; no stated reason), with a `next` link while more
    remain."""
    page = await review.access.trail(
        principal=who, case_id=case_id, cursor=None if cursor is None else int(cursor), limit=limit
    )
    return fhir_response(page, request, limit)
