"""Configuration of the review service: `AVIS_REVIEW_*` plus the shared `AVIS_*` variables."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from avis.shared.settings import CommonSettings, shared_env

DEFAULT_SEED_FILE = Path(__file__).resolve().parent / "seed" / "reviewers.json"


class Settings(CommonSettings):
    """Review settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_REVIEW_", extra="ignore", populate_by_name=True
    )

    service_name: str = "review"
    http_port: int = 8002

    # SLA: days from assignment until the opinion is due (fractions allowed, for tests).
    sla_routine_days: float = Field(7.0, gt=0)
    sla_urgent_days: float = Field(3.0, gt=0)
    # Days an unanswered request for more information stays open before it expires (the
    # review's clock then resumes without the answer; fractions allowed, for tests).
    information_expiry_days: float = Field(14.0, gt=0)
    # International review: days a translation (either way) has from its queueing until it is
    # due, its own due date beside the review's (fractions allowed, for tests).
    translation_due_days: float = Field(2.0, gt=0)
    # Days after the report within which follow-up questions are asked, and days the
    # specialist has to answer one (fractions allowed, for tests).
    follow_up_period_days: float = Field(30.0, gt=0)
    follow_up_due_days: float = Field(7.0, gt=0)
    # Development only: fill an empty reviewer directory from this file at start-up.
    seed_reviewers: bool = False
    seed_file: Path = DEFAULT_SEED_FILE
    # Where intake serves cases: links in assignments point there when an event gave none.
    intake_base_url: str = "http://127.0.0.1:8001"
    # Consumers per topic in this process, each owning some of its partitions. The same number
    # on every topic, so that partition p of each lands at the same copy
    # (avis.shared.kafka.ASSIGNORS); three: two copies still split the six partitions.
    consumer_workers: int = Field(3, ge=1, le=16, validation_alias=shared_env("CONSUMER_WORKERS"))
    # Records of a subscription handled at once (avis.shared.kafka.Lanes): the cases submitted
    # while the matcher is busy wait for it together and are decided in one section
    # (matching.py), however they are spread over the partitions.
    consumer_in_flight: int = Field(
        8, ge=1, le=64, validation_alias=shared_env("CONSUMER_IN_FLIGHT")
    )
    # How often the overdue-assignments gauge is recounted.
    overdue_refresh_seconds: float = Field(30.0, gt=0)
