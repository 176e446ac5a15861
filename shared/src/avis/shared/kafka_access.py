"""Who a Kafka client is: the broker's address and, on a broker with identities, the client's
SASL/SCRAM-SHA-512 user and password (DESIGN.md section 3, "Kafka identities").

Each service connects as its own user (`AVIS_<SERVICE>_KAFKA_PASSWORD`; the user is the
service's name unless `AVIS_<SERVICE>_KAFKA_USERNAME` says otherwise), whose ACLs let it write
only the topics it owns and read only those it subscribes to. The operators' tools (topics, the
dead-letter replay, the lag exporter) connect as the broker's administrator
(`AVIS_KAFKA_ADMIN_USERNAME`, `AVIS_KAFKA_ADMIN_PASSWORD`). Without a password a client connects
anonymously, which only a development broker without identities accepts (docker-compose's);
production refuses to start that way.
"""

import dataclasses
import os
import ssl
from typing import Any

from faststream.security import BaseSecurity, SASLScram512

from avis.shared.settings import CommonSettings

MECHANISM = "SCRAM-SHA-512"


@dataclasses.dataclass(frozen=True)
class KafkaAccess:
    """A broker's address and the identity a client shows it."""

    bootstrap: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    ca_file: str = ""  # the broker's CA (PEM): SASL over TLS

    @classmethod
    def of(cls, settings: CommonSettings) -> "KafkaAccess":
        """The service's own identity."""
        return cls(
            settings.kafka_bootstrap,
            settings.kafka_username or settings.service_name,
            settings.kafka_password.get_secret_value(),
            settings.kafka_ca_file,
        )

    @classmethod
    def admin(cls, bootstrap: str) -> "KafkaAccess":
        """The administrator's identity, from the environment (operators' tools)."""
        return cls(
            bootstrap,
            os.environ.get("AVIS_KAFKA_ADMIN_USERNAME", "admin"),
            os.environ.get("AVIS_KAFKA_ADMIN_PASSWORD", ""),
            os.environ.get("AVIS_KAFKA_CA_FILE", ""),
        )

    @property
    def anonymous(self) -> bool:
        return not self.password

    def options(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client: the servers, and SCRAM with a password."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if not self.anonymous:
            options |= {
                "security_protocol": "SASL_SSL" if self.ca_file else "SASL_PLAINTEXT",
                "ssl_context": self.tls(),
                "sasl_mechanism": MECHANISM,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options

    def security(self) -> BaseSecurity | None:
        """The same identity for a FastStream broker."""
        if self.anonymous:
            return None
        tls = self.tls()
        return SASLScram512(self.username, self.password, ssl_context=tls, use_ssl=bool(tls))

    def tls(self) -> ssl.SSLContext | None:
        """A context that trusts the broker's CA only, if one is set."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


def refuse_anonymous_in_production(settings: CommonSettings) -> None:
    """ValueError, saying why, if a production service would connect to Kafka without an
    identity: events drive authorisation, so a broker must know who wrote each one."""
    if settings.avis_env != "production" or settings.kafka_password.get_secret_value():
        return
    variable = f"AVIS_{settings.service_name.upper()}_KAFKA_PASSWORD"
    raise ValueError(
        f"{variable} is not set. AVIS_ENV is production: a service connects to Kafka as its own "
        "SCRAM user, whose ACLs limit what it may write and read (README, Kafka identities)."
    )
