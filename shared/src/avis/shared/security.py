"""Bearer JWT authentication: who is calling, verified against configured keys only.

HS256 with a shared secret is for development only (AVIS_ENV=development): in production a
service holding a secret refuses to start, so a JWKS can never sit beside a secret anyone with
the repository could sign with. Deployments verify RS256/ES256 tokens against a JWKS. The
algorithm a token names is checked against what is configured before any key is chosen, so
`alg=none` and algorithm confusion (an RSA public key used as an HMAC secret) have no way in.

Every token must name its issuer (the JWKS's AVIS_JWT_ISSUER; `avis-token`'s development
issuer for HS256), the audience, when it was issued (`iat`, not in the future) and when it
expires, at most AVIS_JWT_MAX_LIFETIME_SECONDS later. It must be an access token: its header
says `typ: at+jwt` (RFC 9068 2.1, checked as its section 4 asks). That header is the one mark
that tells an access token from an ID token for sure: an ID token of the code flow need not
carry a `nonce`, nor an access token a `scope`, so claims alone would let some ID tokens in.

A provider that types its access tokens plain `JWT` (Ory Hydra v2.3, whose ID tokens say `JWT`
too) is configured with AVIS_JWT_ACCESS_TOKEN_MARK=client_id: its RS256/ES256 tokens typed `JWT`
pass only with the `client_id` claim RFC 9068 2.2 requires of an access token and OpenID
Connect never puts in an ID token (our consent screens add no such claim), beside `jti`; and an
ID token's audience is its client, never the services' AVIS_JWT_AUDIENCE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import anyio.to_thread
import jwt
from cachetools import TLRUCache
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from avis.shared.problems import FORBIDDEN, UNAUTHORIZED, Problem
from avis.shared.settings import CommonSettings

Role = Literal["patient", "partner", "reviewer", "coordinator", "translator", "service"]
ROLES: tuple[Role, ...] = get_args(Role)
HS256 = "HS256"
JWKS_ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key must be at least as long as the hash
MAX_TOKEN_CHARS = 8192  # bounds the work an unauthenticated caller can ask for
REALM = "avis"
DEV_ISSUER = "avis-development"  # the issuer of `avis-token`'s HS256 tokens
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})  # RFC 9068 2.1
# The header typ of a JWKS access token under AVIS_JWT_ACCESS_TOKEN_MARK=client_id (Hydra's),
# and the claims that must then mark it as an access token (RFC 9068 2.2).
PLAIN_TYPE = "jwt"
CLIENT_ID_MARK_CLAIMS = ("client_id", "jti")
AccessTokenMark = Literal["typ", "client_id"]
# A JWKS over plain http is taken only from this machine, and only in development.
_LOOPBACK_HTTP = re.compile(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?/")
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "role", "aud"]
# Tokens verified lately, known again without decoding: a caller sends the same token with
# each request, and a write is checked twice (the rate limit's caller, the route's). Known at
# most this long after its verification (a key dropped from the JWKS meanwhile is honoured that
# much longer), never past the token's own exp.
KNOWN_TOKENS = 4096
REMEMBER_SECONDS = 30.0
# SHA-256 of the HS256 secrets written in this repository (docker-compose.yml's default, the
# test suite's, the benchmarks'): anyone who can read the repository can sign with them. The
# digests, not the secrets, so this list adds none.
COMMITTED_SECRET_DIGESTS = frozenset(
    {
        "8274a2d44e88afde432f6512cc9070a3d67189b913eac99cb599990f4045da3a",  # docker-compose.yml
        "089bc8f78135a157ac401e61b89bd45041dae08e263e9b6ccb0401dff3a3cb07",  # tests/conftest.py
        "2909d7306910ab0238df43312d42c8f0f20a30d8bef31385bd104e9fb43ec0df",  # bench/
        "4774984c4ed300d1d63a99eb823b8de8737a6f9cd28dcc3623930782c4245136",  # unit tests
        "bd913ff68243d41b9611b2690dfbf2b0f6e42ea14536a98232af60e9f64ffdaa",  # unit tests
        "3923fb8348df77529b04f6f536b8204856d0501d031063de795c57ad693b288f",  # unit tests
    }
)
_SHOWABLE_ALG = re.compile(r"^[A-Za-z0-9]{1,16}$")


class Principal(BaseModel):
    """The authenticated caller: subject, role and, for a partner, the partner it acts for."""

    model_config = ConfigDict(frozen=True)

    sub: str
    role: Role
    partner_id: str | None = None


class InvalidToken(Exception):
    """The token is refused; the message says why and never quotes the token."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched, so no RS256/ES256 token can be verified right now."""


