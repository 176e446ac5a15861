"""Configuration of the reports service: `AVIS_REPORTS_*` plus the shared `AVIS_*` variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings


class Settings(CommonSettings):
    """Reports settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_REPORTS_", extra="ignore", populate_by_name=True
    )

    service_name: str = "reports"
    http_port: int = 8003

    # AVIS_REPORTS_PUBLIC_URL: where readers reach this API (the links in `report-ready`).
    public_url: str = "http://127.0.0.1:8003"
    # AVIS_REPORTS_REVIEWER_ACCESS_DAYS: a reviewer reads a report for this long after their
    # last opinion version (then 404).
    reviewer_access_days: int = Field(30, ge=1, le=3650)
    # AVIS_REPORTS_PHYSICIAN_LINK_DAYS: the treating physician's link opens the report for this
    # long after its latest version was issued (each new version, emailed to them again, opens
    # it anew); then 410 with the reason, in both languages.
    physician_link_days: int = Field(30, ge=1, le=3650)
    # AVIS_REPORTS_RENDER_IN_BACKGROUND: render each new version's PDF right after it is issued
    # (off the consumer's path); when off, or if that fails, the first request renders it.
    render_in_background: bool = True
