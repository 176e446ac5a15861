"""Configuration of the reports service: `AVIS_REPORTS_*` plus the shared `AVIS_*` variables."""

from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings


class Settings(CommonSettings):
    """Reports settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_REPORTS_", extra="ignore", populate_by_name=True
    )

    service_name: str = "reports"
    http_port: int = 8003
