"""Settings shared by every service; each service subclasses them with its own prefix."""

from typing import Literal

from limits import parse_many
from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["production", "development"]


def shared_env(name: str, field: str = "") -> AliasChoices:
    """Accept the shared variable `AVIS_<NAME>`; the field name (`field`, by default the name in
    lower case) stays usable in code and tests."""
    return AliasChoices(f"AVIS_{name}", field or name.lower())


class CommonSettings(BaseSettings):
    """Configuration every service reads: `AVIS_*` shared variables plus `AVIS_<SERVICE>_*`."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "avis"
    # production (the default) refuses the HS256 development secret; `make run`, the test stack
    # and docker-compose set development. Named avis_env in code: a bare ENV variable, common in
    # images, must not set it.
    avis_env: Environment = Field("production", validation_alias=shared_env("ENV", "avis_env"))
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # The server's event loop and HTTP parser: uvloop with httptools (the default, measured
    # faster by bench/bench_door.py), or asyncio's own loop with h11 (pure Python).
    http_stack: Literal["uvloop", "asyncio"] = Field(
        "uvloop", validation_alias=shared_env("HTTP_STACK")
    )

    # How long a request body may take: at most this long without a byte, and in all (408).
    http_body_idle_seconds: float = Field(
        30.0, gt=0, validation_alias=shared_env("HTTP_BODY_IDLE_SECONDS")
    )
    http_body_total_seconds: float = Field(
        600.0, gt=0, validation_alias=shared_env("HTTP_BODY_TOTAL_SECONDS")
    )

    # The largest request body a route takes unless the service says otherwise (413 above it).
    # Review's opinion is the largest body: six sections of 20,000 characters, up to 1.44 MB
    # as JSON when every character is escaped as a surrogate pair (12 bytes).
    http_max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, validation_alias=shared_env("HTTP_MAX_BODY_BYTES")
    )

    # On SIGTERM: how long requests in flight may take to finish, then how long the event
    # handlers in flight may (each bound in turn; an unfinished handler commits no offset).
    shutdown_grace_seconds: float = Field(
        10.0, gt=0, validation_alias=shared_env("SHUTDOWN_GRACE_SECONDS")
    )

    kafka_bootstrap: str = Field("127.0.0.1:9092", validation_alias=shared_env("KAFKA_BOOTSTRAP"))
    # The service's Kafka user (SASL/SCRAM-SHA-512; by default the service's name) and its
    # password: AVIS_<SERVICE>_KAFKA_USERNAME, AVIS_<SERVICE>_KAFKA_PASSWORD (avis.shared.
    # kafka_access). Without a password the client is anonymous: development brokers only.
    kafka_username: str = ""
    kafka_password: SecretStr = SecretStr("")
    # The CA that signed the broker's certificate (PEM): set, the client speaks SASL over TLS
    # (Kubernetes: the Strimzi cluster CA); empty, SASL without TLS (loopback development).
    kafka_ca_file: str = Field("", validation_alias=shared_env("KAFKA_CA_FILE"))
    mongo_url: str = Field("mongodb://127.0.0.1:27017", validation_alias=shared_env("MONGO_URL"))
    mongo_database: str = ""
    # key id -> base64 AES-256 key, as JSON ({"k1": "..."}) or "k1:base64,k2:base64";
    # the first key seals, every key opens.
    sealing_keys: SecretStr = Field(SecretStr(""), validation_alias=shared_env("SEALING_KEYS"))
    # The key-management service that keeps the per-case data keys (avis.shared.keys), as
    # kmip://host:port: production names its KMS here (an HSM or a hospital's key manager);
    # `make run` and the test stack point it at their local PyKMIP server (deploy/kms). Empty:
    # no key service, every case under AVIS_SEALING_KEYS (development only: production refuses
    # to start so, avis.shared.case_keys).
    kms_url: str = Field("", validation_alias=shared_env("KMS_URL"))
    # The CA that signed the key service's certificate (PEM); the same for every service.
    kms_ca_file: str = Field("", validation_alias=shared_env("KMS_CA_FILE"))
    # The service's own client certificate and key (PEM) at the key service, whose common name is
    # its identity there: AVIS_<SERVICE>_KMS_CERT_FILE, AVIS_<SERVICE>_KMS_KEY_FILE.
    kms_cert_file: str = ""
    kms_key_file: str = ""
    # Data keys held in memory at most (32 bytes each), the least recently used dropped first.
    kms_cache_keys: int = Field(1024, ge=1, validation_alias=shared_env("KMS_CACHE_KEYS"))
    # The longest a key read from the key service is held: a copy that did not hear of a
    # case's erasure stops opening it by then.
    kms_cache_seconds: float = Field(300.0, gt=0, validation_alias=shared_env("KMS_CACHE_SECONDS"))
    # The longest the key service may keep this service waiting on one read or write of its
    # connection (its connection's socket timeout).
    kms_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=shared_env("KMS_TIMEOUT_SECONDS")
    )
    # HS256 secret for development; RS256/ES256 public keys come from a JWKS file or URL.
    jwt_secret: SecretStr = Field(SecretStr(""), validation_alias=shared_env("JWT_SECRET"))
    jwt_jwks: str = Field("", validation_alias=shared_env("JWT_JWKS"))
    jwt_audience: str = Field("avis", validation_alias=shared_env("JWT_AUDIENCE"))
    # The `iss` of the JWKS's tokens (required with AVIS_JWT_JWKS); HS256 tokens carry the
    # development issuer of `avis-token`.
    jwt_issuer: str = Field("", validation_alias=shared_env("JWT_ISSUER"))
    # What tells the JWKS's access tokens from its ID tokens: "typ", their header's typ at+jwt
    # (RFC 9068); "client_id", for a provider whose access tokens say typ JWT (Ory Hydra v2.3):
    # then the client_id and jti claims (avis.shared.security).
    jwt_access_token_mark: Literal["typ", "client_id"] = Field(
        "typ", validation_alias=shared_env("JWT_ACCESS_TOKEN_MARK")
    )
    # The longest a token may live, `exp - iat`: a stolen token is worth this long at most.
    jwt_max_lifetime_seconds: int = Field(
        3600, ge=60, le=7 * 24 * 3600, validation_alias=shared_env("JWT_MAX_LIFETIME_SECONDS")
    )
    # Writes (POST, PUT, PATCH, DELETE) one caller may make, in the `limits` notation
    # ("60/minute", "10/second;300/hour"); counted per copy of a service, in memory.
    rate_limit_writes: str = Field("60/minute", validation_alias=shared_env("RATE_LIMIT_WRITES"))
    otel_exporter: str = Field(
        "none", validation_alias=shared_env("OTEL_EXPORTER")
    )  # none|console|otlp|zipkin
    otel_endpoint: str = Field("", validation_alias=shared_env("OTEL_ENDPOINT"))
    # The batch span processor (with an exporter): spans it holds (one more ended while it is
    # full is dropped: a broken trace), spans per export request, and the longest a span waits
    # while fewer than a batch are held (a full batch goes at once). These take the place of
    # OpenTelemetry's OTEL_BSP_* variables. bench/README.md, "What tracing costs".
    otel_queue_size: int = Field(
        8192, ge=64, le=1_000_000, validation_alias=shared_env("OTEL_QUEUE_SIZE")
    )
    otel_batch_size: int = Field(
        512, ge=1, le=100_000, validation_alias=shared_env("OTEL_BATCH_SIZE")
    )
    otel_delay_ms: int = Field(5000, ge=1, le=60_000, validation_alias=shared_env("OTEL_DELAY_MS"))
    log_format: str = Field("auto", validation_alias=shared_env("LOG_FORMAT"))  # auto|json|console
    log_level: str = Field("INFO", validation_alias=shared_env("LOG_LEVEL"))

    consumer_max_attempts: int = Field(5, validation_alias=shared_env("CONSUMER_MAX_ATTEMPTS"))
    retry_backoff_max_seconds: float = Field(
        10.0, validation_alias=shared_env("RETRY_BACKOFF_MAX_SECONDS")
    )
    relay_poll_seconds: float = Field(1.0, validation_alias=shared_env("RELAY_POLL_SECONDS"))
    # Aggregates the relay reads and publishes per round trip to the store.
    relay_batch: int = Field(100, ge=1, le=1000, validation_alias=shared_env("RELAY_BATCH"))
    # Consumers per topic in this process, each owning some of its partitions: a case's events
    # stay in order (one partition, one consumer), different cases are handled side by side.
    consumer_workers: int = Field(1, ge=1, le=16, validation_alias=shared_env("CONSUMER_WORKERS"))
    # Records each subscription handles at once (`avis.shared.kafka.Lanes`): one is one record
    # after another per consumer; more lets the cases of one partition go side by side (a
    # case's own events still one after another).
    consumer_in_flight: int = Field(
        1, ge=1, le=64, validation_alias=shared_env("CONSUMER_IN_FLIGHT")
    )
    # Days of processed-event markers kept. Unset: a week past the longest the broker keeps any
    # record, dead-letter topics included (13 weeks: a replayed dead letter reaches every group
    # again), so a marker is never dropped while its event can still be delivered again
    # (avis.shared.topics.inbox_days). Set, it must not be shorter than that.
    inbox_retention_days: int | None = Field(
        None, ge=2, validation_alias=shared_env("INBOX_RETENTION_DAYS")
    )

    # How often each service measures the depth of the dead-letter topics of what it consumes.
    dlq_depth_seconds: float = Field(30.0, gt=0, validation_alias=shared_env("DLQ_DEPTH_SECONDS"))
    # How often the heads of the access trails appended to are anchored on Kafka (the most a
    # trail's anchor lags behind it; avis.shared.anchors).
    audit_anchor_seconds: float = Field(
        30.0, gt=0, validation_alias=shared_env("AUDIT_ANCHOR_SECONDS")
    )
    # How long an event for a case the service does not know yet waits, parked, for its case;
    # then it goes to `<topic>.dlq` ("unknown case after ...") and can be replayed from there.
    park_max_hours: float = Field(24.0, gt=0, validation_alias=shared_env("PARK_MAX_HOURS"))
    park_sweep_seconds: float = Field(
        300.0, gt=0, validation_alias=shared_env("PARK_SWEEP_SECONDS")
    )
    # A periodic job's lease (avis.shared.lease): its holder renews every ttl/3; another copy
    # takes over once ttl + skew have passed since the last renewal (skew: the most the clocks
    # of two copies may differ). A holder's death is followed by the next run within about
    # ttl + skew + ttl/3 seconds.
    lease_ttl_seconds: float = Field(9.0, gt=0, validation_alias=shared_env("LEASE_TTL_SECONDS"))
    lease_skew_seconds: float = Field(1.0, ge=0, validation_alias=shared_env("LEASE_SKEW_SECONDS"))

    @field_validator("otel_batch_size")
    @classmethod
    def _batch_within_queue(cls, value: int, info: ValidationInfo) -> int:
        queue = info.data.get("otel_queue_size")
        if queue is not None and value > queue:
            raise ValueError(
                f"AVIS_OTEL_BATCH_SIZE ({value}) must be at most AVIS_OTEL_QUEUE_SIZE ({queue})"
            )
        return value

    @field_validator("rate_limit_writes")
    @classmethod
    def _rate_limit_reads(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                f"AVIS_RATE_LIMIT_WRITES {value!r} is not a rate such as 60/minute"
            ) from None
        return value

    @property
    def database(self) -> str:
        """The service's own database name."""
        return self.mongo_database or f"avis_{self.service_name}"
