"""Web's pure decisions: which words a refusal gets, which language a page speaks, whether a
form's CSRF token holds, when a session has been idle too long, what a case's page offers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from avis.shared.events import Language
from avis.web.models import (
    ASSESSMENTS,
    OPINION_SECTIONS,
    CaseView,
    Draft,
    OpinionForm,
    TranslationStep,
)

DEFAULT_LANGUAGE = Language.FR
LANGUAGES: tuple[Language, ...] = tuple(Language)

# A service's problem `type` slug -> the catalogue key of its plain-words message.
PROBLEM_MESSAGES = {
    # The treating physician's link, past its window (reports' 410).
    "physician-link-expired": "error.physician_link_expired",
    "document-too-large": "error.document_too_large",
    "request-too-large": "error.document_too_large",
    "empty-document": "error.empty_document",
    "unsupported-document-type": "error.unsupported_document_type",
    "invalid-filename": "error.invalid_filename",
    "too-many-documents": "error.too_many_documents",
    "no-documents": "error.no_documents",
    "consent-required": "error.consent_required",
    "physician-consent-required": "error.physician_consent_required",
    "physician-contact-required": "error.physician_contact_required",
    "case-not-draft": "error.case_not_draft",
    "case-withdrawn": "error.case_withdrawn",
    "case-erased": "error.case_erased",
    "legal-hold": "error.legal_hold",
    "report-ready": "error.report_ready",
    "follow-up-limit": "error.follow_up_limit",
    "follow-up-period-over": "error.follow_up_period_over",
    "follow-up-no-report": "error.report_not_ready",
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
# The actions and purposes intake, review and reports record in their access trails that the
# catalogues say in plain words, on the patient's page and the coordinator's (another is shown
# as its code, never hidden).
TRAIL_ACTIONS = frozenset(
    {
        "case.read",
        "clinical.read",
        "document.read",
        "case.create",
        "document.add",
        "document.delete",
        "case.submit",
        "case.withdraw",
        "case.claim",
        "case.erasure-request",
        "case.erase",
        "case.hold",
        "case.release",
        "report.read",
        "report.list",
        "opinion.read",
        "opinion.create",
        "opinion.correct",
        "decline.read",
        "review.decline",
        "second-reading.read",
        "second-reading.comment",
        "second-reading.agree",
    }
)
TRAIL_PURPOSES = frozenset(
    {"own-case", "filed-case", "assigned-review", "coordination", "break-glass", "physician-copy"}
)
# Where each role's pages start (the patient's are /cases).
HOMES = {
    "coordinator": "/board",
    "partner": "/partner",
    "reviewer": "/review",
    "translator": "/translations",
}
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


# The browser's time zone (an IANA name), which static/zone.js keeps in this cookie so that the
# pages write times as the person reads a clock; without it (or with a name that is not a zone),
# UTC, and the times say so.
ZONE_COOKIE = "avis_zone"
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")


def zone_of(name: str | None) -> tzinfo:
    """The time zone named `name` if it is one, else UTC."""
    if not name or len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


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


def said(text: str) -> str:
    """What a person typed in a form, its runs of spaces and line breaks made one space."""
    return " ".join(text.split())


def reasoned_refusal(status: int, problem_type: str | None) -> str:
    """Why intake refused a legal hold, its lifting or an erasure: a reason it does not take
    (422: too short or too long) said as such, anything else as any refusal."""
    return "board.keep.reason_invalid" if status == 422 else problem_message(status, problem_type)


# The board's reviews by due date list the open rounds unless one status, or all, is chosen.
ALL_ASSIGNMENTS = "all"


def assignments_listed(chosen: str | None) -> list[str] | None:
    """The statuses of the rounds the board lists (None: every status) for the choice made: the
    open ones (`OPEN_ASSIGNMENTS`) unless one status, or all, is chosen."""
    if chosen is None:
        return sorted(OPEN_ASSIGNMENTS)
    return None if chosen == ALL_ASSIGNMENTS else [chosen]


def fhir_refusal(status: int, problem_type: str | None) -> str:
    """Why notify refused to re-enable a FHIR endpoint: an institution it has no endpoint for
    (404) said as such, anything else as any refusal."""
    return "board.fhir.unknown" if status == 404 else problem_message(status, problem_type)


def release_confirmed(case: CaseView, ticked: bool) -> bool:
    """Whether a legal hold may be lifted: lifting it erases at once a case whose patient asked
    for its erasure meanwhile, so the coordinator ticks the box that says so first."""
    return ticked or case.erasure_requested_at is None or case.erased_at is not None


def erasure_confirmed(typed: str, reference: str) -> bool:
    """Whether the coordinator typed the case's reference to confirm its erasure (spaces and
    case aside)."""
    return bool(reference) and said(typed).upper() == reference.upper()


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
    answer: bool = False  # the specialist's open requests for more information, to answer


TERMINAL = frozenset({"report_ready", "withdrawn"})
# The specialist asked for more information: the patient answers (and may add records).
AWAITING_INFORMATION = "awaiting_information"


def case_actions(status: str, documents: int, *, erased: bool = False) -> CaseActions:
    """Uploads and submission while a draft (submission once a record is there; uploads and
    answers while the specialist waits for more information), withdrawal until the report, the
    report once ready, live updates until nothing more can change; nothing once the case's data
    is erased."""
    if erased:
        return CaseActions(upload=False, submit=False, withdraw=False, report=False, live=False)
    draft = status == "draft"
    return CaseActions(
        upload=draft or status == AWAITING_INFORMATION,
        submit=draft and documents > 0,
        withdraw=status not in TERMINAL,
        report=status == "report_ready",
        live=status not in TERMINAL and not draft,
        answer=status == AWAITING_INFORMATION,
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
    "translation-pending": "review.error.translation_pending",
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


def case_translation(steps: Sequence[TranslationStep]) -> TranslationStep | None:
    """The round's translation of the case into the specialist's language (international
    review), if it has one."""
    return next((s for s in steps if s.way == "to_specialist"), None)


def translation_pending(step: TranslationStep | None) -> bool:
    """Whether the specialist waits for the case's translation before they may accept it."""
    return step is not None and step.state != "done"


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
    """A client asked for a client-credentials token and no partner or service is configured
    for it."""


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
    client_id: str,
    grant_types: list[str],
    partner_clients: dict[str, str],
    service_clients: Collection[str] = (),
) -> dict[str, str] | None:
    """The claims the provider writes into a client-credentials token: a partner's machine acts
    as role partner for the partner its client is configured for, a service's machine as role
    service (no partner); MachineUnknown for any other client, or one named as both. None for
    the other grants: the token stays as the provider made it."""
    if CLIENT_CREDENTIALS not in grant_types:
        return None
    partner_id = partner_clients.get(client_id)
    service = client_id in service_clients
    if partner_id and not service:
        return {"role": "partner", "partner_id": partner_id}
    if service and client_id not in partner_clients:
        return {"role": "service"}
    raise MachineUnknown(client_id)


