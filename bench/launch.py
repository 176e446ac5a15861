"""Start one service for a benchmark run, optionally with a null keyring.

    python bench/launch.py <service> [--null-keyring]

The null keyring seals nothing: it stores the plaintext (base64url) in the sealed format, so
the services still exchange and store every sealed field, minus AES-GCM. It exists only to
measure what sealing costs: it lives here, outside every service's package and settings, so no
production configuration can select it.
"""

import importlib
import sys

from avis.shared import sealing
from avis.shared.sealing import ALG, Keyring, Sealed, SealingError
from avis.shared.settings import CommonSettings

SERVICES = ("intake", "review", "reports", "notify")


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


def main(argv: list[str]) -> None:
    service, *flags = argv
    if service not in SERVICES:
        raise SystemExit(f"usage: launch.py {'|'.join(SERVICES)} [--null-keyring]")
    if "--null-keyring" in flags:
        Keyring.from_settings = classmethod(null_from_settings)  # type: ignore[method-assign,assignment]
    importlib.import_module(f"avis.{service}.main").run()


if __name__ == "__main__":
    main(sys.argv[1:])
