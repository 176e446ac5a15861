"""The local key server's certificates, made once per state folder with `cryptography`.

A private CA (kept only here: its key signs nothing else), the server's certificate (for
127.0.0.1 and localhost) and one client certificate per service plus `admin`. Each client's
common name is its identity at the key server. Private keys are written with mode 600; nothing
here is ever committed.

`trusted.pem` is the CAs trusted on both sides: the server takes clients of these CAs, and the
services take a server of these CAs (AVIS_KMS_CA_FILE). A rotation makes a new generation beside
the current one, trusted with it for the change, then trusted alone (docs/operations.md):

    python deploy/kms/certs.py DIR              make what is missing in DIR, print what was made
    python deploy/kms/certs.py DIR --next NEW   a new CA and every certificate under it in NEW;
                                                NEW/trusted.pem trusts NEW's CA and DIR's
    python deploy/kms/certs.py NEW --retire     NEW/trusted.pem trusts NEW's CA alone
"""

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENTS = ("intake", "review", "reports", "notify", "web", "admin")
# Development certificates: long enough never to expire under a developer's stack.
DAYS = 825


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Avis local key server"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    tmp.replace(path)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp.replace(path)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
    )


def _ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = folder / "ca.pem", folder / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    # A name of its own: while two generations are trusted together, a certificate's issuer is
    # found by name (and key identifier), so two CAs of one name would be mistaken for each other.
    made = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S")
    name = _name(f"Avis local key server CA {made}-{os.urandom(3).hex()}")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert, key


def _leaf(
    folder: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    again: bool,
) -> bool:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    if cert_path.exists() and key_path.exists() and not again:
        return False
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(name), ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    _write_key(key_path, key)
    _write_cert(cert_path, builder.sign(ca_key, hashes.SHA256()))
    return True


def _write_trusted(folder: Path, *cas: Path) -> None:
    """`trusted.pem`: the CA certificates `cas`, one after another (a PEM bundle)."""
    tmp = folder / "trusted.tmp"
    tmp.write_bytes(b"".join(ca.read_bytes() for ca in cas))
    tmp.replace(folder / "trusted.pem")


def make(folder: Path) -> list[str]:
    """Make what is missing of the CA, the server's and the clients' certificates in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    new_ca = not ((folder / "ca.pem").exists() and (folder / "ca.key").exists())
    ca = _ca(folder)
    # A new CA signs every certificate again: the old ones would no longer be accepted.
    made = ["ca"] if new_ca else []
    if _leaf(folder, "server", ca, ExtendedKeyUsageOID.SERVER_AUTH, new_ca):
        made.append("server")
    made += [c for c in CLIENTS if _leaf(folder, c, ca, ExtendedKeyUsageOID.CLIENT_AUTH, new_ca)]
    if new_ca or not (folder / "trusted.pem").exists():
        _write_trusted(folder, folder / "ca.pem")
    return made


def make_next(current: Path, new: Path) -> list[str]:
    """A new generation in `new` (a new CA, the server's and the clients' certificates under it),
    whose `trusted.pem` trusts both its CA and the CA of `current` while services move over."""
    if not (current / "ca.pem").exists():
        raise SystemExit(f"{current} holds no ca.pem: nothing to rotate from")
    if (new / "ca.pem").exists():
        raise SystemExit(f"{new} already holds a CA: choose a new folder")
    made = make(new)
    _write_trusted(new, new / "ca.pem", current / "ca.pem")
    return made


def retire(folder: Path) -> None:
    """Trust the CA of `folder` alone: certificates of the previous generation are refused."""
    _write_trusted(folder, folder / "ca.pem")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--next", type=Path, metavar="NEW", help="make the next generation here")
    parser.add_argument("--retire", action="store_true", help="trust this folder's CA alone")
    args = parser.parse_args()
    if args.retire:
        retire(args.folder)
        print(f"{args.folder}/trusted.pem: its own CA alone", file=sys.stderr)
        return
    made = make_next(args.folder, args.next) if args.next else make(args.folder)
    if made:
        print("made: " + ", ".join(made), file=sys.stderr)


if __name__ == "__main__":
    main()
