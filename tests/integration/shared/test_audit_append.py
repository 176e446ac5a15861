"""The access trail's append on the real store: one request when the process knows the case's
last entry, the heads written together afterwards, one chain whatever several copies of a
service append, and a repeat folded only into the true last entry."""

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.audit import (
    HEADS,
    KEEP_AT_ONCE,
    AuditHead,
    AuditRecord,
    AuditTrail,
    entry_id,
)
from tests.support.basics import MONGO_URL, unique

pytestmark = pytest.mark.infra

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FOLD = timedelta(minutes=5)


class Requests(monitoring.CommandListener):
    """The store requests a client sends, as (command, collection)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        self.seen.append((name, str(event.command.get(name))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def taken(self) -> list[tuple[str, str]]:
        """What was sent since the last call."""
        taken, self.seen = self.seen, []
        return taken


Copy = tuple[AuditTrail, Requests]


@pytest.fixture
async def copies() -> AsyncIterator[tuple[Copy, Copy, AsyncDatabase[dict[str, Any]]]]:
    """Two copies of a service's trail, each on a client of its own, over one database."""
    name = unique("audit").replace("-", "_")
    clients: list[AsyncMongoClient[dict[str, Any]]] = []
    made: list[Copy] = []
    for _ in range(2):
        requests = Requests()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            MONGO_URL, tz_aware=True, event_listeners=[requests]
        )
        clients.append(client)
        made.append((AuditTrail(client[name]), requests))
    try:
        yield made[0], made[1], clients[0][name]
    finally:
        await clients[0].drop_database(name)
        for client in clients:
            await client.close()


def read(actor: str, action: str = "case.read") -> AuditRecord:
    return AuditRecord(actor=actor, role="coordinator", action=action, purpose="coordination")


async def test_an_append_after_the_last_entry_it_knows_is_an_insert_and_the_head_comes_later(
    copies: tuple[Copy, Copy, Any],
) -> None:
    (trail, requests), _, _ = copies
    case_id = unique("case")
    first = await trail.append(case_id, read("sub-1", "case.create"), T0)
    assert first is not None and first.seq == 1
    assert requests.taken() == [("insert", "audit_trail")], "new case"
    second = await trail.append(case_id, read("sub-2"), T0 + timedelta(seconds=1))
    assert second is not None and (second.seq, second.prev) == (2, first.hash)
    assert requests.taken() == [("insert", "audit_trail")]
    assert await trail.verify(case_id) is None


async def test_two_copies_appending_by_turns_keep_one_chain(
    copies: tuple[Copy, Copy, Any],
) -> None:
    """Each copy's memory of the case is overtaken by the other's entry before its next append:
    it meets a duplicate key and goes on after the other's entry."""
    (a, a_requests), (b, _), _ = copies
    case_id = unique("case")
    written = []
    for n in range(8):
        entry = await (a if n % 2 == 0 else b).append(
            case_id, read(f"sub-{n}"), T0 + timedelta(seconds=n)
        )
        assert entry is not None
        written.append(entry)
    assert [e.seq for e in written] == list(range(1, 9))
    assert all(e.prev == before.hash for before, e in itertools.pairwise(written))
    assert await a.verify(case_id) is None and await b.verify(case_id) is None
    # Its memory caught up with the chain's end, a copy's next appends read nothing.
    await a.append(case_id, read("sub-8"), T0 + timedelta(seconds=8))
    a_requests.taken()
    last = await a.append(case_id, read("sub-9"), T0 + timedelta(seconds=9))
    assert last is not None and last.seq == 10
    assert a_requests.taken() == [("insert", "audit_trail")]
    assert await b.verify(case_id) is None


async def test_a_memory_far_behind_a_lagging_head_is_stepped_past(
    copies: tuple[Copy, Copy, AsyncDatabase[dict[str, Any]]],
) -> None:
    """Copy A remembers entry 1; copy B writes 2 to 4, and the head is left at 2 (the earlier
    of two racing writers' heads written last): A's append lands at 5, after B's last entry."""
    (a, a_requests), (b, _), db = copies
    case_id = unique("case")
    await a.append(case_id, read("sub-a"), T0)
    others = [
        await b.append(case_id, read(f"sub-b{n}"), T0 + timedelta(seconds=n)) for n in range(3)
    ]
    second = others[0]
    assert second is not None and second.seq == 2
    await db[HEADS].replace_one({"_id": case_id}, AuditHead.of(second).to_doc())
    fifth = await a.append(case_id, read("sub-a"), T0 + timedelta(seconds=10))
    fourth = others[-1]
    assert fourth is not None and fifth is not None
    assert (fifth.seq, fifth.prev) == (5, fourth.hash)
    assert await a.verify(case_id) is None
    # A knows the end now: its next append reads nothing.
    a_requests.taken()
    sixth = await a.append(case_id, read("sub-a2"), T0 + timedelta(seconds=11))
    assert sixth is not None and sixth.seq == 6
    assert a_requests.taken() == [("insert", "audit_trail")]


