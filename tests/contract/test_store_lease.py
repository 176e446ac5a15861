"""Store contract: the lease of avis.shared.lease, against the real store.

Claiming an epoch is inserting `<job>:<epoch>`; the unique `_id` is the only arbiter the
store offers (racing conditional updates all "match" on FerretDB). Two claimants racing for
the same epoch must end with exactly one holder, every time. A former holder that stopped
renewing (paused) must see its writes refused once another copy took over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from avis.shared.clock import now
from avis.shared.lease import LEASES, SECTIONS, Fenced, Lease, Sections, fenced, stamp

pytestmark = pytest.mark.infra

Document = dict[str, Any]
ClientFactory = Callable[[], Awaitable[AsyncMongoClient[Document]]]
Observe = Callable[[str], None]
RACES = 200


async def test_two_claimants_racing_for_one_epoch_end_with_one_holder(
    client_factory: ClientFactory, db_name: str, observe: Observe
) -> None:
    # Each claimant through its own client and connection pool, as two copies would be.
    first, second = [(await client_factory())[db_name][LEASES] for _ in range(2)]
    outcomes: list[tuple[int | None, int | None]] = []
    for race in range(RACES):
        job = f"race-{race}"
        a = Lease(first, job, holder="a", ttl=30.0)
        b = Lease(second, job, holder="b", ttl=30.0)
        outcomes.append(tuple(await asyncio.gather(a.claim(), b.claim())))  # type: ignore[arg-type]
    winners = [sum(fence is not None for fence in pair) for pair in outcomes]
    a_won = sum(pair[0] is not None for pair in outcomes)
    observe(
        f"{RACES} races for epoch 1: exactly one holder in {winners.count(1)}, none in "
        f"{winners.count(0)}, two in {winners.count(2)} (a won {a_won}, b {RACES - a_won})"
    )
    assert winners == [1] * RACES
    assert all(set(pair) == {None, 1} for pair in outcomes)
    # The stored holder is the one that was told it won.
    for race, (fence_a, _) in enumerate(outcomes):
        doc = await first.find_one({"_id": f"race-{race}:1"})
        assert doc is not None and doc["holder"] == ("a" if fence_a else "b")


class Clock:
    """A clock the test moves by hand (the store only sees the times written)."""

    def __init__(self) -> None:
        self.at = now()

    def __call__(self) -> datetime:
        return self.at


async def test_a_paused_former_holder_is_refused(
    db: AsyncDatabase[Document], observe: Observe
) -> None:
    leases = db[LEASES]
    clock = Clock()
    a = Lease(leases, "sweep", holder="a", ttl=9.0, skew=1.0, clock=clock)
    b = Lease(leases, "sweep", holder="b", ttl=9.0, skew=1.0, clock=clock)
    targets = db["targets"]
    await targets.insert_one({"_id": "t", "value": "initial", **stamp(0)})

    fence_a = await a.claim()
    assert fence_a == 1
    assert await a.check() == 1
    written = await targets.update_one(fenced({"_id": "t"}, fence_a), {"$set": {"value": "a"}})
    assert written.matched_count == 1

    # A is paused: it renews no more. Within its term (and the skew margin) B cannot take over.
    clock.at += timedelta(seconds=9.5)
    assert await b.claim() is None
    clock.at += timedelta(seconds=0.5)
    fence_b = await b.claim()
    assert fence_b == 2
    await targets.update_one(
        fenced({"_id": "t"}, fence_b), {"$set": {"value": "b", **stamp(fence_b)}}
    )

    # A wakes up and, still believing its old fence, tries to write: refused both ways.
    with pytest.raises(Fenced):
        await a.check(fence_a)
    stale = await targets.update_one(fenced({"_id": "t"}, fence_a), {"$set": {"value": "a2"}})
    assert stale.matched_count == 0
    assert (await targets.find_one({"_id": "t"}) or {})["value"] == "b"
    observe("fence 1 refused after fence 2 took over: by the check and by the document's fence")

    # A's renewal fails too (a newer epoch exists), so it stops believing.
    a._valid_until = float("inf")  # as if its monotonic clock had not noticed the pause
    assert await a.renew() is False
    assert a.fence is None and not a.held.is_set()


async def test_the_chain_stays_short_and_a_release_hands_over_at_once(
    db: AsyncDatabase[Document],
) -> None:
    leases = db[LEASES]
    copies = [Lease(leases, "prune", holder=f"c{i}", ttl=30.0) for i in range(5)]
    for epoch, copy in enumerate(copies, start=1):
        assert await copy.claim() == epoch
        assert await copies[(epoch) % 5].claim() is None  # held: nobody else
        await copy.release()
    ids = sorted([doc["_id"] async for doc in leases.find({})])
    assert ids == ["prune:4", "prune:5", "prune:head"]
    # The oldest holders, whose epoch documents are gone, are refused by the head hint.
    with pytest.raises(Fenced):
        await copies[0].check(1)


async def test_the_holder_renews_and_keeps_its_fence(db: AsyncDatabase[Document]) -> None:
    a = Lease(db[LEASES], "gauge", holder="a", ttl=1.5, skew=0.0)
    b = Lease(db[LEASES], "gauge", holder="b", ttl=1.5, skew=0.0)
    holding = asyncio.create_task(a.hold())
    try:
        await asyncio.wait_for(a.held.wait(), 5)
        for _ in range(4):
            await asyncio.sleep(0.5)
            assert await b.claim() is None
            assert a.holding() and a.fence == 1
    finally:
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
    # Cancelled: released on the way out, so B takes over at once.
    assert await b.claim() == 2


async def test_sections_let_one_copy_in_at_a_time(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document], observe: Observe
) -> None:
    # Two copies (a client each) and four writers per copy, all for one aggregate: whoever is
    # inside reads a counter, waits, and writes it back, which loses updates unless alone.
    sections = [
        Sections((await client_factory())[db_name][SECTIONS], holder, ["case"]) for holder in "ab"
    ]
    counter = db["counter"]
    await counter.insert_one({"_id": "n", "n": 0})
    inside, most = 0, 0

    async def write(section: Sections) -> None:
        nonlocal inside, most
        for _ in range(5):
            async with section.hold("case:1"):
                inside += 1
                most = max(most, inside)
                n = (await counter.find_one({"_id": "n"}))["n"]  # type: ignore[index]
                await asyncio.sleep(0.002)
                await counter.update_one({"_id": "n"}, {"$set": {"n": n + 1}})
                inside -= 1

    await asyncio.gather(*(write(section) for section in sections * 4))
    final = (await counter.find_one({"_id": "n"}))["n"]  # type: ignore[index]
    observe(f"sections: 40 read-modify-writes of one document from two copies, final {final}")
    assert (most, final) == (1, 40)
    for section in sections:
        await section.close()
    assert await sections[0].sections.count_documents({}) == 0  # every entry deleted


async def test_a_section_left_by_a_dead_copy_is_taken_after_its_term(
    db: AsyncDatabase[Document],
) -> None:
    live = Sections(db[SECTIONS], "b", ["case"], ttl=30.0, skew=0.0)
    at = now()
    await db[SECTIONS].insert_many(
        [
            {"_id": "case:dead", "holder": "a", "token": "t1", "expires_at": at - timedelta(1)},
            {"_id": "case:busy", "holder": "a", "token": "t2", "expires_at": at + timedelta(1)},
        ]
    )
    async with asyncio.timeout(5), live.hold("case:dead"):
        entry = await db[SECTIONS].find_one({"_id": "case:dead"})
        assert entry is not None and entry["holder"] == "b"
    with pytest.raises(TimeoutError):  # a copy inside within its term keeps the others out
        async with asyncio.timeout(0.5), live.hold("case:busy"):
            pass
    assert (await db[SECTIONS].find_one({"_id": "case:busy"}))["token"] == "t2"  # type: ignore[index]
    async with asyncio.timeout(0.5), live.hold("list:busy"):  # another kind: this process's lock
        assert await db[SECTIONS].find_one({"_id": "list:busy"}) is None


async def test_a_sections_entry_lingers_for_this_copy_and_the_others_get_in_after_it(
    client_factory: ClientFactory, db_name: str, db: AsyncDatabase[Document]
) -> None:
    """Three holds of one aggregate in a row in one copy: one entry inserted, none deleted until
    its linger is over. Another copy waiting gets in once it is; a leftover of this copy's own
    is stepped over; an entry older than `reuse` is not taken over."""
    a = Sections((await client_factory())[db_name][SECTIONS], "a", ["case"], linger=0.3)
    b = Sections((await client_factory())[db_name][SECTIONS], "b", ["case"])
    tokens = []
    for _ in range(3):
        async with a.hold("case:1"):
            tokens.append((await db[SECTIONS].find_one({"_id": "case:1"}))["token"])  # type: ignore[index]
    assert len(set(tokens)) == 1, "the holds in a row share one entry"
    began = asyncio.get_running_loop().time()
    async with asyncio.timeout(5), b.hold("case:1"):
        entry = await db[SECTIONS].find_one({"_id": "case:1"})
        assert entry is not None and entry["holder"] == "b"
    assert asyncio.get_running_loop().time() - began < 2.0, "in once the linger is over"
    await b.close()
    assert await db[SECTIONS].count_documents({}) == 0

    # A delete of ours that failed left an entry: this copy steps over it at once.
    at = now()
    leftover = {"_id": "case:2", "holder": "a", "token": "old", "expires_at": at + timedelta(1)}
    await db[SECTIONS].insert_one(leftover)
    async with asyncio.timeout(2), a.hold("case:2"):
        assert (await db[SECTIONS].find_one({"_id": "case:2"}))["token"] != "old"  # type: ignore[index]

    # Past `reuse`, a hold enters anew (so a busy aggregate lets the others in that often).
    c = Sections(db[SECTIONS], "c", ["case"], linger=5.0, reuse=0.0)
    async with c.hold("case:3"):
        first = (await db[SECTIONS].find_one({"_id": "case:3"}))["token"]  # type: ignore[index]
    async with asyncio.timeout(2), c.hold("case:3"):
        assert (await db[SECTIONS].find_one({"_id": "case:3"}))["token"] != first  # type: ignore[index]
    for section in (a, c):
        await section.close()
    assert await db[SECTIONS].count_documents({}) == 0


class Counted:
    """A collection that counts the requests made through it, by method."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.collection, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted

    def total(self) -> int:
        return sum(self.calls.values())


