"""Configuration of the notify service: `AVIS_NOTIFY_*` plus the shared `AVIS_*` variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings, shared_env


class Settings(CommonSettings):
    """Notify settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_NOTIFY_", extra="ignore", populate_by_name=True
    )

    service_name: str = "notify"
    http_port: int = 8004
    smtp_url: str = Field("smtp://127.0.0.1:1025", validation_alias=shared_env("SMTP_URL"))
