"""Configuration of the intake service: `AVIS_INTAKE_*` plus the shared `AVIS_*` variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings

MIB = 1024 * 1024


class Settings(CommonSettings):
    """Intake settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_INTAKE_", extra="ignore", populate_by_name=True
    )

    service_name: str = "intake"
    http_port: int = 8001

    # AVIS_INTAKE_MAX_DOCUMENT_BYTES: the largest record accepted (413 above it).
    max_document_bytes: int = Field(20 * MIB, ge=1, le=1024 * MIB)
    # AVIS_INTAKE_MAX_DOCUMENTS_PER_CASE: records one case may hold (409 beyond it).
    max_documents_per_case: int = Field(50, ge=1, le=1000)
    # AVIS_INTAKE_MAX_JSON_BYTES: the largest JSON request body (413 above it).
    max_json_bytes: int = Field(256 * 1024, ge=1024)
    # AVIS_INTAKE_REVIEWER_ACCESS_DAYS: a reviewer reads a case for this long after their last
    # report (then 404).
    reviewer_access_days: int = Field(30, ge=1, le=3650)
    # AVIS_INTAKE_IDEMPOTENCY_KEY_DAYS: how long an Idempotency-Key returns the case it made
    # (a retry comes within minutes; a week covers a client that was down), then purged.
    idempotency_key_days: int = Field(7, ge=1, le=365)
    # AVIS_INTAKE_PUBLIC_URL: where other services reach intake's API (the events' case_url).
    public_url: str = "http://127.0.0.1:8001"
