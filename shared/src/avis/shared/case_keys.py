"""Each case's data sealed under its own key, which lives in the key service and nowhere else.

A case's key is made when the case is, in the key service (`avis.shared.keys`); its reference
(the key service's id for it, never the key) is kept on the case and carried by its events. A
value sealed under it says so in its key id, `case.<reference>`, so any service opens it by
asking the key service, with its own credentials, and holds the key only in its bounded cache.
Destroying the key erases the case everywhere at once: in every store, on every topic and
dead-letter topic, and in any copy of them taken before (crypto-shredding).

Values sealed before per-case keys, and what belongs to no case (webhook secrets, the trails'
reasons and checkpoints), stay under the service's keyring, which every case ring also holds
after its case key: the case key seals, every key opens.
"""

from __future__ import annotations

from avis.shared.keys import KeyService, KeyUnavailable, KmipKeyService
from avis.shared.problems import Problem
from avis.shared.sealing import Keyring, Sealed
from avis.shared.settings import CommonSettings

CASE_KID_PREFIX = "case."


class CaseKeyDestroyed(Problem):
    """The case's key was destroyed: nothing sealed for it opens any more. An HTTP read of it
    answers 410; an event about it is acknowledged and skipped (avis.shared.kafka)."""

    def __init__(self) -> None:
        super().__init__(
            410,
            "case-erased",
            "Case erased",
            "this case's data was erased at the patient's or a coordinator's request; only its "
            "ids, status and dates remain",
        )


def case_kid(key_ref: str) -> str:
    """The key id that values sealed under the case key `key_ref` carry."""
    return f"{CASE_KID_PREFIX}{key_ref}"


def resealed(ring: Keyring, sealed: Sealed, aad: str) -> Sealed:
    """`sealed` under the ring's sealing key (a case's key), bound to the same `aad`: opened
    with whichever key of the ring sealed it (the service's keyring before per-case keys), or
    as it is when that key seals already."""
    if sealed.kid == ring.primary_kid:
        return sealed
    return ring.seal(ring.open(sealed, aad), aad)


def takes_key(current: str | None, offered: str, *, erased: bool) -> bool:
    """Whether a case a service keeps with the case key `current` (None: none yet) is brought
    under the key `offered` (avis.case.keyed.v1): unless it is erased, or already under another
    key (an older or foreign event changes nothing); the same key again goes on where a copy
    stopped."""
    return not erased and current in (None, offered)


def key_ref_of(sealed: Sealed | None) -> str | None:
    """The case key a sealed value was sealed under; None for a service key's value."""
    if sealed is None or not sealed.kid.startswith(CASE_KID_PREFIX):
        return None
    return sealed.kid.removeprefix(CASE_KID_PREFIX)


class CaseKeys:
    """The case rings of one service: its keyring led by a case's key from the key service.

    Without a key service (a development stack without one, or a unit test), cases are sealed
    under the service's keyring, as before per-case keys; production refuses to start so.
    """

    def __init__(self, keyring: Keyring, keys: KeyService | None) -> None:
        self.keyring = keyring
        self.keys = keys

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> CaseKeys:
        """The service's keyring (AVIS_SEALING_KEYS) and the key service AVIS_KMS_URL names,
        reached with this service's certificate; in production the key service is required."""
        keyring = Keyring.from_settings(settings)
        if not settings.kms_url:
            if settings.avis_env == "production":
                raise ValueError(
                    "AVIS_KMS_URL is empty: in production every case is sealed under its own "
                    "key in a key-management service; name it (kmip://host:port), or set "
                    "AVIS_ENV=development on a local stack"
                )
            return cls(keyring, None)
        return cls(keyring, KmipKeyService.from_settings(settings))

    async def create(self, case_id: str) -> str | None:
        """A new key for `case_id` in the key service; its reference (None without one)."""
        return None if self.keys is None else await self.keys.create_key(case_id)

    async def made(self, case_id: str) -> str | None:
        """The key made for `case_id` earlier, found in the key service by its name, else a new
        one: a migration stopped between making a key and recording it finds that key again
        rather than making a second (None without a key service)."""
        if self.keys is None:
            return None
        return await self.keys.find_key(case_id) or await self.keys.create_key(case_id)

    async def ring(self, key_ref: str | None) -> Keyring:
        """The ring that seals under the case key `key_ref` and opens the case's values (the
        service's keyring for a case without a key); CaseKeyDestroyed once the key is destroyed."""
        if key_ref is None or self.keys is None:
            return self.keyring
        try:
            key = await self.keys.key(key_ref)
        except KeyUnavailable:
            raise CaseKeyDestroyed() from None
        return self.keyring.led_by(case_kid(key_ref), key)

    async def opening(self, sealed: Sealed | None) -> Keyring:
        """The ring that opens `sealed` (its case's, from its key id)."""
        return await self.ring(key_ref_of(sealed))

    async def destroy(self, key_ref: str | None) -> None:
        """Destroy the case key in the key service (already gone: done before)."""
        if key_ref is None or self.keys is None:
            return
        try:
            await self.keys.destroy(key_ref)
        except KeyUnavailable:
            self.keys.forget(key_ref)

    def forget(self, key_ref: str | None) -> None:
        """Drop this process's copy of a case key (the case was erased)."""
        if key_ref is not None and self.keys is not None:
            self.keys.forget(key_ref)

    def close(self) -> None:
        """Close the connections to the key service kept open (the service stops)."""
        if self.keys is not None:
            self.keys.close()
