"""Configuration of the notify service: `AVIS_NOTIFY_*` plus the shared `AVIS_*` variables."""

from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings


class Settings(CommonSettings):
    """Notify settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_NOTIFY_", extra="ignore", populate_by_name=True
    )

    service_name: str = "notify"
    http_port: int = 8004
