"""Configuration of the intake service: `AVIS_INTAKE_*` plus the shared `AVIS_*` variables."""

from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings


class Settings(CommonSettings):
    """Intake settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_INTAKE_", extra="ignore", populate_by_name=True
    )

    service_name: str = "intake"
    http_port: int = 8001
