"""Configuration of the web pages: `AVIS_WEB_*` plus the shared `AVIS_*` variables."""

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings

MIB = 1024 * 1024


class Settings(CommonSettings):
    """Web settings."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="AVIS_WEB_", populate_by_name=True)

    service_name: str = "web"
    http_port: int = 8000

    # AVIS_WEB_INTAKE_URL ...: where web reaches each service's API (with the person's token).
    intake_url: str = "http://127.0.0.1:8001"
    review_url: str = "http://127.0.0.1:8002"
    reports_url: str = "http://127.0.0.1:8003"
    notify_url: str = "http://127.0.0.1:8004"
    # AVIS_WEB_API_TIMEOUT_SECONDS: how long one call to a service may take.
    api_timeout_seconds: float = Field(30.0, gt=0)

    # AVIS_WEB_SESSION_IDLE_MINUTES: a session unused this long ends (sign in again).
    session_idle_minutes: float = Field(30.0, gt=0, le=24 * 60)
    # AVIS_WEB_MAX_SESSIONS: sessions kept in memory at most (the oldest idle go first).
    max_sessions: int = Field(10_000, ge=10)
    # AVIS_WEB_COOKIE_SECURE: send the session cookie over HTTPS only (off for http://127.0.0.1).
    cookie_secure: bool = False
    # AVIS_WEB_MAX_UPLOAD_BYTES: the largest record the upload form passes on to intake.
    max_upload_bytes: int = Field(20 * MIB, ge=1, le=1024 * MIB)
    # AVIS_WEB_LIVE_EVENTS: read the topics and push a case's new status to its open pages.
    live_events: bool = True

    # AVIS_WEB_TOKEN_HOOK_KEY: the key the OpenID provider presents to web's token hook
    # (POST /oidc/token-hook, `Authorization: Bearer <key>`); empty, the hook answers 404.
    token_hook_key: SecretStr = SecretStr("")
    # AVIS_WEB_PARTNER_CLIENTS: the partners' machines, as JSON {"<OAuth2 client id>": "<partner
    # id>"}: a client-credentials token of such a client acts as role partner for that partner.
    partner_clients: dict[str, str] = Field(default_factory=dict)
    # AVIS_WEB_SERVICE_CLIENTS: the services' machines (an operator's script, a monitoring job),
    # as a JSON list of OAuth2 client ids: their client-credentials tokens act as role service.
    service_clients: list[str] = Field(default_factory=list)

    # AVIS_WEB_SIGNIN: how people sign in: `oidc` (the OpenID provider, its identity server
    # behind it), `development` (a choice of seeded identities, AVIS_ENV=development only) or
    # `none`; unset, development where AVIS_ENV is, else none. `make run` sets oidc.
    signin: Literal["oidc", "development", "none"] | None = None
    # AVIS_WEB_PUBLIC_URL: where browsers reach web (the provider returns there after sign-in);
    # unset, http://127.0.0.1:<http_port>.
    public_url: str = ""
    # AVIS_WEB_OIDC_ISSUER / _OIDC_ADMIN_URL / _OIDC_CLIENT_ID: the OpenID provider (Hydra) the
    # browser is sent to, its admin API (the login, consent and logout requests) and web's client.
    oidc_issuer: str = "http://127.0.0.1:4444/"
    oidc_admin_url: str = "http://127.0.0.1:4445"
    oidc_client_id: str = "avis-web"
    # AVIS_WEB_IDENTITY_URL / _IDENTITY_ADMIN_URL: the identity server (Kratos) that checks
    # passwords and second factors, and its admin API (a person's role, a session's end).
    identity_url: str = "http://127.0.0.1:4433"
    identity_admin_url: str = "http://127.0.0.1:4434"
    # AVIS_WEB_SIGNIN_RATE_LIMIT: sign-in steps one caller (address) may take, per copy of web;
    # past it a 429 with Retry-After. `10/minute;100/hour` sets two rates.
    signin_rate_limit: str = "60/minute;600/hour"

    @property
    def signin_kind(self) -> str:
        """The sign-in in force (AVIS_WEB_SIGNIN, else by AVIS_ENV)."""
        if self.signin is not None:
            return self.signin
        return "development" if self.development else "none"

    @property
    def base_url(self) -> str:
        """Web's own address, as browsers reach it."""
        return (self.public_url or f"http://127.0.0.1:{self.http_port}").rstrip("/")

    @property
    def development(self) -> bool:
        """Whether the development sign-in (a choice of seeded identities) is on: AVIS_ENV."""
        return self.avis_env == "development"
