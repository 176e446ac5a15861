"""Configuration of the notify service: `AVIS_NOTIFY_*` plus the shared `AVIS_*` variables."""

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from avis.notify.rules import (
    DELIVERY_RETENTION_DAYS,
    SEND_RETENTION_DAYS,
    Backoff,
    Retention,
)
from avis.shared.settings import CommonSettings, shared_env

# Seconds to wait after the 1st, 2nd, ... failed attempt of a send (a transient failure: a 4xx
# answer, a refused or dropped connection, a timeout). After the last one the send is failed.
DEFAULT_RETRY_SCHEDULE = (30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)


class Settings(CommonSettings):
    """Notify settings."""

    model_config = SettingsConfigDict(
        env_prefix="AVIS_NOTIFY_", extra="ignore", populate_by_name=True
    )

    service_name: str = "notify"
    http_port: int = 8004
    # smtp://host:port (STARTTLS as `smtp_starttls` says) or smtps://host:port (TLS from the
    # start); credentials may sit in the URL or in the two settings below.
    smtp_url: str = Field("smtp://127.0.0.1:1025", validation_alias=shared_env("SMTP_URL"))
    smtp_starttls: Literal["auto", "always", "never"] = "auto"
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_timeout_seconds: float = Field(15.0, gt=0)
    # SMTP connections are kept between emails (mailer.py): at most this many open (opened as
    # sends at once need them; the email queue sends one at a time), each replaced once idle
    # longer than `smtp_idle_seconds` (servers drop idle clients, some after 30 s or less).
    smtp_connections: int = Field(4, ge=1)
    smtp_idle_seconds: float = Field(20.0, gt=0)
    mail_from: str = "Avis <no-reply@avis.local>"
    # The right-hand side of every Message-ID notify makes.
    mail_domain: str = "avis.local"
    # AVIS_NOTIFY_PAGES_URL: the people's pages (the web service): every link of an email opens
    # a page there, for the person it was sent to once signed in (partners' webhooks keep the
    # APIs' addresses).
    pages_url: str = "http://127.0.0.1:8000"
    # AVIS_NOTIFY_PHYSICIAN_FHIR_ENDPOINTS='{"750712184": "https://fhir.example/Bundle"}': the
    # institutions (by code) whose treating physicians receive the report as its FHIR document,
    # posted to their endpoint instead of an email, under the webhooks' rules (`fhir.py`): their
    # client and checks, their retries (`webhook_retry_*` below), their cap on posts at once
    # (`webhook_concurrency`, and `webhook_per_subscription` per institution) and their
    # disabling after failures in a row (`webhook_disable_after_failures`).
    physician_fhir_endpoints: dict[str, str] = Field(default_factory=dict)
    # A post to a disabled FHIR endpoint waits (queued, listed on the endpoint) until a
    # coordinator re-enables it (`POST /v1/fhir-endpoints/{institution}/enable`), which resumes
    # it at once; meanwhile it looks again this often (an endpoint set anew starts afresh).
    fhir_disabled_recheck_seconds: float = Field(3600.0, gt=0)
    # Dates in emails are the patient's calendar dates in this time zone.
    timezone: str = "Europe/Paris"
    # AVIS_NOTIFY_RETRY_SCHEDULE=30,120,600 (seconds)
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    # The due-queue's time buckets, and the longest the sender sleeps without a wake-up.
    due_bucket_seconds: int = Field(60, ge=1)
    sender_tick_seconds: float = Field(1.0, gt=0)
    # Whether this copy takes part in sending (the email and webhook queues run on the copy
    # that holds each queue's lease, so any number of copies may leave it on).
    sender_enabled: bool = True

    # Partner webhooks. Retries back off exponentially from `webhook_retry_base_seconds`,
    # doubling up to `webhook_retry_max_delay_seconds`, each delay scaled by a jitter of
    # 0.5-1.0, for `webhook_retry_window_seconds` after the first attempt; then dead.
    webhook_retry_base_seconds: float = Field(5.0, gt=0)
    webhook_retry_max_delay_seconds: float = Field(3600.0, gt=0)
    webhook_retry_window_seconds: float = Field(86400.0, gt=0)
    # A subscription is disabled after this many failed attempts in a row (0: never).
    webhook_disable_after_failures: int = Field(40, ge=0)
    # How long the previous secret still signs after a rotation.
    webhook_secret_grace_seconds: int = Field(86400, ge=0)
    # The longest wait for the next byte (and for a connection); and the whole attempt's
    # deadline (resolving, connecting, TLS, sending, reading), whatever pace the endpoint keeps.
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_connect_timeout_seconds: float = Field(3.0, gt=0)
    webhook_attempt_deadline_seconds: float = Field(30.0, gt=0)
    # Deliveries in flight at once, in all, to one subscription and to one partner: a slow
    # partner holds at most its own share, never the others' nor the emails (which have a
    # sender of their own).
    webhook_concurrency: int = Field(16, ge=1)
    webhook_per_subscription: int = Field(2, ge=1)
    webhook_per_partner: int = Field(4, ge=1)
    # The subscriptions one partner may have at once.
    webhook_max_subscriptions: int = Field(10, ge=1)
    # Development only (`make run` turns it on): allow http:// to loopback addresses, a receiver
    # on this machine, and any port there. Refused in production (AVIS_ENV).
    webhook_allow_http_loopback: bool = False

    # Retention, in days after queueing, then purged (the reasons: avis.notify.rules).
    # AVIS_NOTIFY_SEND_RETENTION_DAYS: an email's send; AVIS_NOTIFY_DELIVERY_RETENTION_DAYS: a
    # webhook delivery.
    send_retention_days: int = Field(SEND_RETENTION_DAYS, ge=1, le=365)
    delivery_retention_days: int = Field(DELIVERY_RETENTION_DAYS, ge=1, le=365)

    def retention(self) -> Retention:
        """The retention periods as the store applies them."""
        return Retention(
            sends=timedelta(days=self.send_retention_days),
            deliveries=timedelta(days=self.delivery_retention_days),
        )

    def webhook_backoff(self) -> Backoff:
        """The webhooks' retry schedule, which a post to a physician's endpoint follows too."""
        return Backoff(
            base=self.webhook_retry_base_seconds,
            cap=self.webhook_retry_max_delay_seconds,
            window=self.webhook_retry_window_seconds,
        )

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(float(v) for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _loopback_in_development_only(self) -> "Settings":
        if self.webhook_allow_http_loopback and self.avis_env != "development":
            raise ValueError(
                "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK=true is for development only: it is "
                "refused with AVIS_ENV=production"
            )
        return self