# --- people's sign-in through the OpenID provider and its identity server ---

PROFESSIONALS = frozenset({"reviewer", "coordinator", "translator"})
SECOND_FACTOR = "aal2"
PERSON_ROLES = frozenset({"patient", "partner", "reviewer", "coordinator", "translator"})
# The identity server's cookies web passes on to it (its session and its forms' CSRF cookie).
_IDENTITY_COOKIES = re.compile(r"^(ory_kratos_session|csrf_token_[A-Za-z0-9_\-]+)$")
# The identity server's message ids web has words for (else signin.refused).
FLOW_MESSAGES = {
    4000006: "signin.wrong_password",
    4000008: "signin.wrong_code",
    4000002: "signin.missing",
    4010002: "signin.refused",
    1010004: "signin.second_factor",
    1010003: "signin.again",
    1060003: "signin.recovery_sent",
    4060006: "signin.recovery_wrong_code",
    4060005: "signin.recovery_expired",
    1060001: "signin.recovered",
    1050001: "signin.password_saved",
    4000005: "signin.password_refused",
}
# The fields of a flow web shows, by the identity server's node name, with their words.
FIELD_LABELS = {
    "identifier": "signin.email",
    "password": "signin.password",
    "totp_code": "signin.code",
}
SUBMITS = {"password": "signin.submit", "totp": "signin.verify"}
SHOWN_GROUPS = frozenset({"default", "password", "totp"})


@dataclass(frozen=True)
class FlowKind:
    """What web shows of one kind of the identity server's flows: its groups of fields, their
    words, its buttons' words (by their value) and the page's title."""

    groups: frozenset[str]
    labels: dict[str, str]
    submits: dict[str, str]
    title: str


LOGIN = FlowKind(SHOWN_GROUPS, FIELD_LABELS, SUBMITS, "signin.title")
# Recovery by a code sent to the person's address (its resend button is not shown).
RECOVERY = FlowKind(
    frozenset({"default", "code"}),
    {"email": "signin.email", "code": "signin.recovery_code"},
    {"code": "signin.recovery_submit"},
    "signin.recovery_title",
)
# After recovery, the new password (the profile and second-factor parts are not shown).
SETTINGS = FlowKind(
    frozenset({"default", "password"}),
    {"password": "signin.new_password"},
    {"password": "signin.save_password"},
    "signin.settings_title",
)


class NotAPerson(Exception):
    """An identity without a valid role in its admin metadata: it gets no token."""


@dataclass(frozen=True)
class PersonClaims:
    """Who a signed-in identity is to the services: its subject, role and partner."""

    subject: str
    role: str
    partner_id: str | None

    def token_claims(self) -> dict[str, str]:
        """The claims the provider writes at the top of the access token."""
        claims = {"role": self.role}
        if self.partner_id:
            claims["partner_id"] = self.partner_id
        return claims


