"""The pure parts of the lease: when a term counts as expired, what a fenced write filters on."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pymongo.errors import AutoReconnect

from avis.shared.lease import Lease, Sections, Term, Turns, fenced, holder_id, singleton, stamp

RENEWED = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
TTL = timedelta(seconds=9)


def term(released: bool = False) -> Term:
    return Term(epoch=3, holder="a", expires_at=RENEWED + TTL, released=released)


def test_a_live_term_is_not_expired() -> None:
    assert not term().expired(RENEWED + timedelta(seconds=5), skew=1.0)


def test_the_holders_expiry_alone_is_not_enough_the_skew_margin_must_pass_too() -> None:
    # The claimant's clock may run ahead of the holder's by up to `skew`.
    assert not term().expired(RENEWED + TTL, skew=1.0)
    assert not term().expired(RENEWED + TTL + timedelta(milliseconds=999), skew=1.0)
    assert term().expired(RENEWED + TTL + timedelta(seconds=1), skew=1.0)


def test_without_a_margin_the_expiry_is_the_holders_own() -> None:
    assert term().expired(RENEWED + TTL, skew=0.0)


def test_a_released_term_is_expired_at_once() -> None:
    assert term(released=True).expired(RENEWED, skew=1.0)


def test_the_term_is_read_from_its_document() -> None:
    doc = {"_id": "j:3", "epoch": 3, "holder": "a", "expires_at": RENEWED + TTL, "ttl_s": 9.0}
    assert Term.of(doc) == term()


def test_a_fenced_write_matches_only_documents_no_newer_holder_wrote() -> None:
    assert fenced({"_id": "x"}, 4) == {"_id": "x", "fence": {"$lte": 4}}
    assert stamp(4) == {"fence": 4}


def test_holder_ids_differ_between_copies() -> None:
    assert holder_id("review") != holder_id("review")
    assert holder_id("review").startswith("review@")


class Flapping:
    """A lease held, lost and held again (what a store outage longer than the ttl does)."""

    job = "email"

    def __init__(self) -> None:
        self.regained = asyncio.Event()

    async def hold(
        self, on_gain: Callable[[int], Awaitable[None]], on_loss: Callable[[], Awaitable[None]]
    ) -> None:
        await on_gain(1)
        await asyncio.sleep(0.01)
        await on_loss()
        await on_gain(2)
        self.regained.set()
        await asyncio.sleep(3600)


@pytest.mark.timeout(20)  # a loss that waits for such a job for ever hangs the test
async def test_a_job_that_swallows_a_cancel_is_still_stopped_and_the_lease_claimed_again() -> None:
    lease, started = Flapping(), []

    async def work() -> None:
        started.append(len(started) + 1)
        swallowed = False
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed or len(started) > 1:
                    raise
                swallowed = True  # as Python 3.11's wait_for can, once

    holding = asyncio.create_task(singleton(cast(Lease, lease), work))
    try:
        async with asyncio.timeout(5):
            await lease.regained.wait()
        assert started == [1, 2]
    finally:
        holding.cancel()


class FlakySections:
    """A `sections` collection in memory whose deletes fail while `down`."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, object]] = {}
        self.down = False

    async def insert_one(self, doc: dict[str, object]) -> None:
        self.docs[str(doc["_id"])] = doc

    async def delete_many(self, filter_: dict[str, list[dict[str, str]]]) -> None:
        if self.down:
            raise AutoReconnect("the store is restarting")
        for one in filter_["$or"]:
            if self.docs.get(one["_id"], {}).get("token") == one["token"]:
                del self.docs[one["_id"]]


async def test_a_lingering_section_whose_delete_failed_is_swept_again() -> None:
    store = FlakySections()
    sections = Sections(cast(Any, store), "a", ["case"], linger=0.01)
    async with sections.hold("case:1"):
        pass
    store.down = True
    await asyncio.sleep(0.05)  # the sweep's delete fails: the entry is kept to sweep again
    assert "case:1" in store.docs
    store.down = False
    await asyncio.sleep(0.1)
    assert store.docs == {}, "swept once the store is back"


class CountedSections(FlakySections):
    """Sections in memory, counting the deletes."""

    def __init__(self) -> None:
        super().__init__()
        self.deletes = 0

    async def delete_many(self, filter_: dict[str, list[dict[str, str]]]) -> None:
        self.deletes += 1
        await super().delete_many(filter_)


async def test_sections_swept_at_most_every_so_often_are_deleted_together() -> None:
    """With `every`, the entries whose linger is over wait for the next sweep: three sections
    left 0.05 s apart go in one delete (each its own without it)."""
    for every, deletes in ((0.0, 3), (0.5, 1)):
        store = CountedSections()
        sections = Sections(cast(Any, store), "a", ["case"], linger=0.01, every=every)
        sections._swept_at = time.monotonic()  # as if it had just swept
        for key in ("case:1", "case:2", "case:3"):
            async with sections.hold(key):
                pass
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)
        assert store.docs == {}
        assert store.deletes == deletes, every


async def test_turns_go_first_to_those_that_ask_every_other_turn_while_others_wait() -> None:
    turns = Turns()
    order: list[str] = []

    async def one(name: str, first: bool) -> None:
        await turns.acquire(first=first)
        order.append(name)
        await asyncio.sleep(0)
        turns.release()

    await turns.acquire()  # held while the waiters come, in this order
    came = [("other-1", False), ("other-2", False), ("first-1", True), ("first-2", True)]
    waiting = [asyncio.create_task(one(name, first)) for name, first in came]
    cancelled = asyncio.create_task(one("other-cancelled", False))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    turns.release()
    await asyncio.gather(*waiting)
    assert order == ["first-1", "other-1", "first-2", "other-2"]
    assert not turns.locked()
    await turns.acquire(first=True)  # free: taken at once
    assert turns.locked()