def _check_secret(secret: str) -> None:
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ValueError(f"AVIS_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256")


def is_committed_secret(secret: str) -> bool:
    """Whether `secret` is one of the HS256 secrets written in this repository."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest() in COMMITTED_SECRET_DIGESTS


def refuse_secret_in_production(settings: CommonSettings) -> None:
    """ValueError, saying why, if a production service holds an HS256 secret."""
    secret = settings.jwt_secret.get_secret_value()
    if settings.avis_env != "production" or not secret:
        return
    if is_committed_secret(secret):
        why = "is committed in the Avis repository: anyone can sign tokens with it"
    elif settings.jwt_jwks:
        why = "is set beside AVIS_JWT_JWKS: tokens signed with it would pass as the provider's"
    else:
        why = "is for development only: HS256 tokens are refused in production"
    raise ValueError(
        f"AVIS_JWT_SECRET {why}. AVIS_ENV is production: verify the provider's tokens with "
        "AVIS_JWT_JWKS and AVIS_JWT_ISSUER and unset AVIS_JWT_SECRET, or set "
        "AVIS_ENV=development on a local stack"
    )


def _load_jwks(source: str, *, development: bool = False) -> jwt.PyJWKSet | jwt.PyJWKClient:
    if source.startswith("https://") or (development and _LOOPBACK_HTTP.match(source)):
        # The set is cached for 5 minutes; an unknown kid triggers a refetch (rotation), and no
        # per-key cache, so a key withdrawn from the set stops verifying once the set expires.
        return jwt.PyJWKClient(source, cache_keys=False, lifespan=300, timeout=5)
    if "://" in source:
        raise ValueError(
            "AVIS_JWT_JWKS must be a file path or an https URL (http only on loopback, in "
            "development)"
        )
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        keys = [k for k in data.get("keys", []) if isinstance(k, dict) and k.get("use") != "enc"]
        return jwt.PyJWKSet(keys)
    except (OSError, ValueError, AttributeError, jwt.PyJWTError) as exc:
        raise ValueError(f"AVIS_JWT_JWKS {source}: cannot load a JWKS ({exc})") from None


class TokenVerifier:
    """Verifies bearer JWTs: HS256 with the dev secret, RS256/ES256 with JWKS keys."""

    def __init__(
        self,
        *,
        audience: str,
        secret: str | None = None,
        jwks: jwt.PyJWKSet | jwt.PyJWKClient | None = None,
        issuer: str = "",
        max_lifetime: int = 3600,
        leeway: float = LEEWAY_SECONDS,
        access_token_mark: AccessTokenMark = "typ",  # noqa: S107 (a kind of mark, no secret)
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret and jwks is None:
            raise ValueError("no token keys configured: set AVIS_JWT_SECRET or AVIS_JWT_JWKS")
        if secret:
            _check_secret(secret)
        if jwks is not None and not issuer:
            raise ValueError("AVIS_JWT_ISSUER is required with AVIS_JWT_JWKS: the provider's iss")
        if not audience:
            raise ValueError("a token audience is required")
        self.audience = audience
        self.issuer = issuer
        self.max_lifetime = max_lifetime
        self._secret = secret or None
        self._jwks = jwks
        self._leeway = leeway
        self._mark = access_token_mark
        # sha256 of a token -> its principal and its exp (`known`).
        self._known: TLRUCache[bytes, tuple[Principal, float]] = TLRUCache(
            KNOWN_TOKENS, ttu=_known_until, timer=clock
        )
        self._known_lock = threading.Lock()  # `verify` runs in worker threads

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> TokenVerifier:
        """A verifier for the keys configured in AVIS_JWT_SECRET and AVIS_JWT_JWKS; ValueError
        for a secret in production."""
        refuse_secret_in_production(settings)
        development = settings.avis_env == "development"
        jwks = _load_jwks(settings.jwt_jwks, development=development) if settings.jwt_jwks else None
        return cls(
            audience=settings.jwt_audience,
            secret=settings.jwt_secret.get_secret_value() or None,
            jwks=jwks,
            issuer=settings.jwt_issuer,
            max_lifetime=settings.jwt_max_lifetime_seconds,
            access_token_mark=settings.jwt_access_token_mark,
        )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms this verifier accepts, given its keys."""
        return ((HS256,) if self._secret else ()) + (JWKS_ALGORITHMS if self._jwks else ())

    def verify(self, token: str) -> Principal:
        """The principal a token names; InvalidToken if it is not one we issued and still valid."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            shown = alg if isinstance(alg, str) and _SHOWABLE_ALG.match(alg) else "(unreadable)"
            raise InvalidToken(
                f"token algorithm {shown} is refused; accepted: {', '.join(self.algorithms)}"
            )
        typ = header.get("typ")
        typed = isinstance(typ, str) and typ.lower() in ACCESS_TOKEN_TYPES
        # Hydra's access tokens say typ JWT: then the client_id claim marks them (checked below).
        by_claims = not typed and self._mark == "client_id" and alg != HS256
        if not typed and not (by_claims and isinstance(typ, str) and typ.lower() == PLAIN_TYPE):
            raise InvalidToken("token is not an access token (its header lacks typ at+jwt)")
        key = self._key_for(alg, header.get("kid"))
        claims = self._decode(token, key, alg)
        if by_claims and not all(isinstance(claims.get(c), str) for c in CLIENT_ID_MARK_CLAIMS):
            raise InvalidToken("token is not an access token (typ JWT without a client_id)")
        lifetime = _lifetime(claims)
        if lifetime > self.max_lifetime:
            raise InvalidToken(
                f"token lives too long ({lifetime:g} s from iat to exp; "
                f"at most {self.max_lifetime} s)"
            )
        principal = _principal(claims)
        with self._known_lock:
            self._known[_digest(token)] = (principal, float(claims["exp"]))
        return principal

    def known(self, token: str) -> Principal | None:
        """The principal of `token` if `verify` took it lately (`REMEMBER_SECONDS`) and it has
        not expired since: no decoding, no key, nothing that blocks. None otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            return None  # never verified: `verify` refuses it
        with self._known_lock:
            entry = self._known.get(_digest(token))
        return None if entry is None else entry[0]

    async def principal_of(self, token: str) -> Principal:
        """`verify`, unless the token is `known`: then no worker thread (fetching a JWKS over
        HTTPS blocks, so a verification runs in one)."""
        principal = self.known(token)
        if principal is None:
            principal = await anyio.to_thread.run_sync(self.verify, token)
        return principal

    def _decode(self, token: str, key: str | jwt.PyJWK, alg: str) -> dict[str, Any]:
        issuer = DEV_ISSUER if alg == HS256 else self.issuer
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audience,
                issuer=issuer,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token has expired") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"token audience is wrong; expected {self.audience}") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"token issuer is wrong; expected {issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token lacks the {exc.claim} claim") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidIssuedAtError:
            raise InvalidToken("token iat is not a number") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("token algorithm does not match its key") from None
        except jwt.DecodeError:
            raise InvalidToken("token is malformed") from None
        except jwt.PyJWTError:
            raise InvalidToken("token is invalid") from None

    def _key_for(self, alg: str, kid: object) -> str | jwt.PyJWK:
        if alg == HS256:
            assert self._secret is not None
            return self._secret
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("token key id is malformed")
        if isinstance(self._jwks, jwt.PyJWKClient):
            if kid is None:
                raise InvalidToken("token has no key id (kid)")
            try:
                return self._jwks.get_signing_key(kid)
            except jwt.PyJWKClientConnectionError:
                raise KeysUnavailable("the JWKS cannot be fetched") from None
            except jwt.PyJWKClientError:
                raise InvalidToken("token key id is unknown") from None
        assert self._jwks is not None
        if kid is None:
            # Without a kid the only safe choice is the one key that fits the algorithm.
            fitting = [k for k in self._jwks if k.algorithm_name == alg]
            if len(fitting) != 1:
                raise InvalidToken("token has no key id (kid)")
            return fitting[0]
        try:
            return self._jwks[kid]
        except KeyError:
            raise InvalidToken("token key id is unknown") from None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _known_until(_token: bytes, entry: tuple[Principal, float], now: float) -> float:
    """A verified token is known `REMEMBER_SECONDS` at most, never past its exp."""
    return min(entry[1], now + REMEMBER_SECONDS)


def _lifetime(claims: dict[str, Any]) -> float:
    """Seconds from `iat` to `exp`, both JSON numbers (the library also takes "123" strings)."""
    iat, exp = claims["iat"], claims["exp"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (iat, exp)):
        raise InvalidToken("token iat and exp must be numbers")
    return float(exp - iat)


def _principal(claims: dict[str, Any]) -> Principal:
    sub, role, partner_id = claims.get("sub"), claims.get("role"), claims.get("partner_id")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("token subject is empty")
    if role not in ROLES:
        raise InvalidToken(f"token role is not one of {', '.join(ROLES)}")
    if partner_id is not None and (not isinstance(partner_id, str) or not partner_id):
        raise InvalidToken("token partner_id is malformed")
    if role == "partner" and partner_id is None:
        raise InvalidToken("a partner token needs a partner_id claim")
    return Principal(sub=sub, role=role, partner_id=partner_id)


def _unauthorized(detail: str, *, invalid_token: bool = True) -> Problem:
    # RFC 6750 3.1: no error code when the request carried no credentials at all.
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid_token else "")
    return Problem(
        401, UNAUTHORIZED, "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )


# Declares the bearer scheme in OpenAPI; the header itself is parsed below, to say what is wrong.
_bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT")


async def authenticated(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)] = None,
) -> Principal:
    """FastAPI dependency: the caller named by a valid `Authorization: Bearer` token, or 401.
    A token not verified lately is verified in a worker thread (`principal_of`)."""
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("app.state.token_verifier is not set; the app factory must set it")
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("missing Authorization header", invalid_token=False)
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _unauthorized("Authorization header must use the Bearer scheme")
    token = token.strip()
    if not token:
        raise _unauthorized("bearer token is empty")
    try:
        return await verifier.principal_of(token)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    except KeysUnavailable as exc:
        raise Problem(
            503, "keys-unavailable", "Service Unavailable", str(exc), headers={"Retry-After": "5"}
        ) from None


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A FastAPI dependency: the authenticated caller if its role is one of `roles`, else 403."""
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise ValueError(f"require_roles needs roles among {ROLES}; got {roles}")
    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if principal.role not in allowed:
            raise Problem(
                403,
                FORBIDDEN,
                "Forbidden",
                f"role {principal.role} may not do this; allowed: {', '.join(roles)}",
            )
        return principal

    return dependency


def mint_token(
    settings: CommonSettings,
    sub: str,
    role: Role,
    partner_id: str | None = None,
    ttl_seconds: int = 3600,
) -> str:
    """An HS256 access token signed with the development secret, for local use and tests; only
    a service in development (AVIS_ENV=development) accepts it."""
    secret = settings.jwt_secret.get_secret_value()
    if not secret:
        raise ValueError("AVIS_JWT_SECRET is empty; minting needs the development secret")
    _check_secret(secret)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "partner" and not partner_id:
        raise ValueError("a partner token needs a partner_id")
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": DEV_ISSUER,
        "sub": sub,
        "role": role,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if partner_id:
        claims["partner_id"] = partner_id
    return jwt.encode(claims, secret, algorithm=HS256, headers={"typ": "at+jwt"})


def mint_main(argv: Sequence[str] | None = None) -> int:
    """Print a development token signed with AVIS_JWT_SECRET (the `avis-token` command)."""
    parser = argparse.ArgumentParser(prog="avis-token", description=mint_main.__doc__)
    parser.add_argument("--sub", required=True, help="the subject (a pseudonymous id)")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--partner-id", default=None, help="required with --role partner")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until expiry")
    args = parser.parse_args(argv)
    try:
        print(mint_token(CommonSettings(), args.sub, args.role, args.partner_id, args.ttl))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(mint_main())
