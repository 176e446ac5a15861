"""The case a send was queued with, handed to this copy's sender so that it need not read it
again: used just after, never once the case's erasure began in this process."""

import time
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from avis.notify import sender as sending
from avis.notify.models import Template
from avis.notify.sender import EmailSender, ErasedHere
from avis.notify.store import CaseDoc, SendDoc
from avis.shared.events import Language


def send(case: CaseDoc) -> SendDoc:
    now = datetime.now(UTC)
    return SendDoc(
        _id="email:e1",
        case_id=case.id,
        event_id="e1",
        template=Template.CASE_RECEIVED,
        language=Language.EN,
        params={},
        message_id="<e1@avis.test>",
        created_at=now,
        next_at=now,
    ).handed_with(case)


def sender(erased: ErasedHere) -> EmailSender:
    bare = object.__new__(EmailSender)
    bare.erased = erased
    return cast(Any, bare)


def test_a_send_is_attempted_with_the_case_it_was_queued_with_just_after() -> None:
    case = CaseDoc(_id="c1", submitted=True)
    assert sender(ErasedHere())._handed(send(case)) == case


def test_not_once_the_case_erasure_began_here() -> None:
    case, erased = CaseDoc(_id="c1", submitted=True), ErasedHere()
    queued = send(case)
    erased.began("c1")
    assert sender(erased)._handed(queued) is None, "read from the store: erased there"


def test_nor_later_than_just_after(monkeypatch: pytest.MonkeyPatch) -> None:
    queued = send(CaseDoc(_id="c1", submitted=True))
    later = time.monotonic() + sending.HANDED_FOR
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert sender(ErasedHere())._handed(queued) is None


def test_a_send_read_from_the_store_has_no_case_with_it() -> None:
    case = CaseDoc(_id="c1", submitted=True)
    stored = SendDoc.model_validate(send(case).to_doc())
    assert sender(ErasedHere())._handed(stored) is None


def test_the_cases_erased_here_are_the_latest() -> None:
    erased = ErasedHere()
    for i in range(sending.ERASED_KEPT + 1):
        erased.began(f"c{i}")
    assert "c0" not in erased and f"c{sending.ERASED_KEPT}" in erased
