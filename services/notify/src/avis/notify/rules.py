"""Pure decisions of the notify service: which email an event causes (the notification matrix)
and what it shows, how a send's or a delivery's failure is handled (retry schedules), what a
partner's webhook carries and where it may go, and who may read what. No I/O."""

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from urllib.parse import quote, urlsplit

from avis.notify.models import Outcome, SendStatus, Template, WebhookEvent
from avis.shared.events import (
    CaseClaimed,
    CaseSubmitted,
    CaseWithdrawn,
    FollowUpAnswered,
    FollowUpAsked,
    InformationRequested,
    Language,
    Payload,
    PhysicianCopySent,
    ReportReady,
    ReviewAssigned,
    ReviewResumed,
    SecondReadingCommented,
    SecondReadingRequested,
    TranslationDone,
    TranslationQueued,
)
from avis.shared.sealing import Sealed
from avis.shared.security import Principal


@dataclass(frozen=True)
class CaseView:
    """What notify remembers of a case: enough to decide the next email."""

    submitted: bool = False
    withdrawn: bool = False
    told_due: date | None = None  # the expected date the patient was last told
    report_version: int = 0  # the highest report version the patient was told about
    patient_id: str | None = None  # who reads the case as its patient (a claim sets it)
    erased: bool = False  # its key destroyed: nothing more is sent for it, to anyone
    told_abroad: bool = False  # told the review goes abroad, through a translator


@dataclass(frozen=True)
class Decision:
    """What an event does: park it (its case is not known yet), or move the case on and
    perhaps send one email."""

    park: bool = False
    send: Template | None = None
    then: CaseView = field(default_factory=CaseView)
    why: str = ""
    hooks: bool = True  # whether partners' webhooks still go out for the event


def waits_for_its_case(*, submitted: bool) -> bool:
    """Whether events parked for a case still wait for it (its submission has not arrived)."""
    return not submitted


def _park(view: CaseView) -> Decision:
    return Decision(park=True, then=view, why="case not submitted yet")


def _skip(view: CaseView, why: str) -> Decision:
    return Decision(then=view, why=why)


def on_submitted(view: CaseView) -> Decision:
    """`avis.case.submitted.v1`: case received, once."""
    if view.submitted:
        return _skip(view, "already received")
    return Decision(send=Template.CASE_RECEIVED, then=replace(view, submitted=True))


def on_claimed(view: CaseView, patient_id: str) -> Decision:
    """`avis.case.claimed.v1`: a partner-filed case has its patient from now on; no email."""
    if not view.submitted:
        return _park(view)
    if view.patient_id is not None:
        return _skip(view, "already claimed")
    return _skip(replace(view, patient_id=patient_id), "claimed: its patient reads it now")


