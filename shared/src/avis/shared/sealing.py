"""Sealed fields: the one format for sensitive data inside events (AES-256-GCM, rotating keys).

A sealed value is bound to its event by using the event id as associated data, so it cannot be
cut out of one event and pasted into another. The keyring maps key ids to keys; the first key
seals, every key opens, so a key is retired only after nothing sealed under it is still read.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar

import pydantic_core
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avis.shared.settings import CommonSettings

ALG: Final = "A256GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_B64URL_PATTERN = r"^[A-Za-z0-9_-]+$"
_KID_RE = re.compile(KID_PATTERN)
ENV_VAR = "AVIS_SEALING_KEYS"
M = TypeVar("M", bound=BaseModel)


class SealingError(ValueError):
    """A sealed value cannot be opened: unknown key id, malformed, tampered or misplaced."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SealingError(f"sealed {what} is not valid base64url") from None
    # The standard decoder skips stray characters and ignores trailing bits; insisting on the
    # canonical form keeps exactly one encoding per value.
    if _b64url(raw) != text:
        raise SealingError(f"sealed {what} is not canonical base64url")
    return raw


class Sealed(BaseModel):
    """A value sealed with AES-256-GCM: key id, nonce and ciphertext+tag, base64url unpadded."""

    model_config = ConfigDict(frozen=True)

    alg: Literal["A256GCM"]
    kid: str = Field(pattern=KID_PATTERN)
    nonce: str = Field(pattern=_B64URL_PATTERN)
    ct: str = Field(pattern=_B64URL_PATTERN)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The ciphertext is not secret but can be long; logs only need enough to tell values apart.
        yield "alg", self.alg
        yield "kid", self.kid
        yield "ct", f"{self.ct[:12]}...({len(self.ct)} chars)"


def _decode_key(kid: str, text: str) -> bytes:
    # Accept standard and url-safe alphabets, padded or not; never echo the key in errors.
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        key = base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"sealing key {kid!r} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(
            f"sealing key {kid!r} is {len(key)} bytes; AES-256 needs exactly {KEY_BYTES}"
        )
    return key


# SHA-256 of the sealing keys written in this repository (docker-compose.yml's development
# default): the digests, not the keys, so this list adds none.
COMMITTED_KEY_DIGESTS: Final = frozenset(
    {"f0e896ff14f5f9e2421e5beb72ae54b2ee3c7eff7428ea7946189d1f423e0307"}  # docker-compose.yml
)


def _committed_key(key: bytes) -> bool:
    return hashlib.sha256(key).hexdigest() in COMMITTED_KEY_DIGESTS


def _parse_keys(text: str) -> dict[str, bytes]:
    text = text.strip()
    if not text:
        raise ValueError(f"{ENV_VAR} is empty: generate one with `python -m avis.shared.sealing`")
    pairs: list[tuple[str, str]]
    if text.startswith("{"):
        try:
            # Keep pairs rather than a dict so a repeated key id is reported, not overwritten.
            loaded = json.loads(text, object_pairs_hook=lambda p: p)
        except json.JSONDecodeError:
            raise ValueError(f"{ENV_VAR} looks like JSON but does not parse") from None
        if not isinstance(loaded, list) or not all(isinstance(v, str) for _, v in loaded):
            raise ValueError(f"{ENV_VAR}: every key must be a base64 string")
        pairs = loaded
    else:
        pairs = []
        for item in text.split(","):
            kid, sep, value = item.partition(":")
            if not sep:
                raise ValueError(f"{ENV_VAR}: entries must look like <key id>:<base64 key>")
            pairs.append((kid.strip(), value))
    keys: dict[str, bytes] = {}
    for kid, value in pairs:
        if not _KID_RE.match(kid):
            raise ValueError(f"{ENV_VAR}: key id {kid!r} must match {KID_PATTERN}")
        if kid in keys:
            raise ValueError(f"{ENV_VAR}: key id {kid!r} appears twice")
        keys[kid] = _decode_key(kid, value)
    if not keys:
        raise ValueError(f"{ENV_VAR} holds no key")
    return keys


def _aad(aad: str) -> bytes:
    if not aad:
        raise ValueError("associated data (the event id) must not be empty")
    return aad.encode("utf-8")


