"""The mailer keeps its SMTP connections: emails one after another go over one connection (its
STARTTLS handshake done once); a connection the server dropped while idle, or one found gone at
the next email's first command, is replaced and the email sent once; a connection lost after
the message was handed over is not sent on again (the server may have kept it); one idle too
long is replaced before use.
Against a real SMTP server of the test's own (tests/support/smtp.py)."""

import asyncio
from email.message import EmailMessage

import pytest

from avis.notify.mailer import Mailer, SmtpTarget
from avis.notify.models import Outcome
from tests.support.notify import notify_settings, running_notify
from tests.support.smtp import certificate, smtp_server, trusted


def target(port: int, **changes: object) -> SmtpTarget:
    values: dict[str, object] = {
        "hostname": "127.0.0.1",
        "port": port,
        "use_tls": False,
        "start_tls": None,
        "username": None,
        "password": None,
        "timeout": 5.0,
    } | changes
    return SmtpTarget(**values)  # type: ignore[arg-type]


def email(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Avis <no-reply@avis.local>"
    message["To"] = f"patient-{n}@example.org"
    message["Subject"] = f"email {n}"
    message["Message-ID"] = f"<m{n}@avis.local>"
    message.set_content(f"body {n}")
    return message


def subjects(messages: list[bytes]) -> list[str]:
    return [
        line.split(b": ", 1)[1].decode()
        for m in messages
        for line in m.splitlines()
        if line.startswith(b"Subject: ")
    ]


async def test_emails_one_after_another_go_over_one_connection_with_starttls() -> None:
    with certificate() as (tls, cert_file), trusted(cert_file):
        async with smtp_server(tls=tls) as server:
            mailer = Mailer(target(server.port, start_tls=True))
            results = [await mailer.send(email(n)) for n in range(5)]
            assert [r.outcome for r in results] == [Outcome.SENT] * 5
            assert server.connections == 1
            assert subjects(server.messages) == [f"email {n}" for n in range(5)]
            await mailer.close()


async def test_sends_at_once_share_the_bounded_connections() -> None:
    async with smtp_server() as server:
        mailer = Mailer(target(server.port, connections=2))
        for start in (0, 6):
            results = await asyncio.gather(*(mailer.send(email(start + n)) for n in range(6)))
            assert {r.outcome for r in results} == {Outcome.SENT}
        assert server.connections == 2
        assert len(server.messages) == 12
        await mailer.close()


async def test_a_connection_the_server_dropped_idle_is_replaced_and_the_email_sent_once() -> None:
    async with smtp_server(idle_timeout=0.3) as server:
        mailer = Mailer(target(server.port))
        assert (await mailer.send(email(1))).outcome is Outcome.SENT
        await asyncio.sleep(0.8)  # the server drops the idle client
        assert (await mailer.send(email(2))).outcome is Outcome.SENT
        assert subjects(server.messages) == ["email 1", "email 2"]
        assert server.connections == 2
        await mailer.close()


async def test_a_connection_found_gone_at_mail_is_replaced_and_the_email_sent_once() -> None:
    async with smtp_server() as server:
        mailer = Mailer(target(server.port))
        assert (await mailer.send(email(1))).outcome is Outcome.SENT
        server.drop_at_mail = 1  # the kept connection turns out closed at the next email
        assert (await mailer.send(email(2))).outcome is Outcome.SENT
        assert subjects(server.messages) == ["email 1", "email 2"]
        assert server.connections == 2
        assert (await mailer.send(email(3))).outcome is Outcome.SENT  # on the new one
        assert server.connections == 2
        await mailer.close()


async def test_a_connection_lost_after_the_message_is_not_sent_on_again() -> None:
    """The server kept the message, then the connection went before its answer: a transient
    failure (the queue tries again later with the same Message-ID), never a second copy now."""
    async with smtp_server() as server:
        mailer = Mailer(target(server.port))
        assert (await mailer.send(email(1))).outcome is Outcome.SENT
        server.drop_after_data = 1
        result = await mailer.send(email(2))
        assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "connection dropped")
        assert subjects(server.messages) == ["email 1", "email 2"]
        assert server.connections == 1
        await mailer.close()


async def test_one_idle_too_long_is_replaced_before_use_and_failures_stay_results() -> None:
    async with smtp_server() as server:
        mailer = Mailer(target(server.port, idle_seconds=0.2))
        assert (await mailer.send(email(1))).outcome is Outcome.SENT
        await asyncio.sleep(0.4)  # idle too long: replaced before use, not tried
        assert (await mailer.send(email(2))).outcome is Outcome.SENT
        assert server.connections == 2
        await mailer.close()
    # The server gone: a connection refused is a transient failure, as before.
    result = await mailer.send(email(3))
    assert (result.outcome, result.reason) == (Outcome.TRANSIENT, "SMTPConnectError")


@pytest.mark.infra
async def test_notify_sends_a_cases_emails_over_one_connection_and_quits_it_when_it_stops() -> None:
    async with smtp_server() as server:
        settings = notify_settings(smtp_url=f"smtp://127.0.0.1:{server.port}")
        async with running_notify(settings) as stack:
            p = stack.patient("fr")
            await stack.publish(stack.submitted(p), stack.assigned(p, 3))
            sends = await stack.settled(p.case_id, 2)
            assert [n["status"] for n in sends] == ["sent", "sent"]
            assert (server.connections, len(server.messages), server.quits) == (1, 2, 0)
        assert server.quits == 1  # closed with the service
