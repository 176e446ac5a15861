"""Fixtures for the shared package's unit tests: signing keys and a JWKS file."""

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    """The RSA signing key published as kid `rsa-1`."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    """The P-256 signing key published as kid `ec-1`."""
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def jwks_path(
    tmp_path_factory: pytest.TempPathFactory,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> Path:
    """A JWKS file with the public halves of `rsa_key` and `ec_key`."""
    rsa_jwk: dict[str, Any] = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk: dict[str, Any] = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
    ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}), encoding="utf-8")
    return path
