"""HTTP routes of the intake service (thin: parse, authorise, call service, shape).

Role checks happen here (`require_roles`: a role that may never do something gets 403); which
case a caller may touch is the service's decision, and a case that is not the caller's is a
404, exactly like one that does not exist.
"""

import re
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse

from avis.intake.erasure import Erasures
from avis.intake.models import (
    DOCUMENT_ID_PATTERN,
    CaseCreate,
    CasePage,
    CaseStatus,
    CaseView,
    ClaimIn,
    ClinicalView,
    ContentType,
    DocumentKind,
    DocumentView,
    InformationAnswerIn,
    ReasonIn,
    SubmitIn,
)
from avis.intake.service import IntakeService, Reported, Upload
from avis.shared.access_log import FHIR_JSON, AccessLog, Reason, TrailCursor, fhir_response
from avis.shared.pages import Limit, cursor_param
from avis.shared.problems import problem_responses
from avis.shared.security import Principal, authenticated, require_roles
from avis.shared.text import ID_PATTERN, IDEMPOTENCY_KEY_PATTERN, UUID_PATTERN

router = APIRouter(
    prefix="/v1", tags=["cases"], generate_unique_id_function=lambda route: route.name
)


async def intake(request: Request) -> IntakeService:
    """The app's intake service (set by the app factory)."""
    service = getattr(request.app.state, "intake", None)
    if not isinstance(service, IntakeService):
        raise RuntimeError("app.state.intake is not set; the app factory must set it")
    return service


async def erasures(request: Request) -> Erasures:
    """The app's erasures (set by the app factory)."""
    found = getattr(request.app.state, "erasures", None)
    if not isinstance(found, Erasures):
        raise RuntimeError("app.state.erasures is not set; the app factory must set it")
    return found


async def reported(request: Request) -> Reported:
    """The app's reported changes and answers (set by the app factory)."""
    found = getattr(request.app.state, "reported", None)
    if not isinstance(found, Reported):
        raise RuntimeError("app.state.reported is not set; the app factory must set it")
    return found


Service = Annotated[IntakeService, Depends(intake)]
Reporting = Annotated[Reported, Depends(reported)]
Erasing = Annotated[Erasures, Depends(erasures)]
Caller = Annotated[Principal, Depends(authenticated)]
Filer = Annotated[Principal, Depends(require_roles("patient", "partner"))]
Patient = Annotated[Principal, Depends(require_roles("patient"))]
# Who may read clinical content is the service's decision, so that its refusals (403 for a
# role that never may) go in the case's access trail.
ClinicalReader = Caller
TrailReader = Annotated[Principal, Depends(require_roles("patient", "coordinator"))]
Coordinator = Annotated[Principal, Depends(require_roles("coordinator"))]
CaseId = Annotated[str, Path(pattern=UUID_PATTERN, description="The case id (a UUID).")]
RequestId = Annotated[
    str, Path(pattern=ID_PATTERN, description="The request for more information's id.")
]
DocumentId = Annotated[
    str, Path(pattern=DOCUMENT_ID_PATTERN, description="The record's document id, in hex.")
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retrying with the same key returns the case the first attempt created.",
    ),
]

Position = Annotated[
    str | None,
    cursor_param(r"^[0-9]{1,12}$", "`next_cursor` of the previous page (a position in the list)."),
]
DOCUMENTS_PATH = "/cases/{case_id}/documents"
_LOCATION = {"Location": {"description": "The case's URL", "schema": {"type": "string"}}}


