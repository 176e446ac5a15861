"""Sign-in behind one seam: web asks a `SignIn` who the person is and keeps the token it gets.

Development signs in as one of the seeded identities with a development token; `OidcSignIn`
(avis.web.oidc_signin) signs people in through the OpenID provider, never with passwords of our
own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from avis.shared.security import mint_token
from avis.shared.settings import CommonSettings
from avis.web.models import DEVELOPMENT_IDENTITIES, Identity

TOKEN_SECONDS = 8 * 3600


@dataclass(frozen=True)
class SignedIn:
    """A person and the token web calls the services with on their behalf."""

    identity: Identity
    token: str


@dataclass(frozen=True)
class Started:
    """A sign-in begun elsewhere: where the browser goes, and what its return must match."""

    url: str
    state: str
    verifier: str = field(repr=False)


class SignIn(Protocol):
    """How a person proves who they are."""

    def identities(self) -> Sequence[Identity]:
        """The identities the sign-in page offers to pick from (none: no sign-in here)."""
        ...

    def start(self) -> Started | None:
        """Where the browser goes to sign in; None: the form on web's sign-in page decides."""
        ...

    async def complete(self, form: Mapping[str, str]) -> SignedIn | None:
        """The person the sign-in form names, with their token; None if refused."""
        ...

    async def end(self, cookies: str) -> str | None:
        """End what the sign-in keeps beyond web's session; where the browser goes then (None:
        web's sign-in page)."""
        ...


class DevelopmentSignIn:
    """Pick a seeded identity; web mints its development token (AVIS_ENV=development only)."""

    def __init__(self, settings: CommonSettings) -> None:
        self._settings = settings

    def identities(self) -> Sequence[Identity]:
        """The seeded development identities."""
        return DEVELOPMENT_IDENTITIES

    def start(self) -> Started | None:
        """The choice is made on web's page."""
        return None

    async def end(self, cookies: str) -> str | None:
        """Nothing is kept beyond web's session."""
        return None

    async def complete(self, form: Mapping[str, str]) -> SignedIn | None:
        """The identity picked, if it is one of the seeded ones."""
        chosen = next((i for i in DEVELOPMENT_IDENTITIES if i.sub == form.get("identity")), None)
        if chosen is None:
            return None
        token = mint_token(
            self._settings, chosen.sub, chosen.role, chosen.partner_id, TOKEN_SECONDS
        )
        return SignedIn(chosen, token)


class NoSignIn:
    """No sign-in configured yet (outside development, until the OpenID provider)."""

    def identities(self) -> Sequence[Identity]:
        """None."""
        return ()

    def start(self) -> Started | None:
        """Nowhere to go."""
        return None

    async def end(self, cookies: str) -> str | None:
        """Nothing to end."""
        return None

    async def complete(self, form: Mapping[str, str]) -> SignedIn | None:
        """Always refused."""
        return None
