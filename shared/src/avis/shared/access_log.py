"""A case's access trail in plain words, as every service that keeps one shows it.

Each service that serves a case's health data keeps its own trail (avis.shared.audit: intake for
the case and its records, reports for the report), and serves it at
`GET /v1/cases/{case_id}/access-log` with the same page model, so the patient's page merges
them. What a service records is its own (its actions, in `ACTIONS` tables of its rules); who
reads, why and how it is said is common and lives here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import structlog
from fastapi import Header, Request, Response
from pydantic import BaseModel, Field

from avis.shared.audit import AuditEntry, AuditRecord, fhir_bundle
from avis.shared.case_keys import CaseKeyDestroyed, CaseKeys, key_ref_of
from avis.shared.clock import now
from avis.shared.mongo import AggregateLocks, Document, lock_key
from avis.shared.pages import Page, cursor_param
from avis.shared.problems import Problem
from avis.shared.sealing import Keyring, Sealed
from avis.shared.security import Principal
from avis.shared.text import TEXT_PATTERN

log = structlog.get_logger("avis.access")

# Why each role touches a case, as a code (a coordinator's read with a reason: break-glass).
PURPOSES = {
    "patient": "own-case",
    "partner": "filed-case",
    "reviewer": "assigned-review",
    "coordinator": "coordination",
}
# The treating physician reads the report through the link of their email, with no account.
PHYSICIAN = "physician"
PHYSICIAN_PURPOSE = "physician-copy"
# An action in plain words: done, and tried (a refusal).
Actions = Mapping[str, tuple[str, str]]


def audited(principal: Principal) -> bool:
    """Whether a caller's access goes in the trail: people's, not services' machines."""
    return principal.role in PURPOSES


def purpose_of(principal: Principal, *, reason_given: bool) -> str:
    """Why a caller touches a case, as a code: a coordinator's read with a reason is a
    break-glass read."""
    if reason_given:
        return "break-glass"
    return PURPOSES.get(principal.role, principal.role)


def record_of(
    principal: Principal,
    action: str,
    *,
    target: str | None = None,
    refused: int | None = None,
    reason: Sealed | None = None,
) -> AuditRecord:
    """What `principal` did (or was refused, with that status) as a trail entry's record; a
    sealed reason makes it a break-glass read."""
    return AuditRecord(
        actor=principal.sub,
        role=principal.role,
        action=action,
        target=target,
        outcome="allowed" if refused is None else "refused",
        status=200 if refused is None else refused,
        purpose=purpose_of(principal, reason_given=reason is not None),
        reason=reason,
    )


def seal_reason(keyring: Keyring, case_id: str, reason: str | None) -> Sealed | None:
    """A coordinator's reason as a trail entry keeps it: sealed under `keyring`'s leading key,
    opening for that case only (a reason may hold health data)."""
    return None if reason is None else keyring.seal(reason.encode(), trail_aad(case_id))


async def reasons_ring(keys: CaseKeys, page: TrailPage) -> Keyring:
    """The ring that opens the reasons of a page of one case's trail: the case's ring when a
    reason was sealed under the case's key, else the service's keyring. Once that key is
    destroyed, only the keyring: the reasons sealed under it stay unread (withheld)."""
    for entry in page.entries:
        if key_ref_of(entry.reason) is not None:
            try:
                return await keys.opening(entry.reason)
            except CaseKeyDestroyed:
                break
    return keys.keyring


def log_break_glass(principal: Principal, case_id: str, action: str, seq: int) -> None:
    """Say in the logs that a coordinator read clinical content with a reason (which the trail
    keeps sealed: the log names who, what and where, never why)."""
    log.info(
        "clinical content read with a reason",
        case_id=case_id,
        role=principal.role,
        sub=principal.sub,
        what=action,
        seq=seq,
    )


# How a service appends to a case's trail (its store's `audit`): None when folded.
Append = Callable[[str, AuditRecord, datetime, timedelta | None], Awaitable[AuditEntry | None]]