@router.post(
    "/cases",
    status_code=201,
    summary="Draft a case",
    response_model=CaseView,
    responses={
        201: {"description": "The draft", "headers": _LOCATION},
        200: {
            "model": CaseView,
            "description": "The case an earlier request with this Idempotency-Key created",
            "headers": _LOCATION,
        },
        **problem_responses(400, 401, 403, 422),
    },
)
async def create_case(
    body: CaseCreate,
    principal: Filer,
    service: Service,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> CaseView:
    """Create a draft for the patient (or, for a partner, on the patient's behalf)."""
    case, created = await service.create_case(
        principal=principal, body=body, idempotency_key=idempotency_key
    )
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/cases/{case.case_id}"
    return case


@router.get(
    "/cases",
    summary="List the cases the caller may see",
    response_model=CasePage,
    responses=problem_responses(401, 422),
)
async def list_cases(
    principal: Caller,
    service: Service,
    status: Annotated[CaseStatus | None, Query(description="Only cases in this status.")] = None,
    limit: Limit = 20,
    cursor: Position = None,
) -> CasePage:
    """Patients see their cases, partners the cases they filed, reviewers the cases assigned to
    them, coordinators and services all; newest first."""
    return await service.list_cases(principal=principal, status=status, cursor=cursor, limit=limit)


@router.get(
    "/cases/{case_id}",
    summary="A case's status and timeline",
    response_model=CaseView,
    responses=problem_responses(401, 404, 422),
)
async def get_case(case_id: CaseId, principal: Caller, service: Service) -> CaseView:
    """Status, timeline and records' metadata (no identity, no clinical text)."""
    return await service.get_case(principal=principal, case_id=case_id)


@router.get(
    "/cases/{case_id}/clinical",
    summary="A case's clinical content",
    response_model=ClinicalView,
    responses=problem_responses(401, 403, 404, 410, 422, 428),
)
async def get_clinical(
    case_id: CaseId, principal: ClinicalReader, service: Service, reason: Reason = None
) -> ClinicalView:
    """The clinical summary and records, for the patient, the filing partner (with the patient's
    consent to share), the reviewer currently assigned and coordinators (giving a reason);
    reviewers do not get the patient's identity."""
    return await service.get_clinical(principal=principal, case_id=case_id, reason=reason)


@router.get(
    "/cases/{case_id}/access-log",
    summary="Who looked at a case",
    response_model=AccessLog,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_access_log(
    case_id: CaseId,
    principal: TrailReader,
    service: Service,
    limit: Limit = 50,
    cursor: TrailCursor = None,
) -> AccessLog:
    """Every read and write of the case's health data, refusals included, oldest first, in plain
    words: for the case's patient and coordinators (a coordinator's stated reason is shown to
    coordinators only)."""
    return await service.access_log(
        principal=principal, case_id=case_id, cursor=cursor, limit=limit
    )


@router.get(
    "/cases/{case_id}/access-log/fhir",
    summary="Who looked at a case, as FHIR AuditEvents",
    response_class=Response,
    responses={
        200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        **problem_responses(401, 403, 404, 422),
    },
)
async def export_access_log(
    case_id: CaseId,
    principal: Coordinator,
    service: Service,
    request: Request,
    limit: Limit = 50,
    cursor: TrailCursor = None,
) -> Response:
    """The case's access trail for coordinators, as a FHIR R4B Bundle of `AuditEvent`s (oldest
    first; the chain's hashes in each event's entity; no stated reason, which may hold health
    data), with a `next` link while more remain."""
    page = await service.trail(principal=principal, case_id=case_id, cursor=cursor, limit=limit)
    return fhir_response(page, request, limit)


@router.post(
    DOCUMENTS_PATH,
    status_code=201,
    summary="Upload a record to a draft",
    response_model=DocumentView,
    responses={
        201: {"description": "The record was stored"},
        200: {"model": DocumentView, "description": "The case already holds this very file"},
        **problem_responses(400, 401, 403, 404, 409, 410, 415, 422),
    },
)
async def upload_document(
    case_id: CaseId,
    principal: Filer,
    service: Service,
    response: Response,
    file: Annotated[
        UploadFile,
        File(
            description="The record: PDF, JPEG, PNG, DICOM or plain text (UTF-8), recognised "
            "from its bytes; its part's Content-Type, if given, must agree. Size limit: "
            "AVIS_INTAKE_MAX_DOCUMENT_BYTES (20 MiB by default)."
        ),
    ],
    kind: Annotated[DocumentKind, Form(description="What the record is.")],
) -> DocumentView:
    """Store a record on a draft case; the same file twice is one record."""
    data = await file.read()
    upload = Upload(kind=kind, filename=file.filename, declared=file.content_type, data=data)
    meta, created = await service.add_document(principal=principal, case_id=case_id, upload=upload)
    response.status_code = 201 if created else 200
    return meta


@router.get(
    "/cases/{case_id}/documents/{document_id}",
    summary="Download a record",
    response_class=Response,
    responses={
        200: {
            "description": "The record's bytes",
            "content": {
                t.value: {"schema": {"type": "string", "format": "binary"}} for t in ContentType
            },
        },
        **problem_responses(401, 403, 404, 410, 422, 428),
    },
)
async def download_document(
    case_id: CaseId,
    document_id: DocumentId,
    principal: ClinicalReader,
    service: Service,
    reason: Reason = None,
) -> Response:
    """The record, for whoever may read the case's clinical content (coordinators give a
    reason)."""
    download = await service.open_document(
        principal=principal, case_id=case_id, document_id=document_id, reason=reason
    )
    meta = download.meta
    return StreamingResponse(
        download.chunks,
        media_type=meta.content_type,
        headers={
            "Content-Length": str(meta.size),
            "Content-Disposition": content_disposition(meta.filename, document_id),
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.delete(
    "/cases/{case_id}/documents/{document_id}",
    status_code=204,
    summary="Remove a record from a draft",
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 410, 422),
)
async def delete_document(
    case_id: CaseId, document_id: DocumentId, principal: Filer, service: Service
) -> Response:
    """Remove a record while the case is a draft."""
    await service.delete_document(principal=principal, case_id=case_id, document_id=document_id)
    return Response(status_code=204)


@router.post(
    "/cases/{case_id}/submit",
    summary="Submit a draft with the patient's consent",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 409, 410, 422),
)
async def submit_case(
    case_id: CaseId, body: SubmitIn, principal: Filer, service: Service
) -> CaseView:
    """Needs consent covering `review` and at least one record; submitting again is harmless."""
    return await service.submit(principal=principal, case_id=case_id, body=body)


@router.post(
    "/cases/{case_id}/withdraw",
    summary="Withdraw a case before its report",
    response_model=CaseView,
    responses=problem_responses(401, 403, 404, 409, 410, 422),
)
async def withdraw_case(case_id: CaseId, principal: Filer, service: Service) -> CaseView:
    """Withdraw the case; once the report is ready it can no longer be withdrawn (409)."""
    return await service.withdraw(principal=principal, case_id=case_id)


@router.post(
    "/cases/{case_id}/information-requests/{request_id}/answer",
    summary="Answer the specialist's request for more information",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 409, 410, 422),
)
async def answer_information_request(
    case_id: CaseId,
    request_id: RequestId,
    body: InformationAnswerIn,
    principal: Filer,
    reported: Reporting,
) -> CaseView:
    """The patient (or the filing partner) answers an open request with a text, after adding
    any record it asks for; the review goes on. 409 once answered or expired."""
    return await reported.answer(
        principal=principal, case_id=case_id, request_id=request_id, body=body
    )


@router.post(
    "/cases/{case_id}/erasure-request",
    summary="Ask for the erasure of a case's data",
    response_model=CaseView,
    responses=problem_responses(401, 403, 404, 422),
)
async def request_erasure(case_id: CaseId, principal: Filer, erasures: Erasing) -> CaseView:
    """The case's patient asks for its data to be erased: its key is destroyed at once, so
    nothing of it opens anywhere any more, unless a legal hold defers it (`legal_hold`), until
    the hold is lifted. Asking again changes nothing."""
    return await erasures.request(principal=principal, case_id=case_id)


@router.post(
    "/cases/{case_id}/erasure",
    summary="Erase a case's data (coordinators)",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def erase_case(
    case_id: CaseId, body: ReasonIn, principal: Coordinator, erasures: Erasing
) -> CaseView:
    """A coordinator erases a case, with the reason, kept in its trail; 409 while a legal hold
    stands. Erasing again changes nothing."""
    return await erasures.erase(principal=principal, case_id=case_id, reason=body.reason)


@router.put(
    "/cases/{case_id}/legal-hold",
    summary="Put a case under a legal hold (coordinators)",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 410, 422),
)
async def hold_case(
    case_id: CaseId, body: ReasonIn, principal: Coordinator, erasures: Erasing
) -> CaseView:
    """A legal hold defers the case's erasure while it stands (a duty to keep the file)."""
    return await erasures.hold(principal=principal, case_id=case_id, reason=body.reason, on=True)


@router.post(
    "/cases/{case_id}/legal-hold/release",
    summary="Lift a case's legal hold (coordinators)",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 410, 422),
)
async def release_case(
    case_id: CaseId, body: ReasonIn, principal: Coordinator, erasures: Erasing
) -> CaseView:
    """Lift the hold, with the reason; an erasure the patient asked for meanwhile is carried out."""
    return await erasures.hold(principal=principal, case_id=case_id, reason=body.reason, on=False)


@router.post(
    "/cases/{case_id}/claim",
    summary="Claim a case a partner filed for you",
    response_model=CaseView,
    responses=problem_responses(400, 401, 403, 404, 409, 422),
)
async def claim_case(
    case_id: CaseId, body: ClaimIn, principal: Patient, service: Service
) -> CaseView:
    """The patient named in a partner's case claims it with the one-time secret of the link in
    their first email; it is then theirs, once (409 after). A wrong secret is a 404."""
    return await service.claim(principal=principal, case_id=case_id, secret=body.secret)


def content_disposition(filename: str | None, document_id: str) -> str:
    """An attachment header: an ASCII fallback name, and the original name RFC 5987-encoded."""
    fallback = f"record-{document_id[:12]}"
    if not filename:
        return f'attachment; filename="{fallback}"'
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", filename)[:100] or fallback
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


# An upload's body is its record plus the multipart framing and the other fields.
MULTIPART_SLACK = 64 * 1024
