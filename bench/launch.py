"""Start one service for a benchmark run, optionally with a null keyring.

    python bench/launch.py <service> [--null-keyring] [--no-trail] [--sections DIR]

The null keyring seals nothing: it stores the plaintext (base64url) in the sealed format, so
the services still exchange and store every sealed field, minus AES-GCM. It exists only to
measure what sealing costs: it lives here, outside every service's package and settings, so no
production configuration can select it.

With `--no-trail`, the access trail records nothing (and so anchors nothing): the same
benchmark-only standing, to measure what the trail costs.

With `--sections DIR`, review adds up how long its matching decisions waited for the matcher's
section (this process's matching lock, then the `matcher` lease: the claim and its polls while
another copy is inside) and how long they held it (until the release), and rewrites
`DIR/review-<pid>.json` after each one: a few microseconds per decision, so the copies
benchmark can tell how much of a run the section was busy.

The web pages start with a sign-in that takes any `role:subject` (the people of the seeded
data, not only the development identities), for the same reason kept here and nowhere else.
"""

import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from avis.shared import sealing
from avis.shared.audit import AuditTrail
from avis.shared.case_keys import CaseKeys
from avis.shared.runtime import serve
from avis.shared.sealing import ALG, Keyring, Sealed, SealingError
from avis.shared.security import mint_token
from avis.shared.settings import CommonSettings
from avis.web.models import Identity
from avis.web.signin import DevelopmentSignIn, SignedIn

SERVICES = ("intake", "review", "reports", "notify", "web")


class NullKeyring(Keyring):
    """The sealed format without the cipher (benchmarks only)."""

    def __init__(self) -> None:
        super().__init__({"null": bytes(sealing.KEY_BYTES)})

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        return Sealed(alg=ALG, kid="null", nonce="AAAAAAAAAAAAAAAA", ct=sealing._b64url(plaintext))

    def open(self, sealed: Sealed, aad: str) -> bytes:
        if sealed.kid != "null":
            raise SealingError(f"key id {sealed.kid} is not in the keyring")
        return sealing._unb64url(sealed.ct, "ciphertext")


def null_from_settings(cls: type[Keyring], settings: CommonSettings) -> Keyring:
    return NullKeyring()


def null_case_keys(cls: type[CaseKeys], settings: CommonSettings) -> CaseKeys:
    return CaseKeys(NullKeyring(), None)  # no key per case: nothing is sealed at all


class AnyIdentity(DevelopmentSignIn):
    """Signs in whoever the form names as `role:subject[:partner]` (benchmarks only); the rest
    of the sign-in (its start, its end) as in development."""

    def identities(self) -> Sequence[Identity]:
        return ()

    async def complete(self, form: Mapping[str, str]) -> SignedIn | None:
        role, sub, *partner = form.get("identity", "").split(":")
        identity = Identity(sub=sub, role=role, partner_id=partner[0] if partner else None)
        token = mint_token(self._settings, sub, identity.role, identity.partner_id, 3600)
        return SignedIn(identity, token)


async def record_nothing(self: AuditTrail, *args: Any, **kwargs: Any) -> None:
    """`AuditTrail.append` without the trail (benchmarks only)."""


def time_sections(directory: Path) -> None:
    """Wrap review's `Matcher.deciding` to add up the time waiting for and inside the section."""
    from avis.review.matching import Matcher

    deciding = Matcher.deciding
    path = directory / f"review-{os.getpid()}.json"
    totals = {"sections": 0, "wait_s": 0.0, "held_s": 0.0}

    @contextlib.asynccontextmanager
    async def timed(self: Matcher, *, first: bool = False) -> AsyncIterator[None]:
        asked = entered = time.perf_counter()
        try:
            async with deciding(self, first=first):
                entered = time.perf_counter()
                yield
        finally:
            # Taken after the section's release: the time another copy could not enter.
            totals["sections"] += 1
            totals["wait_s"] += entered - asked
            totals["held_s"] += time.perf_counter() - entered
            path.write_text(json.dumps(totals))

    Matcher.deciding = timed  # type: ignore[method-assign]


def serve_web() -> None:
    from avis.web.main import create_app
    from avis.web.settings import Settings

    serve(lambda settings: create_app(settings, signin=AnyIdentity(settings)), Settings())


def main(argv: list[str]) -> None:
    service, *flags = argv
    if service not in SERVICES:
        flags_usage = "[--null-keyring] [--no-trail] [--sections DIR]"
        usage = f"usage: launch.py {'|'.join(SERVICES)} {flags_usage}"
        raise SystemExit(usage)
    if "--sections" in flags:
        time_sections(Path(flags[flags.index("--sections") + 1]))
    if "--null-keyring" in flags:
        Keyring.from_settings = classmethod(null_from_settings)  # type: ignore[method-assign,assignment]
        CaseKeys.from_settings = classmethod(null_case_keys)  # type: ignore[method-assign,assignment]
    if "--no-trail" in flags:
        AuditTrail.append = record_nothing  # type: ignore[method-assign,assignment]
    if service == "web":
        serve_web()
        return
    importlib.import_module(f"avis.{service}.main").run()


if __name__ == "__main__":
    main(sys.argv[1:])