class TrailWriter:
    """Writes a service's access trail: one entry per read or write of a case's health data by
    a person (`audited`), or its refusal (the status).

    An entry is appended under the trail's own lock (`trail:<case>`), held by this copy only:
    the trail's positions are claimed by inserting their `_id`, so appends need no lock among
    the copies. A caller that holds the case's lock already says so (`locked`). A repeated
    access within its `fold` window is the last entry, but a read for a stated reason never
    is: each reason keeps its entry, sealed (a reason may hold health data), never logged.

    A reason for reading a case's content is sealed under the case's key (`ring`, the case's
    ring), so the case's erasure shreds it with the rest; a reason for a decision about the case
    (its erasure, a legal hold) under the service's keyring, for it outlives the case's data.
    """

    def __init__(
        self,
        *,
        append: Append,
        locks: AggregateLocks,
        keyring: Keyring,
        fold: Callable[[str], timedelta | None],
    ) -> None:
        self.append = append
        self.locks = locks
        self.keyring = keyring
        self.fold = fold

    async def record(
        self,
        principal: Principal,
        case_id: str,
        action: str,
        *,
        target: str | None = None,
        refused: int | None = None,
        reason: str | None = None,
        ring: Keyring | None = None,
        locked: bool = False,
    ) -> None:
        """Append what `principal` did (or was refused, with that status) to the case's trail;
        a reason is sealed under `ring` (the keyring by default)."""
        if not audited(principal):
            return
        sealed = seal_reason(ring or self.keyring, case_id, reason)
        record = record_of(principal, action, target=target, refused=refused, reason=sealed)
        fold = None if reason is not None else self.fold(action)
        if locked:
            entry = await self.append(case_id, record, now(), fold)
        else:
            async with self.locks.hold(lock_key("trail", case_id)):
                entry = await self.append(case_id, record, now(), fold)
        if reason is not None and entry is not None:
            log_break_glass(principal, case_id, action, entry.seq)

    async def record_link_read(self, case_id: str, action: str) -> None:
        """Append a read by the treating physician through the link of their email: a reader
        with no account, named by their part in the case (`PHYSICIAN`), never by the secret."""
        record = AuditRecord(
            actor=PHYSICIAN, role=PHYSICIAN, action=action, purpose=PHYSICIAN_PURPOSE
        )
        async with self.locks.hold(lock_key("trail", case_id)):
            await self.append(case_id, record, now(), self.fold(action))


def check_reason(principal: Principal, reason: str | None) -> str | None:
    """The reason a coordinator gives to read clinical content ("break-glass"), to record; 428
    when a coordinator gives none. Other readers read their own or assigned cases: no reason."""
    if principal.role != "coordinator":
        return None
    if reason is None or not reason.strip():
        raise Problem(
            428,
            "reason-required",
            "A reason is required",
            "a coordinator reading clinical content says why, in the X-Avis-Reason header",
        )
    return header_text(reason).strip()


def header_text(value: str) -> str:
    """A header's text as the client wrote it: HTTP hands header bytes over as Latin-1, and
    clients send UTF-8, so an accented letter arrives as two Latin-1 characters until read back."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 after all (or not Latin-1 bytes): kept as it came
        return value


def reader_id(case_id: str, sub: str) -> str:
    """A reader's pseudonymous id within one case: the same reader, the same id; no link
    to the same reader on another case, nor to their account (the same in every service)."""
    return hashlib.sha256(f"{case_id}:{sub}".encode()).hexdigest()[:12]


def describe(
    actions: Actions, *, role: str, you: bool, action: str, outcome: str, status: int, at: str
) -> str:
    """An access trail entry in one plain sentence."""
    who = "You" if you else f"A {role}"
    done, tried = actions.get(action, (action, action))
    if outcome == "refused":
        return f"{who} tried to {tried} on {at} and was refused ({status})."
    return f"{who} {done} on {at}."


def withheld_or(keyring: Keyring, reason: Sealed, case_id: str) -> str | None:
    """A reason in a case's trail, opened; None when `keyring` cannot open it any more (sealed
    under the case's key, which the case's erasure destroyed)."""
    if reason.kid not in keyring.kids:
        return None
    return keyring.open(reason, aad=trail_aad(case_id)).decode()


def trail_aad(case_id: str) -> str:
    """What a reason in a case's trail is sealed under: it opens for that case only."""
    return f"audit:{case_id}"


