"""Configuration of the web pages: `AVIS_WEB_*` plus the shared `AVIS_*` variables."""

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

    @property
    def development(self) -> bool:
        """Whether the development sign-in (a choice of seeded identities) is on: AVIS_ENV."""
        return self.avis_env == "development"