async def test_a_repeat_is_folded_only_into_the_true_last_entry(
    copies: tuple[Copy, Copy, Any],
) -> None:
    """A repeat of the entry a copy wrote last is folded after one look past it; once another
    copy wrote after it, the same repeat is a new entry: folding it would hide that access."""
    (a, a_requests), (b, _), _ = copies
    case_id = unique("case")
    first = await a.append(case_id, read("sub-1"), T0, fold=FOLD)
    assert first is not None
    a_requests.taken()
    assert await a.append(case_id, read("sub-1"), T0 + timedelta(seconds=30), fold=FOLD) is None
    assert [name for name, _ in a_requests.taken()] == ["find"], "one look past the last entry"
    other = await b.append(case_id, read("sub-2"), T0 + timedelta(seconds=40), fold=FOLD)
    assert other is not None and other.seq == 2
    again = await a.append(case_id, read("sub-1"), T0 + timedelta(seconds=50), fold=FOLD)
    assert again is not None and (again.seq, again.prev) == (3, other.hash)
    # Past the window, or another action, a new entry; within it, folded again.
    assert await a.append(case_id, read("sub-1"), T0 + timedelta(seconds=60), fold=FOLD) is None
    later = await a.append(case_id, read("sub-1"), T0 + timedelta(minutes=10), fold=FOLD)
    assert later is not None and later.seq == 4
    assert await a.verify(case_id) is None


async def test_a_copy_that_knows_nothing_of_a_case_appends_after_its_end_and_folds_into_it(
    copies: tuple[Copy, Copy, Any],
) -> None:
    """A copy just started: a repeat of the case's last entry is folded into it (read from the
    head), and a write lands after the last entry, though tried first as the case's first."""
    (a, _), (b, _), _ = copies
    case_id = unique("case")
    for n in range(3):
        await a.append(case_id, read("sub-1", f"case.step{n}"), T0 + timedelta(seconds=n))
    assert (
        await b.append(case_id, read("sub-1", "case.step2"), T0 + timedelta(seconds=9), fold=FOLD)
        is None
    )
    fresh = AuditTrail(b.trail.database)  # and another, started after that
    fourth = await fresh.append(case_id, read("sub-2", "case.update"), T0 + timedelta(seconds=10))
    assert fourth is not None and fourth.seq == 4
    assert await a.verify(case_id) is None


async def test_the_heads_of_the_cases_appended_to_are_written_together_later(
    copies: tuple[Copy, Copy, AsyncDatabase[dict[str, Any]]],
) -> None:
    """No head is written at an append; the anchoring round's `keep` writes the heads of the
    cases appended to in one request, at their chains' true ends (the process's memory, one look
    past all of them at once; past a lagging one, one by one), and from then on a removed last
    entry shows."""
    (trail, requests), (other, _), db = copies
    cases = [unique("case") for _ in range(3)]
    for n, case_id in enumerate(cases):
        await trail.append(case_id, read("sub-1"), T0 + timedelta(seconds=n))
    await trail.append(cases[0], read("sub-2"), T0 + timedelta(seconds=5))
    await other.append(cases[1], read("sub-3"), T0 + timedelta(seconds=6))  # past our memory
    assert await db[HEADS].count_documents({}) == 0, "no head written at an append"
    requests.taken()

    heads = await trail.keep(cases)
    assert [(h.id, h.seq) for h in heads] == [(cases[0], 2), (cases[1], 2), (cases[2], 1)]
    assert requests.taken() == [
        ("find", "audit_heads"),  # the stored heads, by `_id`, together
        ("find", "audit_trail"),  # one look past every case's end, together
        ("find", "audit_trail"),  # and past the other copy's entry, the one that lagged
        ("update", "audit_heads"),  # the heads written, one request
    ]
    stored = await trail.head(cases[0])
    assert stored is not None and stored.seq == 2

    removed = await db["audit_trail"].delete_one({"_id": entry_id(cases[0], 2)})
    assert removed.deleted_count == 1
    broken = await trail.verify(cases[0])
    assert broken is not None and (broken.seq, broken.kind) == (2, "removed")


async def test_many_heads_are_written_fifty_a_request(
    copies: tuple[Copy, Copy, AsyncDatabase[dict[str, Any]]],
) -> None:
    """A round's heads go `KEEP_AT_ONCE` a request: the local store stalls on a bulk write of
    many updates of documents that exist (docs/store-contract.md)."""
    (trail, requests), _, db = copies
    cases = [unique("case") for _ in range(2 * KEEP_AT_ONCE + 3)]
    for case_id in cases:
        await trail.append(case_id, read("sub-1"), T0)
    await trail.keep(cases)  # the heads exist now: the next round updates them
    for case_id in cases:
        await trail.append(case_id, read("sub-2"), T0 + timedelta(seconds=1))
    requests.taken()
    heads = await trail.keep(cases)
    assert {h.seq for h in heads} == {2} and len(heads) == len(cases)
    written = [c for c in requests.taken() if c == ("update", HEADS)]
    assert len(written) == 3
    assert await db[HEADS].count_documents({"seq": 2}) == len(cases)
