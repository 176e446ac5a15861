"""A service's Kafka identity: SCRAM options for aiokafka and FastStream, and production's
refusal to connect without one (the broker's side: tests/integration/shared/
test_kafka_identities.py)."""

import ssl
from pathlib import Path

import pytest
from faststream.security import SASLScram512

from avis.shared.kafka_access import KafkaAccess, refuse_anonymous_in_production
from avis.shared.settings import CommonSettings


def test_a_service_connects_as_its_own_user_with_scram() -> None:
    settings = CommonSettings(
        service_name="review",
        kafka_bootstrap="k:9092",
        kafka_password="s3cret",
        avis_env="production",
    )
    access = KafkaAccess.of(settings)
    assert access.options() == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "review",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }
    security = access.security()
    assert isinstance(security, SASLScram512)
    assert (security.username, security.password) == ("review", "s3cret")
    assert "s3cret" not in repr(access)
    refuse_anonymous_in_production(settings)  # a password: accepted


def test_a_user_name_can_be_set() -> None:
    settings = CommonSettings(service_name="review", kafka_username="review-eu", kafka_password="p")
    assert KafkaAccess.of(settings).username == "review-eu"


def test_without_a_password_the_client_is_anonymous_in_development_only() -> None:
    development = CommonSettings(
        service_name="notify", avis_env="development", kafka_bootstrap="k:9092"
    )
    assert KafkaAccess.of(development).options() == {"bootstrap_servers": "k:9092"}
    assert KafkaAccess.of(development).security() is None
    refuse_anonymous_in_production(development)
    production = CommonSettings(service_name="notify", avis_env="production")
    with pytest.raises(ValueError, match="AVIS_NOTIFY_KAFKA_PASSWORD is not set"):
        refuse_anonymous_in_production(production)


def test_the_operators_tools_connect_as_the_administrator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVIS_KAFKA_ADMIN_PASSWORD", "adm")
    monkeypatch.delenv("AVIS_KAFKA_ADMIN_USERNAME", raising=False)
    access = KafkaAccess.admin("k:9092")
    assert (access.bootstrap, access.username, access.password) == ("k:9092", "admin", "adm")


def test_with_the_brokers_ca_the_client_speaks_sasl_over_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(certifi_like_pem())
    access = KafkaAccess("k:9093", "intake", "p", str(ca))
    options = access.options()
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    security = access.security()
    assert security is not None and security.use_ssl


def certifi_like_pem() -> str:
    """A CA certificate in PEM: one of the system's own."""
    return Path(
        ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    ).read_text()