async def test_a_section_hands_its_term_to_the_next_task_of_its_copy(
    db: AsyncDatabase[Document],
) -> None:
    leases = Counted(db[LEASES])
    a = Lease(leases, "match", holder="a", ttl=9.0)  # type: ignore[arg-type]
    b = Lease(db[LEASES], "match", holder="b", ttl=9.0)
    fences: list[int] = []
    inside, done = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with a.section() as fence:
            fences.append(fence)
            inside.set()
            await done.wait()

    async def second() -> None:
        async with a.section() as fence:
            fences.append(fence)

    entering = asyncio.create_task(first())
    await inside.wait()
    waiting = asyncio.create_task(second())
    await asyncio.sleep(0.05)  # the second waits behind the first, in this copy
    before = leases.total()
    done.set()
    await asyncio.gather(entering, waiting)
    # One claim for both; the hand-over cost nothing, the second's way out one release.
    assert fences == [1, 1]
    assert leases.calls["insert_one"] == 1
    assert leases.total() - before == 1
    assert a.handovers == 1 and a.fence is None
    assert await b.claim() == 2  # released at the end of the run: another copy claims at once


async def test_a_copy_waiting_in_the_store_gets_in_after_a_run_of_hand_overs(
    client_factory: ClientFactory, db_name: str, observe: Observe
) -> None:
    first, second = [(await client_factory())[db_name][LEASES] for _ in range(2)]
    a = Lease(first, "match", holder="a", ttl=3.0, skew=0.5)  # hands over for 1 s at most
    b = Lease(second, "match", holder="b", ttl=3.0, skew=0.5)
    stop = asyncio.Event()

    async def busy() -> None:  # three tasks of copy A that always want the section
        while not stop.is_set():
            async with a.section():
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(busy()) for _ in range(3)]
    waits: list[float] = []
    try:
        await asyncio.sleep(0.2)
        for _ in range(3):
            began = time.monotonic()
            async with asyncio.timeout(10), b.section():
                waits.append(time.monotonic() - began)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    observe(
        f"hand-over: copy A handed over {a.handovers} times; copy B waited "
        f"{', '.join(f'{w:.2f}' for w in waits)} s for its three sections (limit 1 s)"
    )
    assert a.handovers >= 10
    assert max(waits) < a.run_limit + 1.0  # the run's limit, one section and the grace


