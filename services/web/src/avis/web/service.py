"""Web's use cases: calls to the four services' APIs, each with the signed-in person's own token.

Web decides nothing about who may see what: each service does, from the token. A refusal
comes back as `Refused` with the problem's status and type, which the pages put in plain words.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from avis.shared.clock import now
from avis.web.models import (
    CONSENT_VERSION,
    AccessEntry,
    AssignmentList,
    AssignmentView,
    CasePage,
    CaseRequests,
    CaseView,
    ClinicalRead,
    ClinicalView,
    DeliveryView,
    DocumentKind,
    Draft,
    FhirEndpointView,
    InformationRequestView,
    Listing,
    OpinionForm,
    OpinionRecord,
    QueuedCase,
    Report,
    ReviewerView,
    SecondReadingList,
    SecondReadingView,
    SubscriptionMade,
    SubscriptionView,
    TranslationList,
    TranslationView,
    TranslatorView,
)
from avis.web.rules import UNAVAILABLE
from avis.web.settings import Settings

PDF = "application/pdf"
T = TypeVar("T")


class Refused(Exception):
    """A service said no (or could not be reached): what the page tells the person."""

    def __init__(self, status: int, problem_type: str | None = None) -> None:
        super().__init__(f"{status} {problem_type or ''}".strip())
        self.status = status
        self.problem_type = problem_type


class Unreachable(Refused):
    """A service did not answer."""

    def __init__(self) -> None:
        super().__init__(503, UNAVAILABLE)


@dataclass(frozen=True)
class Upload:
    """A record the person chose in the upload form."""

    filename: str
    content_type: str
    data: bytes
    kind: DocumentKind


@dataclass(frozen=True)
class Download:
    """A file passed through to the person: its bytes arrive in chunks."""

    content_type: str
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class Platform:
    """The four services' APIs, as the person signed in to web calls them."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._http = httpx.AsyncClient(timeout=settings.api_timeout_seconds, transport=transport)
        self.intake = settings.intake_url.rstrip("/")
        self.reports = settings.reports_url.rstrip("/")
        self.review = settings.review_url.rstrip("/")
        self.notify = settings.notify_url.rstrip("/")

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _call(self, method: str, url: str, *, token: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        try:
            response = await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError:
            raise Unreachable() from None
        if response.status_code >= 400:
            raise Refused(response.status_code, _problem_type(response))
        return response

    async def list_cases(self, *, token: str, cursor: str | None = None) -> CasePage:
        """The person's cases, newest first."""
        params = {"limit": "50"} | ({"cursor": cursor} if cursor else {})
        response = await self._call("GET", f"{self.intake}/v1/cases", token=token, params=params)
        return CasePage.model_validate(response.json())

    async def get_case(self, *, token: str, case_id: str) -> CaseView:
        """A case with its records and timeline."""
        response = await self._call("GET", f"{self.intake}/v1/cases/{case_id}", token=token)
        return CaseView.model_validate(response.json())

    async def create_case(self, *, token: str, draft: Draft) -> CaseView:
        """File the request written step by step as a draft case (once, whatever the retries)."""
        response = await self._call(
            "POST",
            f"{self.intake}/v1/cases",
            token=token,
            json=case_body(draft),
            headers={"Idempotency-Key": draft.key},
        )
        return CaseView.model_validate(response.json())

    async def upload(self, *, token: str, case_id: str, upload: Upload) -> None:
        """Add a record to a draft case."""
        await self._call(
            "POST",
            f"{self.intake}/v1/cases/{case_id}/documents",
            token=token,
            files={"file": (upload.filename, upload.data, upload.content_type)},
            data={"kind": upload.kind.value},
        )

    async def submit(
        self,
        *,
        token: str,
        case_id: str,
        accepted_at: datetime | None = None,
        share_with_physician: bool = False,
        international_review: bool = False,
    ) -> None:
        """Submit a draft with the person's consent to the current consent text (and to sending
        the report to their physician, and to a review through a translator, if they ticked
        those)."""
        scopes = ["review"]
        if share_with_physician:
            scopes.append("share_with_physician")
        if international_review:
            scopes.append("international_review")
        consent = {
            "text_version": CONSENT_VERSION,
            "accepted_at": (accepted_at or now()).isoformat(),
            "scopes": scopes,
        }
        await self._call(
            "POST",
            f"{self.intake}/v1/cases/{case_id}/submit",
            token=token,
            json={"consent": consent},
        )

    async def withdraw(self, *, token: str, case_id: str) -> None:
        """Withdraw a case before its report."""
        await self._call("POST", f"{self.intake}/v1/cases/{case_id}/withdraw", token=token)

    async def request_erasure(self, *, token: str, case_id: str) -> None:
        """The patient asks for the erasure of the case's data."""
        await self._call("POST", f"{self.intake}/v1/cases/{case_id}/erasure-request", token=token)

    async def hold(self, *, token: str, case_id: str, reason: str) -> None:
        """Put a case under a legal hold, saying why (coordinators): its erasure waits."""
        await self._reasoned("PUT", f"{case_id}/legal-hold", token=token, reason=reason)

    async def release(self, *, token: str, case_id: str, reason: str) -> None:
        """Lift a case's legal hold, saying why (an erasure the patient asked for follows)."""
        await self._reasoned("POST", f"{case_id}/legal-hold/release", token=token, reason=reason)

    async def erase(self, *, token: str, case_id: str, reason: str) -> None:
        """Erase a case's data for good, saying why (coordinators; refused while held)."""
        await self._reasoned("POST", f"{case_id}/erasure", token=token, reason=reason)

    async def _reasoned(self, method: str, path: str, *, token: str, reason: str) -> None:
        url = f"{self.intake}/v1/cases/{path}"
        await self._call(method, url, token=token, json={"reason": reason})

    async def claim(self, *, token: str, case_id: str, secret: str) -> None:
        """Make a partner-filed case the signed-in patient's, with the secret of their link."""
        await self._call(
            "POST", f"{self.intake}/v1/cases/{case_id}/claim", token=token, json={"secret": secret}
        )

    async def report(self, *, token: str, case_id: str) -> Report:
        """The case's latest report, as composed in the patient's language."""
        response = await self._call(
            "GET",
            f"{self.reports}/v1/cases/{case_id}/report",
            token=token,
            headers={"Accept": "application/json"},
        )
        return Report.model_validate(response.json())

    async def ask_follow_up(self, *, token: str, case_id: str, text: str) -> None:
        """Ask the specialist a follow-up question about the report (review refuses a fourth,
        or one after the period, saying which)."""
        url = f"{self.review}/v1/cases/{case_id}/follow-ups"
        await self._call("POST", url, token=token, json={"text": text})

    async def report_pdf(self, *, token: str, case_id: str) -> Download:
        """The case's latest report as a PDF, streamed through."""
        url = f"{self.reports}/v1/cases/{case_id}/report"
        response = await self._open(url, token=token, accept=PDF)
        headers = {"Content-Disposition": f'attachment; filename="report-{case_id[:8]}.pdf"'}
        if "content-length" in response.headers:
            headers["Content-Length"] = response.headers["content-length"]
        return Download(PDF, headers, _chunks(response))

    async def _open(self, url: str, *, token: str | None, accept: str = "*/*") -> httpx.Response:
        """A streamed response whose body is still to be read (a refusal is raised)."""
        auth = {"Authorization": f"Bearer {token}"} if token is not None else {}
        request = self._http.build_request("GET", url, headers=auth | {"Accept": accept})
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError:
            raise Unreachable() from None
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise Refused(response.status_code, _problem_type(response))
        return response

    # --- the specialist's workspace: review's assignments and opinion, intake's records ---

    async def my_assignments(
        self, *, token: str, statuses: Collection[str] = (), limit: int = 100
    ) -> AssignmentList:
        """The signed-in reviewer's assignments (in any of `statuses`, or all), soonest due
        first."""
        url = f"{self.review}/v1/assignments"
        found = await self._get(url, token=token, status=sorted(statuses), limit=str(limit))
        return AssignmentList.model_validate(found)

    async def assignment(self, *, token: str, assignment_id: str) -> AssignmentView:
        """One of the reviewer's assignments (another reviewer's is refused by review)."""
        url = f"{self.review}/v1/assignments/{assignment_id}"
        return AssignmentView.model_validate((await self._call("GET", url, token=token)).json())

    async def accept(self, *, token: str, assignment_id: str) -> None:
        """Accept an assignment."""
        url = f"{self.review}/v1/assignments/{assignment_id}/accept"
        await self._call("POST", url, token=token)

    async def decline(self, *, token: str, assignment_id: str, code: str, reason: str) -> None:
        """Decline an assignment, with a reason's code and its words."""
        url = f"{self.review}/v1/assignments/{assignment_id}/decline"
        await self._call("POST", url, token=token, json={"reason_code": code, "reason": reason})

    async def open_requests(self, *, token: str, case_id: str) -> list[InformationRequestView]:
        """The specialist's requests for more information still open, with their questions
        (from the case's clinical content, which its patient or partner reads)."""
        url = f"{self.intake}/v1/cases/{case_id}/clinical"
        found = CaseRequests.model_validate((await self._call("GET", url, token=token)).json())
        return [r for r in found.information_requests if r.state == "open"]

    async def answer_information(
        self, *, token: str, case_id: str, request_id: str, text: str
    ) -> None:
        """Answer a request for more information: the review goes on."""
        url = f"{self.intake}/v1/cases/{case_id}/information-requests/{request_id}/answer"
        await self._call("POST", url, token=token, json={"text": text})

    async def ask_information(self, *, token: str, assignment_id: str, text: str) -> None:
        """Ask the patient (or the filing partner) for more information: review's clock stands
        until the answer."""
        url = f"{self.review}/v1/assignments/{assignment_id}/information-requests"
        await self._call("POST", url, token=token, json={"text": text})

    async def send_opinion(
        self,
        *,
        token: str,
        assignment_id: str,
        form: OpinionForm,
        correction: bool,
        second_reading: bool = False,
    ) -> OpinionRecord:
        """Send the opinion: its first version (POST; `second_reading`: read by a second
        specialist before release), or a correction as a new one (PUT)."""
        url = f"{self.review}/v1/assignments/{assignment_id}/opinion"
        method = "PUT" if correction else "POST"
        params = {"second_reading": "true"} if second_reading and not correction else {}
        body = opinion_body(form)
        response = await self._call(method, url, token=token, json=body, params=params)
        return OpinionRecord.model_validate(response.json())

    async def opinion(self, *, token: str, assignment_id: str) -> OpinionRecord:
        """The latest version of the assignment's opinion."""
        url = f"{self.review}/v1/assignments/{assignment_id}/opinion"
        return OpinionRecord.model_validate((await self._call("GET", url, token=token)).json())

    async def case_for_review(self, *, token: str, case_id: str) -> ClinicalView:
        """The case's clinical content, as intake shows it to its assigned reviewer."""
        url = f"{self.intake}/v1/cases/{case_id}/clinical"
        return ClinicalView.model_validate((await self._call("GET", url, token=token)).json())

    async def record(
        self, *, token: str, case_id: str, document_id: str, shown: Callable[[str], bool]
    ) -> Download:
        """A record of the case, streamed through if `shown` takes its type (else: not here)."""
        response = await self._open(self._record(case_id, document_id), token=token)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not shown(content_type):
            await response.aclose()
            raise Refused(404, "not-found")
        headers = {}
        if "content-length" in response.headers:
            headers["Content-Length"] = response.headers["content-length"]
        return Download(content_type, headers, _chunks(response))

    async def record_head(
        self, *, token: str, case_id: str, document_id: str, limit: int, content_type: str = ""
    ) -> bytes:
        """The first `limit` bytes of a record (a DICOM file's header comes first), of this
        content type if one is given (else: not here)."""
        response = await self._open(self._record(case_id, document_id), token=token)
        served = response.headers.get("content-type", "").split(";")[0].strip()
        if content_type and served != content_type:
            await response.aclose()
            raise Refused(404, "not-found")
        head = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                head += chunk
                if len(head) >= limit:
                    break
        finally:
            await response.aclose()
        return bytes(head[:limit])

    def _record(self, case_id: str, document_id: str) -> str:
        return f"{self.intake}/v1/cases/{case_id}/documents/{document_id}"

    # --- coordinator board and partner console ---------------------------------------------

    async def _get(self, url: str, *, token: str, **params: str | list[str] | bool | None) -> Any:
        """A GET with the query parameters given (None: left out; a list: the parameter once
        per item); its JSON."""
        query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
        wanted = {k: v for k, v in query.items() if v is not None}
        return (await self._call("GET", url, token=token, params=wanted)).json()

    async def cases_by_status(
        self, *, token: str, status: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> CasePage:
        """Every case a coordinator may see, newest first, in one status or all."""
        found = await self._get(
            f"{self.intake}/v1/cases", token=token, status=status, cursor=cursor, limit=str(limit)
        )
        return CasePage.model_validate(found)

    async def assignments(
        self,
        *,
        token: str,
        status: list[str] | None = None,
        overdue: bool | None = None,
        case_id: str | None = None,
        brief: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Listing[AssignmentView]:
        """Assignments in any of `status` (None: all), soonest due first (coordinators see the
        matcher's rationale and the decline reasons, unless `brief`: rows for a list)."""
        found = await self._get(
            f"{self.review}/v1/assignments",
            token=token,
            status=status,
            overdue=overdue,
            case_id=case_id,
            brief=brief or None,
            cursor=cursor,
            limit=str(limit),
        )
        return Listing[AssignmentView].model_validate(found)

    async def queue(
        self,
        *,
        token: str,
        specialty: str | None = None,
        urgency: str | None = None,
        cursor: str | None = None,
    ) -> Listing[QueuedCase]:
        """Cases nobody fits yet, urgent first, then oldest."""
        found = await self._get(
            f"{self.review}/v1/queue",
            token=token,
            specialty=specialty,
            urgency=urgency,
            cursor=cursor,
            limit="100",
        )
        return Listing[QueuedCase].model_validate(found)

    async def assign(self, *, token: str, case_id: str, reviewer_id: str) -> None:
        """Give a waiting case to a reviewer by hand (every rule holds but capacity)."""
        await self._call(
            "POST",
            f"{self.review}/v1/queue/{case_id}/assign",
            token=token,
            json={"reviewer_id": reviewer_id},
        )

    async def reviewers(
        self,
        *,
        token: str,
        specialty: str | None = None,
        language: str | None = None,
        cursor: str | None = None,
    ) -> Listing[ReviewerView]:
        """The reviewer directory, by id."""
        found = await self._get(
            f"{self.review}/v1/reviewers",
            token=token,
            specialty=specialty,
            language=language,
            cursor=cursor,
            limit="100",
        )
        return Listing[ReviewerView].model_validate(found)

    async def access_log(
        self, *, token: str, case_id: str, cursor: str | None = None
    ) -> Listing[AccessEntry]:
        """Who read or wrote the case's health data, oldest first: intake's trail (the case and
        its records), review's (the opinions and decline reasons) and reports' (the report),
        merged by time. Intake decides who may read the case's trail; review and reports answer
        404 for a case they do not know yet (or, review, whose patient it does not know), and
        their part is then left out. The cursor pages intake's trail; review's and reports'
        first 100 entries come with its first page."""
        url = f"{self.intake}/v1/cases/{case_id}/access-log"
        if cursor is not None:
            return Listing[AccessEntry].model_validate(
                await self._get(url, token=token, cursor=cursor, limit="100")
            )
        # The three at once (one round trip less); intake's refusal decides, whatever else came.
        answers = await asyncio.gather(
            self._get(url, token=token, limit="100"),
            self._trail_of(self.review, case_id, token=token),
            self._trail_of(self.reports, case_id, token=token),
            return_exceptions=True,
        )
        page, *others = answers
        found = Listing[AccessEntry].model_validate(_settled(page))
        merged = found.items + [e for trail in others for e in _settled(trail)]
        return Listing[AccessEntry](
            items=sorted(merged, key=lambda e: e.at), next_cursor=found.next_cursor
        )

    async def _trail_of(self, service: str, case_id: str, *, token: str) -> list[AccessEntry]:
        """The first entries of the case's trail kept by `service` (none: 404, a case it does
        not know, or not for this caller)."""
        try:
            page = await self._get(
                f"{service}/v1/cases/{case_id}/access-log", token=token, limit="100"
            )
        except Refused as refused:
            if refused.status != 404:
                raise
            return []
        return Listing[AccessEntry].model_validate(page).items

    async def clinical(self, *, token: str, case_id: str, reason: str) -> ClinicalRead:
        """The case's clinical content, read by a coordinator for the reason given."""
        response = await self._call(
            "GET",
            f"{self.intake}/v1/cases/{case_id}/clinical",
            token=token,
            # In UTF-8: a header's text is bytes, and a reason in French has accents.
            headers={"X-Avis-Reason": reason.encode()},
        )
        return ClinicalRead.model_validate(response.json())

    async def subscriptions(
        self, *, token: str, partner_id: str | None = None, cursor: str | None = None
    ) -> Listing[SubscriptionView]:
        """A partner's webhook subscriptions (coordinators name the partner)."""
        url = f"{self.notify}/v1/subscriptions"
        found = await self._get(url, token=token, partner_id=partner_id, cursor=cursor, limit="50")
        return Listing[SubscriptionView].model_validate(found)

    async def subscription(self, *, token: str, subscription_id: str) -> SubscriptionView:
        """One subscription."""
        url = f"{self.notify}/v1/subscriptions/{subscription_id}"
        return SubscriptionView.model_validate(await self._get(url, token=token))

    async def subscribe(
        self, *, token: str, url: str, event_types: list[str], description: str
    ) -> SubscriptionMade:
        """A new subscription; the answer holds its signing secret, this once."""
        body = {"url": url, "event_types": event_types, "description": description}
        response = await self._call(
            "POST", f"{self.notify}/v1/subscriptions", token=token, json=body
        )
        return SubscriptionMade.model_validate(response.json())

    async def unsubscribe(self, *, token: str, subscription_id: str) -> None:
        """Delete a subscription."""
        url = f"{self.notify}/v1/subscriptions/{subscription_id}"
        await self._call("DELETE", url, token=token)

    async def deliveries(
        self, *, token: str, subscription_id: str, cursor: str | None = None
    ) -> Listing[DeliveryView]:
        """A subscription's latest deliveries, newest first, with every attempt."""
        url = f"{self.notify}/v1/deliveries"
        found = await self._get(
            url, token=token, subscription_id=subscription_id, cursor=cursor, limit="50"
        )
        return Listing[DeliveryView].model_validate(found)

    async def replay(self, *, token: str, delivery_id: str) -> None:
        """Queue a dead delivery again (same webhook-id)."""
        url = f"{self.notify}/v1/deliveries/{delivery_id}/replay"
        await self._call("POST", url, token=token)


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    finally:
        await response.aclose()


def opinion_body(form: OpinionForm) -> dict[str, Any]:
    """Review's `Opinion` body from a complete form."""
    sections = form.model_dump(exclude={"assessment", "explanation"})
    return {
        "diagnosis": {"assessment": form.assessment, "explanation": form.explanation},
        **sections,
    }


def case_body(draft: Draft) -> dict[str, Any]:
    """Intake's `CaseCreate` body for a request written step by step."""
    physician = {
        key: value
        for key, value in (
            ("name", draft.physician_name),
            ("institution_code", draft.institution_code),
            ("email", draft.physician_email),
        )
        if value
    }
    body: dict[str, Any] = {
        "patient": {
            "given_name": draft.given_name,
            "family_name": draft.family_name,
            "birth_date": draft.birth_date.isoformat() if draft.birth_date else None,
            "email": draft.email,
            "preferred_language": (draft.preferred_language or "fr"),
        },
        "specialty": draft.specialty,
        "urgency": draft.urgency,
        "questions": list(draft.questions),
        "clinical_summary": draft.clinical_summary,
    }
    if physician:
        body["physician"] = physician
    return body


def _problem_type(response: httpx.Response) -> str | None:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


async def physician_report(platform: Platform, *, case_id: str, secret: str) -> Download:
    """The case's latest report as a PDF, opened with the secret of the treating physician's
    link (no token: the physician has no account), streamed through (beside `Platform`);
    reports records the read in the case's trail."""
    url = f"{platform.reports}/v1/cases/{case_id}/report/physician/{secret}"
    response = await platform._open(url, token=None, accept=PDF)
    headers = {"Content-Disposition": f'inline; filename="report-{case_id[:8]}.pdf"'}
    if "content-length" in response.headers:
        headers["Content-Length"] = response.headers["content-length"]
    return Download(PDF, headers, _chunks(response))


class SecondReadingCalls:
    """Review's second reading, as the signed-in specialist calls it (beside `Platform`)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.url = f"{platform.review}/v1/second-readings"

    async def mine(self, *, token: str) -> SecondReadingList:
        """The signed-in specialist's open readings, by assignment."""
        found = await self.platform._get(self.url, token=token, limit="100")
        return SecondReadingList.model_validate(found)

    async def reading(self, *, token: str, assignment_id: str) -> SecondReadingView:
        """One reading with the version to read and the comments (a read in the trail)."""
        found = await self.platform._get(f"{self.url}/{assignment_id}", token=token)
        return SecondReadingView.model_validate(found)

    async def agree(self, *, token: str, assignment_id: str) -> None:
        """Agree with the opinion: it is released naming both specialists."""
        await self.platform._call("POST", f"{self.url}/{assignment_id}/agreement", token=token)

    async def rules(self, *, token: str) -> dict[str, Any]:
        """The specialties and urgencies whose opinions are read twice (coordinators)."""
        return dict(
            await self.platform._get(f"{self.platform.review}/v1/second-reading-rules", token=token)
        )

    async def set_rules(self, *, token: str, specialties: list[str], urgencies: list[str]) -> None:
        """Replace the rules of the second reading (coordinators)."""
        url = f"{self.platform.review}/v1/second-reading-rules"
        body = {"specialties": specialties, "urgencies": urgencies}
        await self.platform._call("PUT", url, token=token, json=body)

    async def comment(self, *, token: str, assignment_id: str, text: str) -> None:
        """Return comments the first specialist must answer."""
        url = f"{self.url}/{assignment_id}/comments"
        await self.platform._call("POST", url, token=token, json={"text": text})


def _settled(answer: T | BaseException) -> T:
    """A gathered answer, or its failure raised."""
    if isinstance(answer, BaseException):
        raise answer
    return answer


class FhirEndpointCalls:
    """Notify's FHIR endpoints of the physicians' institutions, as the signed-in coordinator
    calls them (beside `Platform`)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.url = f"{platform.notify}/v1/fhir-endpoints"

    async def endpoints(self, *, token: str) -> Listing[FhirEndpointView]:
        """Every institution with an endpoint set, by code, with its state."""
        found = await self.platform._get(self.url, token=token)
        return Listing[FhirEndpointView].model_validate(found)

    async def enable(self, *, token: str, institution: str) -> None:
        """Re-enable a disabled endpoint: its failure count cleared, the posts that waited for
        it posted at once."""
        await self.platform._call("POST", f"{self.url}/{institution}/enable", token=token)


class TranslationCalls:
    """Review's translations, as the signed-in translator calls them (beside `Platform`)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.url = f"{platform.review}/v1/translations"

    async def mine(self, *, token: str, cursor: str | None = None) -> TranslationList:
        """The open translations of the signed-in translator and of their pairs (a coordinator:
        every open one), by id."""
        found = await self.platform._get(self.url, token=token, limit="100", cursor=cursor)
        return TranslationList.model_validate(found)

    async def translators(
        self, *, token: str, language: str | None = None
    ) -> Listing[TranslatorView]:
        """The translators' directory, by id (its first hundred: a directory of people)."""
        found = await self.platform._get(
            f"{self.platform.review}/v1/translators", token=token, language=language, limit="100"
        )
        return Listing[TranslatorView].model_validate(found)

    async def translation(self, *, token: str, translation_id: str) -> TranslationView:
        """One translation with its source text (a read in the case's trail)."""
        found = await self.platform._get(f"{self.url}/{translation_id}", token=token)
        return TranslationView.model_validate(found)

    async def take(self, *, token: str, translation_id: str) -> None:
        """Take a queued translation."""
        await self.platform._call("POST", f"{self.url}/{translation_id}/take", token=token)

    async def write(self, *, token: str, translation_id: str, body: dict[str, Any]) -> None:
        """Submit the translation (the summary, or the opinion)."""
        url = f"{self.url}/{translation_id}/text"
        await self.platform._call("PUT", url, token=token, json=body)
