"""Web's pure decisions: which words a refusal gets, which language a page speaks, whether a
form's CSRF token holds, when a session has been idle too long, what a case's page offers."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from avis.shared.events import Language
from avis.web.models import ASSESSMENTS, OPINION_SECTIONS, Draft, OpinionForm

DEFAULT_LANGUAGE = Language.FR
LANGUAGES: tuple[Language, ...] = tuple(Language)

# A service's problem `type` slug -> the catalogue key of its plain-words message.
PROBLEM_MESSAGES = {
    "document-too-large": "error.document_too_large",
    "request-too-large": "error.document_too_large",
    "empty-document": "error.empty_document",
    "unsupported-document-type": "error.unsupported_document_type",
    "invalid-filename": "error.invalid_filename",
    "too-many-documents": "error.too_many_documents",
    "no-documents": "error.no_documents",
    "consent-required": "error.consent_required",
    "case-not-draft": "error.case_not_draft",
    "case-withdrawn": "error.case_withdrawn",
    "report-ready": "error.report_ready",
    "case-not-found": "error.not_found",
    "not-found": "error.not_found",
    "report-not-found": "error.report_not_ready",
    "validation": "error.validation",
    "unauthorized": "error.signed_out",
    "forbidden": "error.forbidden",
}
# When the slug is not one we know, the status still says something true.
STATUS_MESSAGES = {
    401: "error.signed_out",
    403: "error.forbidden",
    404: "error.not_found",
    409: "error.conflict",
    413: "error.document_too_large",
    415: "error.unsupported_document_type",
    422: "error.validation",
}
# Where each role's pages start (the patient's are /cases).
HOMES = {"coordinator": "/board", "partner": "/partner", "reviewer": "/review"}
UNEXPECTED = "error.unexpected"
UNAVAILABLE = "error.unavailable"

_LANGUAGE_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$"
)
_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9/_\-.]*$")


def problem_message(status: int, problem_type: str | None) -> str:
    """The catalogue key of the plain words for a service's refusal (never its raw body)."""
    slug = (problem_type or "").rstrip("/").rsplit("/", 1)[-1]
    if slug in PROBLEM_MESSAGES:
        return PROBLEM_MESSAGES[slug]
    if status in STATUS_MESSAGES:
        return STATUS_MESSAGES[status]
    return UNAVAILABLE if status in (502, 503, 504) else UNEXPECTED


def choose_language(chosen: str | None, accept_language: str | None) -> Language:
    """The person's own choice first, then the browser's preference, then French."""
    if chosen in LANGUAGES:
        return Language(chosen)
    best: tuple[float, Language] | None = None
    for position, item in enumerate((accept_language or "").split(",")[:20]):
        match = _LANGUAGE_RANGE.match(item)
        if match is None:
            continue
        try:
            quality = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        primary = match.group(1).lower()
        if primary not in LANGUAGES or quality <= 0:
            continue
        # Ties go to the first listed; the small offset keeps that order.
        ranked = quality - position * 1e-6
        if best is None or ranked > best[0]:
            best = (ranked, Language(primary))
    return best[1] if best else DEFAULT_LANGUAGE


def csrf_valid(expected: str, given: str | None) -> bool:
    """Whether a form carried this session's CSRF token (compared in constant time)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def idle_expired(last_seen: float, now: float, idle_seconds: float) -> bool:
    """Whether a session unused since `last_seen` has ended by `now`."""
    return now - last_seen >= idle_seconds


def local_path(candidate: str | None, fallback: str = "/") -> str:
    """`candidate` if it is a path of this site, else `fallback` (no redirect elsewhere)."""
    if candidate and _LOCAL_PATH.match(candidate) and not candidate.startswith("//"):
        return candidate
    return fallback


def claim_refusal(status: int) -> str:
    """Why a claim link did not work, in plain words: not a patient, a link that is wrong or
    was already used (the same to the person: intake tells them apart by 404 and 409)."""
    return "claim.not_a_patient" if status == 403 else "claim.refused"


@dataclass(frozen=True)
class CaseActions:
    """What the case's page offers, given where the case stands."""

    upload: bool
    submit: bool
    withdraw: bool
    report: bool
    live: bool


TERMINAL = frozenset({"report_ready", "withdrawn"})


def case_actions(status: str, documents: int) -> CaseActions:
    """Uploads and submission while a draft (submission once a record is there), withdrawal
    until the report, the report once ready, live updates until nothing more can change."""
    draft = status == "draft"
    return CaseActions(
        upload=draft,
        submit=draft and documents > 0,
        withdraw=status not in TERMINAL,
        report=status == "report_ready",
        live=status not in TERMINAL and not draft,
    )