async def test_a_lost_term_is_never_handed_over(db: AsyncDatabase[Document]) -> None:
    clock = Clock()
    a = Lease(db[LEASES], "match", holder="a", ttl=30.0, skew=1.0, clock=clock)
    b = Lease(db[LEASES], "match", holder="b", ttl=30.0, skew=1.0, clock=clock)
    fences: list[int] = []
    inside = [asyncio.Event() for _ in range(3)]
    leave = [asyncio.Event() for _ in range(3)]

    async def task(n: int) -> None:
        async with a.section() as fence:
            fences.append(fence)
            inside[n].set()
            await leave[n].wait()

    tasks = [asyncio.create_task(task(0))]
    await inside[0].wait()
    tasks.append(asyncio.create_task(task(1)))
    await asyncio.sleep(0.05)
    leave[0].set()
    await inside[1].wait()  # handed over: the same fence
    tasks.append(asyncio.create_task(task(2)))
    # A pauses past its term (by the store's clock) and B takes over: A's next check refuses.
    clock.at += timedelta(seconds=40)
    assert await b.claim() == 2
    with pytest.raises(Fenced):
        await a.check()
    assert not a.holding()
    leave[1].set()
    await asyncio.sleep(0.2)
    assert fences == [1, 1]  # the third waits in the store for B, not on A's lost term
    await b.release()
    leave[2].set()
    async with asyncio.timeout(5):
        await asyncio.gather(*tasks)
    assert fences == [1, 1, 3]