class AccessLogEntry(BaseModel):
    """One read or write of the case's health data, in plain words: who (a role and a
    pseudonymous reader id, the same for one reader throughout the case), what, when, why and
    with what outcome."""

    seq: int = Field(description="The entry's place in the trail of the service keeping it.")
    kept_by: str = Field(
        "intake", description="The service whose trail holds it: intake, review or reports."
    )
    at: datetime
    role: str = Field(description="The reader's role: patient, partner, reviewer, coordinator.")
    reader: str = Field(description="A pseudonymous id of the reader, stable within this case.")
    you: bool = Field(description="Whether the caller is that reader.")
    action: str = Field(description="What: case.read, clinical.read, report.read, ...")
    document_id: str | None = Field(None, description="The record concerned, if any.")
    outcome: str = Field(description="allowed, or refused.")
    status: int = Field(description="The HTTP status the request was answered with.")
    purpose: str = Field(description="Why: own-case, filed-case, assigned-review, break-glass.")
    reason: str | None = Field(
        None, description="A coordinator's stated reason (shown to coordinators only)."
    )
    text: str = Field(description="The entry in one plain sentence.")


# The header in which a coordinator says why they read clinical content ("break-glass").
Reason = Annotated[
    str | None,
    Header(
        alias="X-Avis-Reason",
        pattern=TEXT_PATTERN,
        max_length=200,
        description="Why a coordinator reads the clinical content (required of coordinators, "
        "428 without it; recorded). Others give none.",
    ),
]
# The `cursor` query parameter of a trail's pages.
TrailCursor = Annotated[
    str | None,
    cursor_param(r"^[0-9]{1,12}$", "`next_cursor` of the previous page (a place in the trail)."),
]


class AccessLog(Page[AccessLogEntry]):
    """One page of a case's access trail, oldest first; pass `next_cursor` as `cursor`."""


@dataclass
class TrailPage:
    """Entries of a case's access trail, oldest first, and the last position its head counts,
    kept by `service`, whose `actions` say them in plain words."""

    case_id: str
    entries: list[AuditEntry]
    last: int
    service: str
    actions: Actions

    def view(self, viewer: Principal, keyring: Keyring, limit: int) -> AccessLog:
        """The page in plain words for `viewer`: a coordinator's reason is shown to coordinators
        only (a reason may hold health data, of someone else too)."""
        items = [self._item(e, viewer, keyring) for e in self.entries[:limit]]
        after = self._next(limit)
        return AccessLog(items=items, next_cursor=None if after is None else str(after))

    def fhir(self, limit: int, next_url: Callable[[int], str]) -> Document:
        """The page as a FHIR Bundle of `AuditEvent`s for coordinators (`next_url`: the next
        page's address from its cursor)."""
        after = self._next(limit)
        link = None if after is None else next_url(after)
        return fhir_bundle(self.entries[:limit], f"avis-{self.service}", link)

    def _next(self, limit: int) -> int | None:
        """Where the next page starts (the entries hold one more than a page when there is
        one), else None."""
        return self.entries[limit - 1].seq if len(self.entries) > limit else None

    def _item(self, entry: AuditEntry, viewer: Principal, keyring: Keyring) -> AccessLogEntry:
        you = entry.actor == viewer.sub and entry.role == viewer.role
        reason = None
        if entry.reason is not None and viewer.role == "coordinator":
            reason = withheld_or(keyring, entry.reason, self.case_id)
        return AccessLogEntry(
            seq=entry.seq,
            kept_by=self.service,
            at=entry.at,
            role=entry.role,
            reader=reader_id(self.case_id, entry.actor),
            you=you,
            action=entry.action,
            document_id=entry.target,
            outcome=entry.outcome,
            status=entry.status,
            purpose=entry.purpose,
            reason=reason,
            text=describe(
                self.actions,
                role=entry.role,
                you=you,
                action=entry.action,
                outcome=entry.outcome,
                status=entry.status,
                at=entry.at.strftime("%Y-%m-%d %H:%M UTC"),
            ),
        )


FHIR_JSON = "application/fhir+json"


def fhir_response(page: TrailPage, request: Request, limit: int) -> Response:
    """A page of a trail for coordinators as a FHIR R4B Bundle of `AuditEvent`s, its `next` link
    the same request from the page's cursor on."""

    def next_url(after: int) -> str:
        return str(request.url.include_query_params(cursor=str(after), limit=limit))

    body = json.dumps(page.fhir(limit, next_url), ensure_ascii=False, separators=(",", ":"))
    return Response(body.encode(), media_type=FHIR_JSON)
