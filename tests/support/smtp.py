"""An SMTP server of a test's (or a benchmark's) own, in its event loop, on a loopback port the
system picks: it counts the connections it accepted and keeps the messages it accepted, and can
offer STARTTLS with a certificate made for 127.0.0.1 (trusted by clients through `trusted`),
drop a client idle too long, or drop a connection on cue (`drop_at_mail`, `drop_after_data`)."""

import asyncio
import contextlib
import datetime
import ipaddress
import os
import pathlib
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Server:
    """What the server saw, and what it is told to do; `port` once it listens."""

    port: int = 0
    connections: int = 0  # accepted since it started
    quits: int = 0  # QUITs received
    messages: list[bytes] = field(default_factory=list, repr=False)
    # Close the connection, without an answer, at the MAIL of the next this many messages that
    # come on a connection which carried one already (as if the server had dropped it idle).
    drop_at_mail: int = 0
    # Keep the next this many messages, then close the connection before the final answer.
    drop_after_data: int = 0
    # Per connection: the messages kept.
    _carried: dict[int, int] = field(default_factory=dict, repr=False)

    async def handle_MAIL(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.drop_at_mail and self._carried.get(id(server)) and server.transport is not None:
            self.drop_at_mail -= 1
            server.transport.abort()
            return "421 4.4.2 gone"  # never reaches the client: the transport is closed
        envelope.mail_from, envelope.mail_options = address, list(options)
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.messages.append(envelope.original_content or b"")
        self._carried[id(server)] = self._carried.get(id(server), 0) + 1
        if self.drop_after_data and server.transport is not None:
            self.drop_after_data -= 1
            server.transport.abort()
            return "421 4.4.2 gone"
        return "250 Message accepted for delivery"


@contextlib.asynccontextmanager
async def smtp_server(
    *, tls: ssl.SSLContext | None = None, idle_timeout: float = 300.0
) -> AsyncIterator[Server]:
    """A server listening on 127.0.0.1 for the block: STARTTLS offered with `tls` (from
    `certificate`), a client idle `idle_timeout` seconds dropped."""
    seen = Server()
    sessions: list[SMTP] = []

    def connection() -> SMTP:
        seen.connections += 1
        sessions.append(SMTP(seen, hostname="localhost", tls_context=tls, timeout=idle_timeout))
        return sessions[-1]

    listening = await asyncio.get_running_loop().create_server(connection, "127.0.0.1", 0)
    seen.port = listening.sockets[0].getsockname()[1]
    try:
        yield seen
    finally:
        listening.close()
        for session in sessions:
            if session.transport is not None:
                session.transport.abort()


@contextlib.contextmanager
def certificate() -> Iterator[tuple[ssl.SSLContext, pathlib.Path]]:
    """A self-signed certificate for 127.0.0.1: the server's TLS context and the PEM file a
    client trusts it by (`trusted`)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory(prefix="smtp-cert-") as tmp:
        cert_file, key_file = pathlib.Path(tmp, "cert.pem"), pathlib.Path(tmp, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        yield context, cert_file


@contextlib.contextmanager
def trusted(cert_file: pathlib.Path) -> Iterator[None]:
    """Clients' default TLS contexts made in the block trust `cert_file` (and only it)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(cert_file)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before