def person_claims(identity_id: str, metadata_admin: object) -> PersonClaims:
    """A person's subject, role and partner, from the identity's admin metadata alone (the person
    cannot edit it; traits they can edit never count). The subject is the metadata's `subject`
    where set (the seeded people keep the development subjects), else the identity's id."""
    if not isinstance(metadata_admin, dict):
        raise NotAPerson(identity_id)
    role = metadata_admin.get("role")
    if role not in PERSON_ROLES:
        raise NotAPerson(identity_id)
    partner_id = metadata_admin.get("partner_id")
    if role == "partner" and not isinstance(partner_id, str):
        raise NotAPerson(identity_id)
    subject = metadata_admin.get("subject") or identity_id
    if not isinstance(subject, str):
        raise NotAPerson(identity_id)
    return PersonClaims(subject, role, partner_id if isinstance(partner_id, str) else None)


def second_factor_missing(role: str, assurance: str | None) -> bool:
    """Whether a session is not enough for this role: professionals need the second factor."""
    return role in PROFESSIONALS and assurance != SECOND_FACTOR


def identity_cookies(header: str | None) -> str:
    """The identity server's own cookies out of a request's Cookie header (never web's)."""
    if not header:
        return ""
    kept = []
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if _IDENTITY_COOKIES.match(name):
            kept.append(f"{name}={value}")
    return "; ".join(kept)


def pkce_challenge(verifier: str) -> str:
    """The S256 challenge of a PKCE verifier (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def signin_csp(policy: str, *origins: str) -> str:
    """A page's policy with its forms (and their redirects) allowed to the sign-in servers."""
    return policy.replace("form-action 'self'", "form-action 'self' " + " ".join(origins))


def origin(url: str) -> str:
    """scheme://host:port of a URL."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class FormField:
    """One field of the identity server's form, as web shows it."""

    name: str
    type: str
    value: str
    label: str | None
    required: bool
    autocomplete: str | None
    errors: tuple[str, ...]


@dataclass(frozen=True)
class IdentityForm:
    """The identity server's login form: where it posts, its fields and its messages."""

    action: str
    method: str
    fields: tuple[FormField, ...]
    messages: tuple[str, ...]
    second_factor: bool
    title: str = "signin.title"
    recovery: bool = False


def _message_keys(messages: object) -> tuple[str, ...]:
    if not isinstance(messages, list):
        return ()
    keys = [FLOW_MESSAGES.get(int(m.get("id") or 0), "") for m in messages if isinstance(m, dict)]
    errors = [m for m in messages if isinstance(m, dict) and m.get("type") == "error"]
    if errors and not any(keys):
        keys.append("signin.refused")
    return tuple(dict.fromkeys(k for k in keys if k))


def identity_form(flow: dict[str, Any], shown: FlowKind = LOGIN) -> IdentityForm:
    """The fields of a login (recovery, settings) flow web shows: its password or code fields,
    hidden and submit inputs, with our words for their labels and messages (the server's English
    never shown)."""
    ui = flow.get("ui") or {}
    fields = []
    for node in ui.get("nodes") or []:
        attributes = node.get("attributes") or {}
        if node.get("type") != "input" or node.get("group") not in shown.groups:
            continue
        name, kind = str(attributes.get("name", "")), str(attributes.get("type", "text"))
        value = attributes.get("value")
        label = shown.submits.get(str(value)) if kind in ("submit", "button") else None
        fields.append(
            FormField(
                name=name,
                type="submit" if kind == "button" else kind,
                value="" if value is None else str(value),
                label=label or (None if kind in ("submit", "button") else shown.labels.get(name)),
                required=bool(attributes.get("required")),
                autocomplete=attributes.get("autocomplete"),
                errors=_message_keys(node.get("messages")),
            )
        )
    return IdentityForm(
        action=str(ui.get("action", "")),
        method=str(ui.get("method", "POST")),
        fields=tuple(f for f in fields if f.type == "hidden" or f.label),
        messages=_message_keys(ui.get("messages")),
        second_factor=flow.get("requested_aal") == SECOND_FACTOR,
        title=shown.title,
        recovery=shown is LOGIN and flow.get("requested_aal") != SECOND_FACTOR,
    )


ROLE_CHANGE = "identity.role.change"
ROLE_TRAIL_PREFIX = "identity:"


def role_changed(metadata_admin: object, role: str, partner_id: str | None) -> dict[str, Any]:
    """The admin metadata of an identity given `role` (and `partner_id`, a partner's alone); its
    subject kept. ValueError for a role people do not have, or a partner without its partner."""
    if role not in PERSON_ROLES:
        raise ValueError(f"{role!r} is not a person's role: {', '.join(sorted(PERSON_ROLES))}")
    if (role == "partner") != bool(partner_id):
        raise ValueError("a partner, and only a partner, has a partner id")
    kept = dict(metadata_admin) if isinstance(metadata_admin, dict) else {}
    kept.pop("partner_id", None)
    return kept | {"role": role} | ({"partner_id": partner_id} if partner_id else {})


def role_trail(subject: str) -> str:
    """The trail of an identity's role changes (one chain per person, beside cases' trails)."""
    return f"{ROLE_TRAIL_PREFIX}{subject}"