def on_assigned(view: CaseView, due: date, *, international: bool = False) -> Decision:
    """`avis.review.assigned.v1`: the first assignment tells the expected date; a later one
    (after a decline) tells only a moved date. The first assignment to a specialist who does
    not read the patient's language (`international`) tells the patient that the review goes
    abroad, through a translator, with the expected date."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    if international and not view.told_abroad:
        return Decision(
            send=Template.REVIEW_ABROAD, then=replace(view, told_due=due, told_abroad=True)
        )
    if view.told_due is None:
        return Decision(send=Template.REVIEW_ASSIGNED, then=replace(view, told_due=due))
    if due == view.told_due:
        return _skip(view, "reassigned, same expected date")
    return Decision(send=Template.EXPECTED_DATE_CHANGED, then=replace(view, told_due=due))


def on_information_requested(view: CaseView) -> Decision:
    """`avis.review.information-requested.v1`: the patient is told a request waits for them
    (what it asks is read on the case's page, never in an email)."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    return Decision(send=Template.INFORMATION_REQUESTED, then=view)


def on_resumed(view: CaseView, due: date) -> Decision:
    """`avis.review.resumed.v1`: the answer came (or the request expired), the review goes on
    and the expected date moved by the pause: the patient is told the new date."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    return Decision(send=Template.REVIEW_RESUMED, then=replace(view, told_due=due))


def on_second_reading(view: CaseView) -> Decision:
    """`avis.review.second-reading-requested.v1`: a second specialist reads the opinion before
    the report; no email to the patient (the report's email follows), a webhook for partners."""
    if not view.submitted:
        return _park(view)
    return _skip(view, "read by a second specialist: the report's email follows")


def on_translation(view: CaseView) -> Decision:
    """`avis.review.translation-queued.v1`, `avis.review.translation-done.v1`: an international
    review's translation waits, then is done; the patient was told at the assignment that the
    review goes through a translator (the report's email follows): a webhook for partners."""
    if not view.submitted:
        return _park(view)
    return _skip(view, "a translation step: the patient was told at the assignment")


def on_physician_copy_sent(view: CaseView) -> Decision:
    """`avis.report.physician-copy-sent.v1`: notify sent the treating physician their copy of
    the report; the patient was told of the report itself: a webhook for partners only."""
    if not view.submitted:
        return _park(view)
    return _skip(view, "the physician's copy: the patient was told of the report")


def on_follow_up_asked(view: CaseView) -> Decision:
    """`avis.review.follow-up-asked.v1`: the patient is told their follow-up question went to
    the specialist, and by when to expect the answer (the question itself is never in an
    email)."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    return Decision(send=Template.FOLLOW_UP_RECEIVED, then=view)


def on_follow_up_answered(view: CaseView) -> Decision:
    """`avis.review.follow-up-answered.v1`: the patient is told the specialist answered; the
    answer is in the report's next version, whose own email brings its link."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    return Decision(send=Template.FOLLOW_UP_ANSWERED, then=view)


def on_report_ready(view: CaseView, version: int) -> Decision:
    """`avis.report.ready.v1`: the first version is 'ready', a later one 'updated'; an older or
    repeated version changes nothing."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    if version <= view.report_version:
        return _skip(view, "version already told")
    template = Template.REPORT_READY if view.report_version == 0 else Template.REPORT_UPDATED
    return Decision(send=template, then=replace(view, report_version=version))


def on_withdrawn(view: CaseView) -> Decision:
    """`avis.case.withdrawn.v1`: the withdrawal is confirmed, once."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "already withdrawn")
    return Decision(send=Template.CASE_WITHDRAWN, then=replace(view, withdrawn=True))


# --- sends --------------------------------------------------------------------------------


def outlives_erasure(template: Template) -> bool:
    """Whether an email still goes out once its case is erased: only the one that tells the
    patient the erasure is done (nothing else is sent for an erased case)."""
    return template is Template.ERASURE_DONE


# The emails to professionals (what work waits for them), not the patient's notifications.
TO_PROFESSIONALS = frozenset(
    {Template.PRO_FOLLOW_UP, Template.PRO_SECOND_READING, Template.PRO_COMMENTS}
)


def still_sent(template: Template, *, erased: bool, withdrawn: bool) -> bool:
    """Whether an email goes out for its case as the case is now: nothing for an erased case
    but the email that tells the patient the erasure is done (`outlives_erasure`), and nothing
    to a professional once the case is withdrawn (no work waits for them any more)."""
    if erased:
        return outlives_erasure(template)
    return not (withdrawn and template in TO_PROFESSIONALS)


def patients_notifications(notifications: list[str]) -> list[str]:
    """A case's notifications as its patient (and coordinators) read them: without the sends
    to professionals (`professional:<event id>`), which are theirs, not the case's."""
    return [s for s in notifications if not s.startswith(f"{PROFESSIONAL_CHANNEL}:")]


PROFESSIONAL_CHANNEL = "professional"  # the channel part of a professional's send id


def cancelled_by_erasure(notifications: list[str], notice_send: str | None) -> list[str]:
    """The sends an erasure cancels (those still queued among them): every one of the case's
    but the email that tells the patient it is done."""
    return [s for s in notifications if s != notice_send]


def still_to_work(status: SendStatus, template: Template, notice_kept: bool) -> bool:
    """Whether a filed send still has work: it is queued; or it is the erasure's email, done
    with (sent, given up or cancelled), while the address it went to is still kept (its key
    not destroyed yet: a crash came in between)."""
    return status is SendStatus.QUEUED or (outlives_erasure(template) and notice_kept)


# How long notify keeps its operational records, then the retention calendar purges them
# (avis.shared.retention; README, "What is kept, and for how long"). Counted from when each was
# queued (a replayed delivery: from its replay). A redelivered or replayed event finds its
# processed-event marker (98 days) and queues nothing again, so a purged send is never sent twice.
# An email's send (status, attempts, Message-ID; its text is never stored): a patient's or a
# coordinator's "was I told, and when?" and a late bounce come within days; every retry is over
# after a day (the retry schedule); 4 weeks covers both, as the broker keeps the events 28 days.
SEND_RETENTION_DAYS = 28
# A webhook delivery (its thin signed body: ids, status, links; its attempts): the partner reads
# its outcome and replays a dead one after its 24-hour retry window, once its own outage is
# over; 4 weeks covers an outage of weeks, as the broker keeps the events 28 days.
DELIVERY_RETENTION_DAYS = 28


@dataclass(frozen=True)
class Retention:
    """How long notify keeps a send and a webhook delivery after queueing it."""

    sends: timedelta = timedelta(days=SEND_RETENTION_DAYS)
    deliveries: timedelta = timedelta(days=DELIVERY_RETENTION_DAYS)


def send_id(event_id: str, channel: str = "email") -> str:
    """The queued send an event causes on a channel, so a redelivery queues nothing new."""
    return f"{channel}:{event_id}"


def message_id(event_id: str, domain: str) -> str:
    """The email's Message-ID: derived from the event (one email per event), so a repeated
    send is recognisable. Short enough never to be folded."""
    return f"<{event_id}@{domain}>"


def outcome_of_code(code: int) -> Outcome:
    """An SMTP reply code as an outcome: 2xx sent, 5xx permanent, anything else transient."""
    if 200 <= code < 300:
        return Outcome.SENT
    return Outcome.PERMANENT if 500 <= code < 600 else Outcome.TRANSIENT


def next_attempt(
    failures: int, schedule: tuple[float, ...], now: datetime, jitter: float = 1.0
) -> datetime | None:
    """When to try again after `failures` transient failures; None once the schedule is spent.

    `jitter` (e.g. 0.8-1.2) spreads retries of many sends that failed together.
    """
    if failures < 1 or failures > len(schedule):
        return None
    return now + timedelta(seconds=schedule[failures - 1] * jitter)


_ENHANCED = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def safe_reason(code: int | None, text: str) -> str:
    """A reason to record and show: the reply code and its enhanced status code only.

    A server's reply text can quote the recipient's address, so it is never kept.
    """
    enhanced = _ENHANCED.search(text)
    parts = [str(code)] if code is not None else []
    if enhanced:
        parts.append(enhanced.group(0))
    return " ".join(parts)


# --- the due-queue ------------------------------------------------------------------------


def bucket_of(at: datetime, bucket_seconds: int) -> int:
    """The due-queue bucket a send due at `at` is filed under."""
    return int(at.timestamp()) // bucket_seconds


# --- lists --------------------------------------------------------------------------------


def window(ids: list[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """One page of a list paged by position: its ids, and the cursor of the next page (None on
    the last)."""
    start = int(cursor or 0)
    more = start + limit < len(ids)
    return ids[start : start + limit], str(start + limit) if more else None


def fallen_out(recent: list[str], keep: int) -> list[str]:
    """The oldest of a list of the latest (newest last) beyond the `keep` newest."""
    return recent[: max(0, len(recent) - keep)]


# --- access -------------------------------------------------------------------------------


def may_read(principal: Principal, patient_id: str | None) -> bool:
    """Coordinators read every case's notifications; a patient those of their own cases."""
    if principal.role == "coordinator":
        return True
    return principal.role == "patient" and patient_id is not None and principal.sub == patient_id


# --- partner webhooks ---------------------------------------------------------------------


# The case status a partner is told with each event.
WEBHOOK_STATUS = {
    WebhookEvent.CASE_SUBMITTED: "submitted",
    WebhookEvent.CASE_WITHDRAWN: "withdrawn",
    WebhookEvent.REVIEW_ASSIGNED: "assigned",
    WebhookEvent.INFORMATION_REQUESTED: "awaiting_information",
    WebhookEvent.REVIEW_RESUMED: "in_review",
    WebhookEvent.SECOND_READING_REQUESTED: "in_review",
    # Their way decides the status they carry (`translation_status`).
    WebhookEvent.TRANSLATION_QUEUED: "in_review",
    WebhookEvent.TRANSLATION_DONE: "in_review",
    WebhookEvent.FOLLOW_UP_ASKED: "follow_up_in_review",
    WebhookEvent.FOLLOW_UP_ANSWERED: "follow_up_answered",
    WebhookEvent.REPORT_READY: "report_ready",
    WebhookEvent.PHYSICIAN_COPY_SENT: "report_ready",
}


def translation_status(way: str) -> str:
    """The case's status while a translation of `way` waits or is done: `assigned` on the way
    to the specialist (they accept the case only once it is translated), `in_review` on the
    way back (the opinion is written; the report is not issued before it is translated)."""
    return "assigned" if way == "to_specialist" else "in_review"


@dataclass(frozen=True)
class PartnerScope:
    """Who may hear of a case: the partner that filed it, if the patient consented."""

    partner_id: str | None = None
    shared: bool = False


def partner_scope(partner_id: str | None, scopes: list[str]) -> PartnerScope:
    """A partner hears of a case only if it filed it and the patient consented to sharing
    (intake sends `partner_id` only with that consent; both are checked)."""
    return PartnerScope(partner_id, bool(partner_id) and "share_with_partner" in scopes)


def webhook_event(event_type: str) -> WebhookEvent | None:
    """The subscribable event of a type, if it is one."""
    try:
        return WebhookEvent(event_type)
    except ValueError:
        return None


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The delivery of one event to one subscription (its `_id`)."""
    return f"wh:{event_id}:{subscription_id}"


def webhook_id(event_id: str, subscription_id: str) -> str:
    """The `webhook-id` header: derived from the event and the subscription, so every retry
    and replay of a delivery carries the same one and the receiver can deduplicate."""
    digest = hashlib.sha256(f"{event_id}\x00{subscription_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def webhook_retry_at(
    failures: int,
    first_at: datetime,
    now: datetime,
    *,
    base: float,
    cap: float,
    window: float,
    jitter: float,
) -> datetime | None:
    """When to retry after `failures` failed attempts: exponential backoff (`base` * 2^(n-1),
    at most `cap`), scaled by `jitter` (0.5-1.0 spreads a partner's burst), for at most
    `window` seconds after the first attempt; None once that is spent (the delivery is dead)."""
    if failures < 1:
        return None
    delay = min(base * 2 ** min(failures - 1, 60), cap) * jitter
    at = now + timedelta(seconds=delay)
    return None if at > first_at + timedelta(seconds=window) else at


@dataclass(frozen=True)
class Backoff:
    """The webhooks' retry schedule (`AVIS_NOTIFY_WEBHOOK_RETRY_*`): exponential from `base`
    seconds, at most `cap` between two attempts, within `window` seconds of the first one."""

    base: float
    cap: float
    window: float


# The jitter each schedule scales its delays by: an email's +-10 %; a post's 0.5-1.0, which
# spreads a burst of retries to one endpoint.
EMAIL_JITTER = (0.9, 1.1)
POST_JITTER = (0.5, 1.0)


def retry_window_from(
    first_attempt: datetime | None, resumed_at: datetime | None, now: datetime
) -> datetime:
    """Where a send's retry window starts: its first attempt, or, for a post that waited for its
    disabled endpoint, when the endpoint was enabled again, whichever is later (a post that
    waited longer than the window still gets a whole window after the re-enabling)."""
    return max((t for t in (first_attempt, resumed_at) if t is not None), default=now)


def send_retry_at(
    failures: int,
    *,
    posted: bool,
    first_at: datetime,
    now: datetime,
    schedule: tuple[float, ...],
    backoff: Backoff,
    jitter: float,
) -> datetime | None:
    """When to try a send again after `failures` transient failures, None once given up: a
    post to an endpoint (the physician's institution's, its FHIR document) on the webhooks'
    backoff and window, counted from the send's first attempt; an email on the emails'
    schedule. `jitter` is drawn from `POST_JITTER` or `EMAIL_JITTER` to match."""
    if posted:
        return webhook_retry_at(
            failures,
            first_at,
            now,
            base=backoff.base,
            cap=backoff.cap,
            window=backoff.window,
            jitter=jitter,
        )
    return next_attempt(failures, schedule, now, jitter)


def should_disable(consecutive_failures: int, threshold: int) -> bool:
    """A subscription is disabled after `threshold` failed attempts in a row (0: never)."""
    return threshold > 0 and consecutive_failures >= threshold


def endpoint_state_holds(configured: str | None, kept_for: str) -> bool:
    """Whether an institution's kept FHIR endpoint state is its endpoint's now: a state is the
    URL's it was kept for, and an endpoint set anew starts afresh."""
    return configured is not None and configured == kept_for


def webhook_outcome(status_code: int) -> Outcome:
    """A partner's answer: 2xx delivered; 410 Gone permanent (disables); anything else retried."""
    if 200 <= status_code < 300:
        return Outcome.SENT
    return Outcome.PERMANENT if status_code == 410 else Outcome.TRANSIENT


# --- outbound safety ----------------------------------------------------------------------

# Cloud metadata services answer on these; most are link-local or private already, and are
# named so the refusal says why.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
# 6to4 (RFC 3056) embeds an IPv4 address a relay forwards to, an inside one as well; the
# mechanism is deprecated (RFC 7526), so the whole range is refused rather than its embedded
# address judged. The standard library counts both ranges as global.
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated (RFC 3879), still routed inside
# The ports a partner's endpoint may listen on; any port on loopback in development.
WEBHOOK_PORTS = (443, 8443)


def address_refusal(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool
) -> str | None:
    """Why a webhook may not connect to `ip`, or None if it may: only public unicast
    addresses, plus loopback when the development setting allows it."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_refusal(ip.ipv4_mapped, allow_loopback)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in SIX_TO_FOUR:
        return "a 6to4 address"
    if isinstance(ip, ipaddress.IPv6Address) and ip in SITE_LOCAL:
        return "a site-local address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved address"
    return None


PORT_REFUSAL = "the URL's port must be 443 or 8443"
# Names the development setting, so a developer with a receiver on this machine knows the switch.
HTTP_REFUSAL = (
    "the URL must be https:// (http:// to a loopback address is allowed in development only, "
    "with AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK=true)"
)


@dataclass(frozen=True)
class Target:
    """A webhook URL taken apart: what to resolve and how to speak to it."""

    scheme: str
    host: str
    port: int
    path: str  # path and query, as given


def url_refusal(url: str, allow_http_loopback: bool) -> tuple[Target | None, str]:
    """Parse a subscription URL: HTTPS with a host and no credentials (HTTP only for loopback,
    when the development setting allows it, checked once resolved). Returns the target, or
    None and why it is refused."""
    if len(url) > 2048:
        return None, "the URL is longer than 2048 characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, "the URL cannot be parsed"
    if parts.scheme not in ("https", "http"):
        return None, "the URL must be https://"
    if parts.scheme == "http" and not allow_http_loopback:
        return None, HTTP_REFUSAL
    if not parts.hostname:
        return None, "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return None, "the URL may not carry credentials"
    if parts.fragment:
        return None, "the URL may not carry a fragment"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return None, "the URL may not contain spaces or control characters"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    default = 443 if parts.scheme == "https" else 80
    if (port or default) not in WEBHOOK_PORTS and not allow_http_loopback:
        return None, PORT_REFUSAL
    return Target(parts.scheme, parts.hostname, port or default, path), ""


def resolved_refusal(
    target: Target, addresses: list[str], allow_loopback: bool
) -> tuple[str | None, str]:
    """Pick the address to connect to among those the host resolved to: every one must be
    allowed (a name that also points inside is refused whole), plain HTTP and ports other than
    443 and 8443 only to loopback (when allowed). Returns the address, or None and why."""
    if not addresses:
        return None, "the host does not resolve"
    ips = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None, "the host resolves to something that is not an address"
        why = address_refusal(ip, allow_loopback)
        if why is not None:
            return None, f"the host resolves to {why}"
        ips.append(ip)
    loopback = all(ip.is_loopback for ip in ips)
    if target.scheme == "http" and not loopback:
        return None, "the URL must be https:// (http:// is for loopback addresses only)"
    if target.port not in WEBHOOK_PORTS and not (allow_loopback and loopback):
        return None, PORT_REFUSAL
    return str(ips[0]), ""


def may_manage(principal: Principal, partner_id: str) -> bool:
    """A partner manages its own subscriptions only."""
    return principal.role == "partner" and principal.partner_id == partner_id


def may_see(principal: Principal, partner_id: str) -> bool:
    """A partner sees its own subscriptions and deliveries; coordinators see every partner's."""
    return principal.role == "coordinator" or may_manage(principal, partner_id)


def webhook_payload(
    *,
    event_id: str,
    event_type: WebhookEvent,
    source: str,
    time: datetime,
    case_id: str,
    reference: str | None,
    partner_reference: str | None,
    link: str,
    extra: dict[str, str | int],
    status: str | None = None,
) -> dict[str, object]:
    """A thin delivery: the CloudEvents attributes (structured JSON), and as data only ids, the
    case's status (`status`, or the one its type says: `WEBHOOK_STATUS`), the partner's own
    reference and a link; never an identity or clinical text."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": event_type.value,
        "source": source,
        "time": time.isoformat().replace("+00:00", "Z"),
        "subject": case_id,
        "datacontenttype": "application/json",
        "data": {
            "case_id": case_id,
            "reference": reference,
            "partner_reference": partner_reference,
            "status": status or WEBHOOK_STATUS[event_type],
            "link": link,
            **extra,
        },
    }


# --- what each event means, registered by payload type ------------------------------------


@dataclass(frozen=True)
class Reading:
    """What notify reads in one event: the decision for the patient's email, what that email
    shows (codes, dates and links only), and what a partner's webhook adds to its thin body
    (`status`: the case's, where the event's type alone does not say it)."""

    decision: Decision
    params: dict[str, str] = field(default_factory=dict)
    link: str | None = None
    extra: dict[str, str | int] = field(default_factory=dict)
    status: str | None = None


def page_links(pages_url: str, case_id: str) -> dict[str, str]:
    """The pages an email links to: the case's, and its report on it."""
    case_page = f"{pages_url.rstrip('/')}/cases/{quote(case_id, safe='')}"
    return {"case_url": case_page, "report_url": f"{case_page}#report"}


def physician_copy(template: Template | None, *, has_physician: bool) -> bool:
    """Whether an email to the patient also goes to their treating physician: a report ready
    or updated, when the patient consented to share it (notify then keeps the physician)."""
    return has_physician and template in (Template.REPORT_READY, Template.REPORT_UPDATED)


def fhir_endpoint(endpoints: dict[str, str], institution: str | None) -> str | None:
    """Where the physician's institution takes reports as FHIR documents, if it does (then the
    document is posted there instead of the email)."""
    return endpoints.get(institution) if institution else None


def physician_page(pages_url: str, case_id: str, secret: str, language: Language) -> str:
    """The link of the physician's email: the page of the people's pages (web) that opens the
    case's latest report for them, in their language (it says so when the link expired)."""
    base = pages_url.rstrip("/")
    path = f"/physician/{quote(case_id, safe='')}/{quote(secret, safe='')}"
    return f"{base}{path}?lang={language.value}"


def physician_link(report_url: str, case_id: str, secret: str) -> str:
    """The link that opens the case's latest report for its physician, on the reports service
    that announced it (`report_url` is one of its versions' addresses)."""
    base = report_url.split("/v1/", 1)[0].rstrip("/")
    return f"{base}/v1/cases/{quote(case_id, safe='')}/report/physician/{quote(secret, safe='')}"


@dataclass(frozen=True)
class ProfessionalWork:
    """An email to a professional that work waits for them: which, the page where they do it,
    and their address as the event sealed it."""

    template: Template
    link: str
    recipient: Sealed


def professional_work(payload: Payload, pages_url: str) -> ProfessionalWork | None:
    """The work an event gives a professional (a follow-up question to answer, a reading to do,
    comments to answer), None without one or without their address."""
    pages = pages_url.rstrip("/")
    if isinstance(payload, FollowUpAsked):
        template, page = Template.PRO_FOLLOW_UP, f"follow-ups/{quote(payload.follow_up_id)}"
    elif isinstance(payload, SecondReadingRequested):
        template = Template.PRO_SECOND_READING
        page = f"second-readings/{quote(payload.assignment_id, safe='')}"
    elif isinstance(payload, SecondReadingCommented):
        template, page = Template.PRO_COMMENTS, f"review/{quote(payload.assignment_id, safe='')}"
    elif isinstance(payload, TranslationQueued):
        template = Template.PRO_TRANSLATION
        page = f"translations/{quote(payload.translation_id, safe='')}"
    else:
        return None
    if payload.recipient is None:
        return None
    return ProfessionalWork(template, f"{pages}/{page}", payload.recipient)


def professional_language(languages: list[Language], catalogued: tuple[Language, ...]) -> Language:
    """The language a professional is written to in: the first of theirs with a catalogue
    (English when none has)."""
    return next((lang for lang in languages if lang in catalogued), Language.EN)


def claim_link(pages_url: str, case_id: str, secret: str) -> str:
    """The page where the patient claims a case a partner filed, with the one-time secret."""
    return f"{pages_url.rstrip('/')}/claim/{quote(case_id, safe='')}/{quote(secret, safe='')}"


def reading(payload: Payload, view: CaseView, tz: tzinfo) -> Reading:
    """What notify reads in an event for a case in `view`: nothing at all once the case is
    erased (no email, no webhook), else what the matrix says of its type."""
    if view.erased:
        return Reading(Decision(then=view, why="case erased", hooks=False))
    return _reading(payload, view, tz)


@functools.singledispatch
def _reading(payload: Payload, view: CaseView, tz: tzinfo) -> Reading:
    """The reading of an event of a type the matrix does not name: no email."""
    return Reading(_skip(view, "not a notified event"))


@_reading.register
def _submitted(payload: CaseSubmitted, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(on_submitted(view), params={"case_url": payload.case_url})


@_reading.register
def _assigned(payload: ReviewAssigned, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_assigned(
            view, payload.due_at.astimezone(tz).date(), international=payload.international
        ),
        params={"specialty": payload.specialty.value},
        extra={"due_at": payload.due_at.isoformat().replace("+00:00", "Z")},
    )


def _stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@_reading.register
def _information_requested(payload: InformationRequested, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_information_requested(view),
        params={"expires_date": payload.expires_at.astimezone(tz).date().isoformat()},
        extra={"request_id": payload.request_id, "expires_at": _stamp(payload.expires_at)},
    )


@_reading.register
def _resumed(payload: ReviewResumed, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_resumed(view, payload.due_at.astimezone(tz).date()),
        extra={
            "request_id": payload.request_id,
            "outcome": payload.outcome,
            "due_at": _stamp(payload.due_at),
        },
    )


@_reading.register
def _second_reading(payload: SecondReadingRequested, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_second_reading(view),
        extra={"version": payload.version, "reason": payload.reason},
    )


@_reading.register
def _translation_queued(payload: TranslationQueued, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_translation(view),
        extra=_translation(payload, due_at=payload.due_at),
        status=translation_status(payload.way),
    )


@_reading.register
def _translation_done(payload: TranslationDone, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_translation(view),
        extra=_translation(payload, done_at=payload.done_at),
        status=translation_status(payload.way),
    )


def _translation(
    payload: TranslationQueued | TranslationDone, **at: datetime
) -> dict[str, str | int]:
    """What a partner is told of a translation, with its time (`due_at` or `done_at`)."""
    told: dict[str, str | int] = {
        "translation_id": payload.translation_id,
        "way": payload.way,
        "from_language": payload.from_language.value,
        "to_language": payload.to_language.value,
    }
    return told | {name: _stamp(value) for name, value in at.items()}


@_reading.register
def _follow_up_asked(payload: FollowUpAsked, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_follow_up_asked(view),
        params={"due_date": payload.due_at.astimezone(tz).date().isoformat()},
        extra={
            "follow_up_id": payload.follow_up_id,
            "number": payload.number,
            "due_at": _stamp(payload.due_at),
        },
    )


@_reading.register
def _follow_up_answered(payload: FollowUpAnswered, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_follow_up_answered(view),
        extra={
            "follow_up_id": payload.follow_up_id,
            "number": payload.number,
            "answered_at": _stamp(payload.answered_at),
        },
    )


@_reading.register
def _report_ready(payload: ReportReady, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_report_ready(view, payload.version),
        params={"report_url": payload.report_url, "version": str(payload.version)},
        link=payload.report_url,
        extra={"report_id": payload.report_id, "version": payload.version},
    )


@_reading.register
def _physician_copy_sent(payload: PhysicianCopySent, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(
        on_physician_copy_sent(view),
        extra={
            "report_version": payload.report_version,
            "channel": payload.channel,
            "sent_at": _stamp(payload.sent_at),
        },
    )


@_reading.register
def _claimed(payload: CaseClaimed, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(on_claimed(view, payload.patient_id))


@_reading.register
def _withdrawn(payload: CaseWithdrawn, view: CaseView, tz: tzinfo) -> Reading:
    return Reading(on_withdrawn(view))


def email_params(reference: str | None, read: Reading) -> dict[str, str]:
    """What an email needs: codes, dates and links, never a name or clinical text."""
    params = {"reference": reference or "", **read.params}
    dated = (
        Template.REVIEW_ASSIGNED,
        Template.REVIEW_ABROAD,
        Template.EXPECTED_DATE_CHANGED,
        Template.REVIEW_RESUMED,
    )
    if read.decision.send in dated:
        assert read.decision.then.told_due is not None
        params["due_date"] = read.decision.then.told_due.isoformat()
    return params
