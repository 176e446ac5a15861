"""Nothing identifying or clinical leaves notify in clear: the emails name no one (the address
appears in `To` only), and every line notify logs and every span it records is searched for the
patient's name, email, phone and birth date, in the spellings the privacy scan knows, and for
the address of a specialist told that a second reading waits for them."""

import email
import email.policy

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from avis.shared.events import Language, ProfessionalContact
from avis.shared.observability import configure_tracing, json_safe
from tests.support.basics import eventually
from tests.support.notify import (
    NotifyStack,
    mailbox,
    notify_settings,
    raw_mails,
    running_notify,
    sink_rules,
)
from tests.support.privacy import assert_absent, found

pytestmark = pytest.mark.infra

GIVEN = "Éloïse"
FAMILY = "Dupré-Nuñez"
PHONE = "+33 6 98 76 54 32"
CLINICAL = ("diagnos", "tumeur", "cancer", "douleur", "traitement")
READER = "dr.relecteur.privacy@chu.example"


async def test_no_name_in_emails_logs_or_traces(capfd: pytest.CaptureFixture[str]) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("notify-privacy-test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with running_notify(notify_settings(log_level="DEBUG", log_format="json")) as stack:
        p = stack.patient("fr", given_name=GIVEN, family_name=FAMILY, phone=PHONE)
        with sink_rules({"match": p.email, "mode": "fail", "count": 1}):
            await _journey(stack, p)
    logs = capfd.readouterr()
    haystacks = {
        "logs": (logs.out + logs.err).encode(),
        "spans": "\n".join(json_safe(s).to_json() for s in exporter.get_finished_spans()).encode(),
    }
    mails = raw_mails(p.email)
    assert len(mails) == 5
    (to_reader,) = raw_mails(READER)  # in English, the first of their languages
    assert b"Content-Language: en" in to_reader and p.email.encode() not in to_reader
    mails.append(to_reader)
    for i, raw in enumerate(mails):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        headers = "\n".join(f"{k}: {v}" for k, v in msg.items() if k.lower() != "to").encode()
        haystacks[f"mail {i} headers"] = headers
        body = "\n".join(
            str(part.get_content())  # type: ignore[attr-defined]
            for part in msg.walk()
            if part.get_content_maintype() == "text"
        )
        haystacks[f"mail {i} body"] = body.encode()
        for word in CLINICAL:
            assert word not in body.lower(), (i, word)
    secrets = {
        "given name": GIVEN,
        "family name": FAMILY,
        "email": p.email,
        "phone": PHONE,
        "birth date": p.birth_date.isoformat(),
        "birth date fr": p.birth_date.strftime("%d/%m/%Y"),
        "reader's email": READER,
    }
    assert haystacks["logs"] and haystacks["spans"]
    assert_absent(secrets, haystacks)
    # The scan can fail: over each whole message, To included, it finds the address.
    for i, raw in enumerate(mails[:5]):
        assert "email" in found(raw, secrets), f"the scan misses the address in mail {i}"
    assert "reader's email" in found(to_reader, secrets)


async def _journey(stack: NotifyStack, p: object) -> None:
    from tests.support.notify import Patient

    assert isinstance(p, Patient)
    submitted = stack.submitted(p)
    tp = submitted.traceparent
    await stack.publish(submitted, stack.assigned(p, 5, tp))
    await stack.settled(p.case_id, 2)
    await stack.publish(stack.report(p, 1, tp))
    await stack.settled(p.case_id, 3)
    await stack.publish(stack.report(p, 2, tp))
    await stack.settled(p.case_id, 4)
    reader = ProfessionalContact(email=READER, languages=[Language.EN, Language.FR])
    await stack.publish(stack.second_reading(p, version=3, to=reader))
    await stack.settled(p.case_id, 5)
    await stack.publish(stack.withdrawn(p, tp))
    await stack.settled(p.case_id, 6)
    await eventually(lambda: len(mailbox(p.email)) == 5)
