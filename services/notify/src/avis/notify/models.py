"""API schemas of the notify service: what a coordinator or the patient sees of a case's
notifications (never the address, never the email's text)."""

from datetime import datetime

from pydantic import BaseModel, Field

from avis.notify.rules import Outcome, SendStatus, Template
from avis.notify.store import SendDoc
from avis.shared.events import Language

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
CURSOR_PATTERN = r"^[0-9]{1,6}$"


class AttemptView(BaseModel):
    """One attempt to send and what came of it."""

    at: datetime
    outcome: Outcome
    code: int | None = Field(description="The SMTP reply code, when the server gave one.")
    reason: str = Field(description="Reply and enhanced status codes; never the server's text.")


class Notification(BaseModel):
    """One notification of a case: which email, in which language, and where its sending is."""

    id: str
    case_id: str
    event_id: str = Field(description="The event that caused it.")
    channel: str
    template: Template
    language: Language
    status: SendStatus
    message_id: str = Field(description="Stable across repeats, so a duplicate is detectable.")
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    attempts: list[AttemptView]

    @classmethod
    def of(cls, send: SendDoc) -> "Notification":
        """The view of a stored send."""
        return cls(
            id=send.id,
            case_id=send.case_id,
            event_id=send.event_id,
            channel=send.channel,
            template=send.template,
            language=send.language,
            status=send.status,
            message_id=send.message_id,
            created_at=send.created_at,
            next_attempt_at=send.next_at if send.status is SendStatus.QUEUED else None,
            sent_at=send.sent_at,
            attempts=[AttemptView(**a.model_dump()) for a in send.attempts],
        )


class NotificationPage(BaseModel):
    """A page of a case's notifications, oldest first; pass `next_cursor` as `cursor`."""

    items: list[Notification]
    next_cursor: str | None
