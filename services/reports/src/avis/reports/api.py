"""HTTP routes of the reports service (thin: parse, authorise, call service, shape).

Any authenticated caller may ask; whether they may read a case's report is the service's
decision, and a report they may not read is the same 404 as one that does not exist.
"""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response

from avis.reports import fhir
from avis.reports.models import (
    FHIR_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    MAX_VERSION,
    PDF_MEDIA_TYPE,
    VERSION_CURSOR_PATTERN,
    Report,
    ReportVersionPage,
)
from avis.reports.rules import choose_media_type
from avis.reports.service import ReportsService, Served, physician_report
from avis.shared.access_log import FHIR_JSON, AccessLog, Reason, TrailCursor, fhir_response
from avis.shared.pages import Limit, cursor_param
from avis.shared.problems import Problem, problem_responses
from avis.shared.security import Principal, authenticated, require_roles
from avis.shared.text import UUID_PATTERN

router = APIRouter(
    prefix="/v1", tags=["reports"], generate_unique_id_function=lambda route: route.name
)


async def reports(request: Request) -> ReportsService:
    """The app's reports service (set by the app factory)."""
    service = getattr(request.app.state, "reports", None)
    if not isinstance(service, ReportsService):
        raise RuntimeError("app.state.reports is not set; the app factory must set it")
    return service


Service = Annotated[ReportsService, Depends(reports)]
Caller = Annotated[Principal, Depends(authenticated)]
Coordinator = Annotated[Principal, Depends(require_roles("coordinator"))]
# Case ids are UUIDs (intake makes them); report ids too (derived from the case id).
CaseId = Annotated[str, Path(pattern=UUID_PATTERN, description="The case id.")]
ReportId = Annotated[str, Path(pattern=UUID_PATTERN, description="The report id.")]
Version = Annotated[
    int | None,
    Query(ge=1, le=MAX_VERSION, description="A version number; the latest when left out."),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        max_length=1024,
        description="ETags of PDFs the client holds: 304 when the PDF is one of them.",
    ),
]

NEGOTIATION = (
    "The representation follows `Accept`: `application/json` (the default, also for `*/*`), "
    "`application/pdf` (the printable report; `ETag`, `If-None-Match` answers 304) or "
    "`application/fhir+json` (an HL7 FHIR **R4B** `document` Bundle: the Composition first, "
    "one section per part of the report, then the Patient, Practitioner and PractitionerRole "
    "it references). Any other `Accept` gets 406."
)
_HEADERS = {
    "ETag": {"description": "PDF only: the PDF's entity tag.", "schema": {"type": "string"}},
    "Vary": {"description": "Accept", "schema": {"type": "string"}},
}
REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report version, in the representation asked for",
        "headers": _HEADERS,
        "content": {
            JSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Report"}},
            PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            FHIR_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "description": "A FHIR R4B Bundle of type `document`.",
                    "required": ["resourceType", "type", "identifier", "timestamp", "entry"],
                    "properties": {
                        "resourceType": {"const": "Bundle"},
                        "type": {"const": "document"},
                    },
                }
            },
        },
    },
    304: {"description": "The client's PDF is current (If-None-Match)", "headers": _HEADERS},
    **problem_responses(401, 404, 406, 410, 422, 428, 503),
}


def _etags(header: str | None) -> list[str]:
    """The entity tags of an If-None-Match header (weak ones compared as strong: RFC 9110)."""
    if not header:
        return []
    return [tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()]


async def _represent(
    service: ReportsService, served: Served, request: Request, if_none_match: str | None
) -> Response:
    media_type = choose_media_type(request.headers.get("accept"))
    # never kept by a cache: a report is health data (revalidation goes by ETag all the same)
    headers = {"Vary": "Accept", "Cache-Control": "no-store"}
    if media_type == PDF_MEDIA_TYPE:
        pdf = await service.pdf(served=served, if_none_match=_etags(if_none_match))
        headers["ETag"] = pdf.etag
        if pdf.content is None:
            return Response(status_code=304, headers=headers)
        headers["Content-Disposition"] = f'inline; filename="{pdf.filename}"'
        return Response(pdf.content, media_type=PDF_MEDIA_TYPE, headers=headers)
    if media_type == FHIR_MEDIA_TYPE:
        body = fhir.document(served.report)
        return Response(_json(body), media_type=FHIR_MEDIA_TYPE, headers=headers)
    if media_type == JSON_MEDIA_TYPE:
        return Response(
            served.report.model_dump_json(), media_type=JSON_MEDIA_TYPE, headers=headers
        )
    raise Problem(
        406,
        "not-acceptable",
        "Not Acceptable",
        f"A report is served as {JSON_MEDIA_TYPE}, {PDF_MEDIA_TYPE} or {FHIR_MEDIA_TYPE}.",
    )


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@router.get(
    "/reports/{report_id}",
    summary="A report version: JSON, PDF or FHIR R4B",
    description=NEGOTIATION,
    response_model=Report,
    responses=REPORT_RESPONSES,
)
async def get_report(
    report_id: ReportId,
    request: Request,
    principal: Caller,
    service: Service,
    version: Version = None,
    if_none_match: IfNoneMatch = None,
    reason: Reason = None,
) -> Response:
    """The latest version of a report, or the one asked for."""
    served = await service.report(
        principal=principal, report_id=report_id, version=version, reason=reason
    )
    return await _represent(service, served, request, if_none_match)


