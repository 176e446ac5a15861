"""Configuration of the review service: `AVIS_REVIEW_*` plus the shared `AVIS_*` variables."""

from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings


class Settings(CommonSettings):
    """Review settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_REVIEW_", extra="ignore", populate_by_name=True
    )

    service_name: str = "review"
    http_port: int = 8002