class Keyring:
    """Key id -> AES-256 key, in order: the first key seals, every key opens."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for kid, key in keys.items():
            if not _KID_RE.match(kid):
                raise ValueError(f"key id {kid!r} must match {KID_PATTERN}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"sealing key {kid!r} must be {KEY_BYTES} bytes")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self._keys = dict(keys)
        self._primary = next(iter(keys))

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Read `{"k1": "<base64>", ...}` or `k1:<base64>,k2:<base64>`; the first key seals."""
        return cls(_parse_keys(text))

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Keyring:
        """The keyring configured in `AVIS_SEALING_KEYS`; in production, none of its keys may be
        one written in this repository (docker-compose.yml's development default)."""
        keys = _parse_keys(settings.sealing_keys.get_secret_value())
        if settings.avis_env == "production":
            committed = [kid for kid, key in keys.items() if _committed_key(key)]
            if committed:
                raise ValueError(
                    f"{ENV_VAR}: key {', '.join(committed)} is committed in the Avis repository, "
                    "so anyone can open what it seals. AVIS_ENV is production: generate keys with "
                    "`python -m avis.shared.sealing` and keep them in a secret store, or set "
                    "AVIS_ENV=development on a local stack"
                )
        return cls(keys)

    @property
    def primary_kid(self) -> str:
        """The key id new values are sealed under."""
        return self._primary

    @property
    def kids(self) -> tuple[str, ...]:
        """Every key id in the ring, sealing key first."""
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        return f"Keyring(kids={list(self._ciphers)!r})"

    def led_by(self, kid: str, key: bytes) -> Keyring:
        """This keyring with `key` first: it seals, and every key of this ring still opens."""
        return Keyring({kid: key, **{k: v for k, v in self._keys.items() if k != kid}})

    def derive(self, purpose: str, kid: str | None = None) -> tuple[str, bytes]:
        """A 32-byte key for `purpose` (HKDF-SHA256 of key `kid`, the sealing key by default),
        and the key id it comes from: a digest keyed with it is checked again under that id
        after a rotation. KeyError if `kid` is not in the keyring."""
        kid = self._primary if kid is None else kid
        hkdf = HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=purpose.encode())
        return kid, hkdf.derive(self._keys[kid])

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        """Seal `plaintext` under the first key, bound to `aad` (the event id)."""
        nonce = os.urandom(NONCE_BYTES)
        ct = self._ciphers[self._primary].encrypt(nonce, plaintext, _aad(aad))
        return Sealed(alg=ALG, kid=self._primary, nonce=_b64url(nonce), ct=_b64url(ct))

    def open(self, sealed: Sealed, aad: str) -> bytes:
        """The plaintext of `sealed`; SealingError unless it is intact and was sealed for `aad`."""
        if sealed.alg != ALG:
            raise SealingError(f"sealing algorithm {sealed.alg!r} is not supported")
        cipher = self._ciphers.get(sealed.kid)
        if cipher is None:
            raise SealingError(f"key id {sealed.kid} is not in the keyring")
        nonce = _unb64url(sealed.nonce, "nonce")
        if len(nonce) != NONCE_BYTES:
            raise SealingError(f"sealed nonce must be {NONCE_BYTES} bytes")
        ct = _unb64url(sealed.ct, "ciphertext")
        if len(ct) < TAG_BYTES:
            raise SealingError("sealed ciphertext is shorter than its authentication tag")
        try:
            return cipher.decrypt(nonce, ct, _aad(aad))
        except InvalidTag:
            raise SealingError(
                f"sealed value under key id {sealed.kid} failed authentication: "
                "tampered, or sealed for another event"
            ) from None

    def seal_json(self, obj: Mapping[str, Any] | BaseModel, aad: str) -> Sealed:
        """Seal a JSON object (a mapping or a pydantic model) bound to `aad`."""
        if isinstance(obj, BaseModel):
            data = obj.model_dump_json().encode("utf-8")
        else:
            # pydantic's encoder handles datetimes, UUIDs and models nested in plain dicts.
            data = pydantic_core.to_json(dict(obj))
        return self.seal(data, aad)

    def open_json(self, sealed: Sealed, aad: str) -> dict[str, Any]:
        """Open a value sealed with `seal_json`; SealingError if it is not a JSON object."""
        data = self.open(sealed, aad)
        try:
            obj = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SealingError("sealed value is not JSON") from None
        if not isinstance(obj, dict):
            raise SealingError("sealed value is not a JSON object")
        return obj

    def open_model(self, sealed: Sealed, aad: str, model: type[M]) -> M:
        """Open a sealed value as `model` (a contract of `avis.shared.events`)."""
        data = self.open(sealed, aad)
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            # The fields' values are health data: name the fields, never quote them.
            fields = sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            raise SealingError(f"sealed {model.__name__} is invalid at {fields}") from None


def generate_key() -> str:
    """A fresh random AES-256 key, base64-encoded."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def new_kid(existing: Sequence[str] = (), today: dt.date | None = None) -> str:
    """A key id from today's date (`k20250131`), suffixed when that id is already taken."""
    base = f"k{(today or dt.datetime.now(dt.UTC).date()):%Y%m%d}"
    kid, n = base, 1
    while kid in existing:
        n += 1
        kid = f"{base}-{n}"
    return kid


def main(argv: Sequence[str] | None = None) -> int:
    """Print a keyring value for AVIS_SEALING_KEYS: a new key, first, before any kept keys."""
    parser = argparse.ArgumentParser(prog="python -m avis.shared.sealing", description=main.__doc__)
    parser.add_argument(
        "--rotate",
        action="store_true",
        help=f"keep the keys currently in ${ENV_VAR} after the new one (they still open)",
    )
    args = parser.parse_args(argv)
    kept: list[tuple[str, str]] = []
    if args.rotate:
        try:
            current = _parse_keys(os.environ.get(ENV_VAR, ""))
        except ValueError as exc:
            parser.error(str(exc))
        kept = [(kid, base64.b64encode(key).decode("ascii")) for kid, key in current.items()]
    kid = new_kid([k for k, _ in kept])
    print(",".join(f"{k}:{v}" for k, v in [(kid, generate_key()), *kept]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