STEPS = ("specialty", "questions", "summary", "people")


def first_missing_step(draft: Draft) -> str | None:
    """The first step of the request not filled in yet (None: ready to file)."""
    filled = {
        "specialty": draft.specialty is not None,
        "questions": bool(draft.questions),
        "summary": bool(draft.clinical_summary.strip()),
        "people": bool(draft.given_name and draft.family_name and draft.birth_date and draft.email),
    }
    return next((step for step in STEPS if not filled[step]), None)


# --- the specialist's workspace ---------------------------------------------------------------

# Review's refusals of a reviewer's actions, in plain words.
PROBLEM_MESSAGES |= {
    "assignment-not-found": "error.not_found",
    "not-your-assignment": "review.error.not_yours",
    "assignment-state": "review.error.state",
    "not-accepted": "review.error.not_accepted",
    "opinion-exists": "review.error.opinion_exists",
    "no-opinion": "review.error.no_opinion",
}
DUE_SOON = timedelta(hours=24)
OPEN_ASSIGNMENTS = frozenset({"assigned", "accepted"})
# How the viewer shows a record: in a sandboxed frame, as an image, or as DICOM metadata.
RECORD_VIEWS = {
    "application/pdf": ("pdf", "pdf"),
    "text/plain": ("frame", "txt"),
    "image/jpeg": ("image", "jpg"),
    "image/png": ("image", "png"),
    "application/dicom": ("dicom", "dcm"),
}
SANDBOX_CSP = "sandbox; default-src 'none'; img-src 'self'; frame-ancestors 'self'"


def due_state(status: str, due_at: datetime, overdue: bool, now: datetime) -> str | None:
    """How near an open assignment's due date is: overdue, soon (within a day), later; None
    once answered or ended."""
    if status not in OPEN_ASSIGNMENTS:
        return None
    if overdue or due_at <= now:
        return "overdue"
    return "soon" if due_at - now <= DUE_SOON else "later"


@dataclass(frozen=True)
class ReviewActions:
    """What the workspace offers, given where the assignment stands."""

    decide: bool  # accept or decline
    read: bool  # the records and the opinion form
    write: bool  # the first version of the opinion
    correct: bool  # a new version of a sent opinion


def review_actions(status: str) -> ReviewActions:
    """Accept or decline while assigned; write once accepted; correct once completed."""
    return ReviewActions(
        decide=status == "assigned",
        read=status in ("accepted", "completed"),
        write=status == "accepted",
        correct=status == "completed",
    )


def opinion_errors(form: OpinionForm) -> dict[str, str]:
    """The fields an opinion still lacks before it may be sent (every section is required)."""
    errors = {} if form.assessment in ASSESSMENTS else {"assessment": "review.required"}
    for name in ("explanation", *OPINION_SECTIONS):
        if not getattr(form, name).strip():
            errors[name] = "review.required"
    return errors


def record_view(content_type: str) -> str | None:
    """How the viewer shows a record of this type (None: it does not)."""
    view = RECORD_VIEWS.get(content_type)
    return view[0] if view else None


def inline_name(document_id: str, content_type: str) -> str:
    """The file name a record is served under: ours, never the uploaded one (no quoting, no
    path, nothing of the patient's)."""
    extension = RECORD_VIEWS.get(content_type, ("", "bin"))[1]
    return f"record-{document_id[:12]}.{extension}"


CLIENT_CREDENTIALS = "client_credentials"


class MachineUnknown(Exception):
    """A client asked for a client-credentials token and no partner is configured for it."""


def hook_key_valid(expected: str, authorization: str | None) -> bool:
    """Whether the token hook's caller presented the configured key (`Bearer <key>`); never
    with no key configured."""
    if not expected or authorization is None:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    )


def machine_claims(
    client_id: str, grant_types: list[str], partner_clients: dict[str, str]
) -> dict[str, str] | None:
    """The claims the provider writes into a client-credentials token: a partner's machine acts
    as role partner for the partner its client is configured for (MachineUnknown for any other
    client). None for the other grants: the token stays as the provider made it."""
    if CLIENT_CREDENTIALS not in grant_types:
        return None
    partner_id = partner_clients.get(client_id)
    if not partner_id:
        raise MachineUnknown(client_id)
    return {"role": "partner", "partner_id": partner_id}