async def test_a_term_handed_to_a_waiter_cancelled_meanwhile_is_released(
    db: AsyncDatabase[Document],
) -> None:
    a = Lease(db[LEASES], "match", holder="a", ttl=30.0)
    b = Lease(db[LEASES], "match", holder="b", ttl=30.0)
    second = asyncio.Event()

    async def waiter() -> None:
        async with a.section():
            second.set()

    async with a.section() as fence:
        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
    waiting.cancel()  # handed the term, cancelled before it could run
    await asyncio.gather(waiting, return_exceptions=True)
    assert fence == 1 and not second.is_set()
    async with asyncio.timeout(5):
        while (claimed := await b.claim()) is None:  # noqa: ASYNC110 - polls the store
            await asyncio.sleep(0.05)
    assert claimed == 2


async def test_a_section_cancelled_on_its_way_out_releases_rather_than_hands_over(
    db: AsyncDatabase[Document],
) -> None:
    a = Lease(db[LEASES], "match", holder="a", ttl=30.0)
    fences: list[int] = []
    inside = asyncio.Event()

    async def first() -> None:
        async with a.section() as fence:
            fences.append(fence)
            inside.set()
            await asyncio.sleep(3600)

    async def second() -> None:
        async with a.section() as fence:
            fences.append(fence)

    stopping = asyncio.create_task(first())
    await inside.wait()
    waiting = asyncio.create_task(second())
    await asyncio.sleep(0.05)
    stopping.cancel()  # the copy stops: its section releases the term on the way out
    async with asyncio.timeout(5):
        await asyncio.gather(stopping, waiting, return_exceptions=True)
    assert fences == [1, 2]
