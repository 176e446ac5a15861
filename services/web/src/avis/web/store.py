"""People's sessions, in memory: web keeps no health data and nothing on disk.

The browser holds only a signed session id (an HttpOnly, SameSite=Lax cookie); the token, the
language, the CSRF token and a request being written stay here. A restart ends every session:
the signing key is drawn anew at each start, so an old cookie is simply unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from avis.web.models import Draft, Identity, OpinionForm
from avis.web.rules import idle_expired


@dataclass
class Session:
    """One browser's session: anonymous until a sign-in puts a person and token in it."""

    id: str
    csrf: str
    last_seen: float
    language: str | None = None
    identity: Identity | None = None
    token: str | None = field(default=None, repr=False)
    draft: Draft | None = None
    # The page asked for before sign-in (a path of this site), opened once signed in.
    after: str | None = None
    # A sign-in begun at the provider: the state its return must carry, the PKCE verifier.
    pending: tuple[str, str] | None = field(default=None, repr=False)
    # Messages for the next page: (kind, catalogue key), kind "ok" or "error".
    notices: list[tuple[str, str]] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        """Whether a person is signed in."""
        return self.identity is not None and self.token is not None

    def notify(self, kind: str, key: str) -> None:
        """Show `key` on the next page."""
        self.notices.append((kind, key))

    def take_notices(self) -> list[tuple[str, str]]:
        """The notices to show now (each is shown once)."""
        taken, self.notices = self.notices, []
        return taken


class Sessions:
    """The sessions of this process, each ending after `idle_seconds` without use."""

    def __init__(
        self,
        *,
        idle_seconds: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def cookie(self, session: Session) -> str:
        """The cookie value of a session: its id and the id's signature."""
        return f"{session.id}.{self._sign(session.id)}"

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def find(self, cookie: str | None, *, touch: bool = True) -> Session | None:
        """The live session a cookie names (None: none, forged, or ended by idleness)."""
        if not cookie or cookie.count(".") != 1:
            return None
        session_id, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if idle_expired(session.last_seen, now, self.idle_seconds):
            del self._sessions[session_id]
            return None
        if touch:
            session.last_seen = now
        return session

    def new(self) -> Session:
        """A fresh anonymous session."""
        self._make_room()
        session = Session(
            id=secrets.token_urlsafe(24), csrf=secrets.token_urlsafe(32), last_seen=self._clock()
        )
        self._sessions[session.id] = session
        return session

    def renew(self, session: Session) -> Session:
        """The same session under a new id and CSRF token (at sign-in: no session fixation)."""
        self._sessions.pop(session.id, None)
        session.id = secrets.token_urlsafe(24)
        session.csrf = secrets.token_urlsafe(32)
        session.last_seen = self._clock()
        self._sessions[session.id] = session
        return session

    def end(self, session: Session) -> None:
        """Forget a session (sign-out)."""
        self._sessions.pop(session.id, None)

    def __contains__(self, session: object) -> bool:
        return isinstance(session, Session) and self._sessions.get(session.id) is session

    def __len__(self) -> int:
        return len(self._sessions)

    def _make_room(self) -> None:
        now = self._clock()
        if len(self._sessions) < self.max_sessions:
            return
        for sid, session in list(self._sessions.items()):
            if idle_expired(session.last_seen, now, self.idle_seconds):
                del self._sessions[sid]
        while len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]


class OpinionDrafts:
    """Opinions being written, in memory only, keyed by the person and the case: a reload or a
    new sign-in finds the draft; a restart, or `idle_seconds` without a save, forgets it.

    Review keeps no drafts, and web writes nothing to disk: the draft is health data.
    """

    def __init__(
        self,
        *,
        idle_seconds: float,
        max_drafts: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_seconds = idle_seconds
        self.max_drafts = max_drafts
        self._clock = clock
        self._drafts: dict[tuple[str, str], tuple[float, OpinionForm]] = {}

    def get(self, person: str, case_id: str) -> OpinionForm | None:
        """The person's draft of this case's opinion, if one is kept."""
        kept = self._drafts.get((person, case_id))
        if kept is None:
            return None
        if idle_expired(kept[0], self._clock(), self.idle_seconds):
            del self._drafts[(person, case_id)]
            return None
        return kept[1]

    def put(self, person: str, case_id: str, form: OpinionForm) -> None:
        """Keep the person's draft of this case's opinion (the newest replaces the last)."""
        self._drafts.pop((person, case_id), None)
        if len(self._drafts) >= self.max_drafts:
            # Insertion order is save order: the least recently saved goes first.
            del self._drafts[next(iter(self._drafts))]
        self._drafts[(person, case_id)] = (self._clock(), form)

    def drop(self, person: str, case_id: str) -> None:
        """Forget the draft (it was sent)."""
        self._drafts.pop((person, case_id), None)

    def __len__(self) -> int:
        return len(self._drafts)