PHYSICIAN_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The latest report version: a PDF, or its FHIR R4B document when "
        "`Accept` asks for `application/fhir+json`",
        "content": {
            PDF_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            FHIR_MEDIA_TYPE: {"schema": {"type": "object"}},
        },
    },
    **problem_responses(404, 410, 422, 503),
}
LinkSecret = Annotated[
    str,
    Path(
        min_length=16,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The secret of the link in the physician's email.",
    ),
]


@router.get(
    "/cases/{case_id}/report/physician/{secret}",
    summary="The latest report of a case, for the treating physician its email went to",
    description="Opens with the secret of the link in the physician's email only (no token: "
    "the physician has no account). The whole report, as a PDF; the same 404 for a wrong "
    "secret, a case whose patient did not consent to share it with the physician, or no report.",
    response_class=Response,
    responses=PHYSICIAN_RESPONSES,
)
async def get_physician_report(
    case_id: CaseId, secret: LinkSecret, request: Request, service: Service
) -> Response:
    """The latest version of the case's report, for its treating physician (or the FHIR
    document of it, for their institution's endpoint)."""
    served = await physician_report(service, case_id=case_id, secret=secret)
    # the link's secret goes nowhere else
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    if choose_media_type(request.headers.get("accept")) == FHIR_MEDIA_TYPE:
        body = _json(fhir.document(served.report))
        return Response(body, media_type=FHIR_MEDIA_TYPE, headers=headers)
    pdf = await service.pdf(served=served)
    headers["Content-Disposition"] = f'inline; filename="{pdf.filename}"'
    headers["ETag"] = pdf.etag
    return Response(pdf.content, media_type=PDF_MEDIA_TYPE, headers=headers)


@router.get(
    "/cases/{case_id}/report",
    summary="The latest report of a case: JSON, PDF or FHIR R4B",
    description=NEGOTIATION,
    response_model=Report,
    responses=REPORT_RESPONSES,
)
async def get_case_report(
    case_id: CaseId,
    request: Request,
    principal: Caller,
    service: Service,
    if_none_match: IfNoneMatch = None,
    reason: Reason = None,
) -> Response:
    """The latest version of the case's report."""
    served = await service.report(principal=principal, case_id=case_id, reason=reason)
    return await _represent(service, served, request, if_none_match)


@router.get(
    "/cases/{case_id}/reports",
    summary="The versions of a case's report",
    response_model=ReportVersionPage,
    responses=problem_responses(401, 404, 410, 422, 503),
)
async def list_case_reports(
    case_id: CaseId,
    principal: Caller,
    service: Service,
    limit: Limit = 20,
    cursor: Annotated[
        str | None,
        cursor_param(VERSION_CURSOR_PATTERN, "`next_cursor` of the previous page."),
    ] = None,
) -> ReportVersionPage:
    """Every version issued, newest first (a correction of the opinion is a new version)."""
    return await service.versions(
        principal=principal,
        case_id=case_id,
        cursor=None if cursor is None else int(cursor),
        limit=limit,
    )


@router.get(
    "/cases/{case_id}/access-log",
    summary="Who read the case's report",
    response_model=AccessLog,
    responses=problem_responses(401, 404, 422, 503),
)
async def get_access_log(
    case_id: CaseId,
    principal: Caller,
    service: Service,
    limit: Limit = 20,
    cursor: TrailCursor = None,
) -> AccessLog:
    """Every read of the case's report by a person, and every refusal, oldest first, in plain
    words: for the case's patient and coordinators (intake keeps the trail of the case itself
    and its records, at the same path)."""
    return await service.access_log(
        principal=principal,
        case_id=case_id,
        cursor=None if cursor is None else int(cursor),
        limit=limit,
    )


@router.get(
    "/cases/{case_id}/access-log/fhir",
    summary="Who read the case's report, as FHIR AuditEvents",
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
    """The report's access trail for coordinators, as a FHIR R4B Bundle of `AuditEvent`s (oldest
    first; the chain's hashes in each event's entity; no stated reason), with a `next` link
    while more remain."""
    page = await service.trail(
        principal=principal,
        case_id=case_id,
        cursor=None if cursor is None else int(cursor),
        limit=limit,
    )
    return fhir_response(page, request, limit)
