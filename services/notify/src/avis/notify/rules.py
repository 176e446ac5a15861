"""Pure decisions of the notify service: which email an event causes (the notification matrix),
how a send's failure is handled (retry schedule), and who may read what. No I/O."""

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum

from avis.shared.security import Principal


class Template(StrEnum):
    """The emails notify sends to the patient."""

    CASE_RECEIVED = "case_received"
    REVIEW_ASSIGNED = "review_assigned"
    EXPECTED_DATE_CHANGED = "expected_date_changed"
    REPORT_READY = "report_ready"
    REPORT_UPDATED = "report_updated"
    CASE_WITHDRAWN = "case_withdrawn"


@dataclass(frozen=True)
class CaseView:
    """What notify remembers of a case: enough to decide the next email."""

    submitted: bool = False
    withdrawn: bool = False
    told_due: date | None = None  # the expected date the patient was last told
    report_version: int = 0  # the highest report version the patient was told about


@dataclass(frozen=True)
class Decision:
    """What an event does: park it (its case is not known yet), or move the case on and
    perhaps send one email."""

    park: bool = False
    send: Template | None = None
    then: CaseView = field(default_factory=CaseView)
    why: str = ""


def _park(view: CaseView) -> Decision:
    return Decision(park=True, then=view, why="case not submitted yet")


def _skip(view: CaseView, why: str) -> Decision:
    return Decision(then=view, why=why)


def on_submitted(view: CaseView) -> Decision:
    """`avis.case.submitted.v1`: case received, once."""
    if view.submitted:
        return _skip(view, "already received")
    return Decision(send=Template.CASE_RECEIVED, then=replace(view, submitted=True))


def on_assigned(view: CaseView, due: date) -> Decision:
    """`avis.review.assigned.v1`: the first assignment tells the expected date; a later one
    (after a decline) tells only a moved date."""
    if not view.submitted:
        return _park(view)
    if view.withdrawn:
        return _skip(view, "withdrawn")
    if view.told_due is None:
        return Decision(send=Template.REVIEW_ASSIGNED, then=replace(view, told_due=due))
    if due == view.told_due:
        return _skip(view, "reassigned, same expected date")
    return Decision(send=Template.EXPECTED_DATE_CHANGED, then=replace(view, told_due=due))


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


class SendStatus(StrEnum):
    """Where a queued send is."""

    QUEUED = "queued"  # waiting for its first attempt or its next retry
    SENT = "sent"  # the server accepted it (250)
    FAILED = "failed"  # refused for good (5xx), or retries exhausted


class Outcome(StrEnum):
    """What one attempt came to."""

    SENT = "sent"
    TRANSIENT = "transient"  # 4xx, connection refused or dropped, timeout: retried
    PERMANENT = "permanent"  # 5xx: not retried


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


# --- access -------------------------------------------------------------------------------


def may_read(principal: Principal, patient_id: str | None) -> bool:
    """Coordinators read every case's notifications; a patient those of their own cases."""
    if principal.role == "coordinator":
        return True
    return principal.role == "patient" and patient_id is not None and principal.sub == patient_id
