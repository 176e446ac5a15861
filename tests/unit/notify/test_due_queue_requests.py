"""What the due-queue asks of the store per item: a hand-off due now is worked where it is (no
bucket written for it) and deleted with the others done since, in one request at the next read
of the hand-offs; what the worker wrote to its buckets it does not read again; a pass between
two reads of the hand-offs takes this copy's own filings from memory."""

import asyncio
from collections import Counter
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, cast

from avis.notify.queue import DueQueue
from avis.notify.settings import Settings
from avis.shared import clock


class Store:
    """The due-queue's part of notify's store, in memory, counting each request."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.buckets: dict[int, list[str]] = {}
        self.handoffs: dict[str, datetime] = {}
        self.cursor_at: int | None = None

    async def cursor(self, queue: str) -> int | None:
        self.calls["cursor"] += 1
        return self.cursor_at

    async def set_cursor(self, bucket: int, queue: str) -> None:
        self.calls["set_cursor"] += 1
        self.cursor_at = bucket

    async def bucket(self, bucket: int, queue: str) -> list[str]:
        self.calls["bucket"] += 1
        return list(self.buckets.get(bucket, []))

    async def file(self, bucket: int, item_id: str, queue: str) -> None:
        self.calls["file"] += 1
        ids = self.buckets.setdefault(bucket, [])
        if item_id not in ids:
            ids.append(item_id)

    async def unfile(self, bucket: int, item_id: str, queue: str) -> None:
        self.calls["unfile"] += 1
        if item_id in self.buckets.get(bucket, []):
            self.buckets[bucket].remove(item_id)

    async def drop_bucket(self, bucket: int, queue: str) -> None:
        self.calls["drop_bucket"] += 1
        self.buckets.pop(bucket, None)

    async def hand_off(self, items: list[tuple[str, str, datetime]]) -> None:
        self.calls["hand_off"] += 1
        for _, item_id, at in items:
            self.handoffs[item_id] = at

    async def handed_off(self, queue: str) -> list[tuple[str, datetime]]:
        self.calls["handed_off"] += 1
        return list(self.handoffs.items())

    async def take_handoffs(self, queue: str, taken: dict[str, datetime]) -> None:
        self.calls["take_handoffs"] += 1
        for item, at in taken.items():
            if self.handoffs.get(item) == at:
                del self.handoffs[item]


class Channel:
    """Items due at a time of their own; an attempt sends (or, for those in `fail`, asks to be
    tried again in an hour)."""

    def __init__(self) -> None:
        self.due: dict[str, datetime | None] = {}
        self.sent: list[str] = []
        self.fail: set[str] = set()
        self.reads = 0

    async def waiting(self, item_ids: list[str]) -> dict[str, str]:
        self.reads += 1
        return {i: i for i in item_ids if i in self.due and i not in self.sent}

    def due_at(self, item: str) -> datetime | None:
        return self.due[item]

    def holding(self, item: str) -> AbstractAsyncContextManager[None]:
        return nullcontext()

    async def attempt(self, item: str) -> datetime | None:
        if item in self.fail:
            retry_at = clock.now() + timedelta(hours=1)
            self.due[item] = retry_at
            return retry_at
        self.sent.append(item)
        return None


def queue(store: Store, channel: Channel) -> DueQueue[str]:
    settings = Settings(sender_tick_seconds=3600.0)  # the hand-offs are read at the first pass
    q: DueQueue[str] = DueQueue(
        name="email",
        store=cast(Any, store),
        channel=cast(Any, channel),
        settings=settings,
        handoff=True,
    )
    q._running = True  # as while its loop runs on this copy
    return q


async def test_hand_offs_due_now_are_sent_where_they_are_and_taken_in_one_request() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    await q.work()  # the first pass: reads the cursor and the (empty) hand-offs
    first = Counter(store.calls)
    for n in range(5):
        channel.due[f"s{n}"] = None
        await q.file(f"s{n}", clock.now())
    await q.work()
    assert channel.sent == [f"s{n}" for n in range(5)]
    calls = store.calls - first
    assert calls == Counter(hand_off=5), "no bucket written or read, the hand-offs not read"
    assert channel.reads == 1, "the five read in one request"
    assert len(store.handoffs) == 5, "deleted at the next read of the hand-offs"
    q._read_at = None  # the tick is over
    await q.work()
    assert store.handoffs == {}
    assert (store.calls - first)["take_handoffs"] == 1
    assert channel.sent == [f"s{n}" for n in range(5)], "nothing sent twice"


async def test_a_retry_is_filed_in_its_bucket_and_the_bucket_not_read_again() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    channel.due["s1"], channel.fail = None, {"s1"}
    await q.file("s1", clock.now())
    await q.work()  # the first pass reads the hand-offs: what it is done with goes at its end
    assert store.calls["file"] == 1, "filed in the bucket of its retry"
    assert store.handoffs == {}, "its hand-off deleted once it was filed"
    reads = store.calls["bucket"]
    for _ in range(3):
        await q.work()
    assert store.calls["bucket"] == reads, "the worker knows its buckets"
    assert store.calls["cursor"] == 1, "and its cursor"
    assert channel.sent == []
    assert [i for ids in store.buckets.values() for i in ids] == ["s1"]


async def test_a_hand_off_from_another_copy_is_read_with_the_hand_offs_once_a_tick() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    await q.work()
    channel.due["elsewhere"] = None
    store.handoffs["elsewhere"] = clock.now()  # written by another copy: no wake-up here
    await q.work()
    assert channel.sent == [], "not before the tick is over"
    q._read_at = None
    await q.work()
    assert channel.sent == ["elsewhere"]


async def test_an_item_filed_again_while_its_hand_off_waits_to_be_deleted_is_kept() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    channel.due["s1"] = None
    await q.file("s1", clock.now())
    await q.work()
    assert channel.sent == ["s1"]
    await asyncio.sleep(0.002)
    later = clock.now()
    store.handoffs["s1"] = later.replace(microsecond=later.microsecond // 1000 * 1000)
    q._read_at = None
    await q.work()
    assert "s1" not in q._taken or q._taken["s1"] == store.handoffs.get("s1")
    q._read_at = None
    await q.work()
    assert store.handoffs == {}, "read again, found done with, deleted"
    assert channel.sent == ["s1"]


async def test_an_item_its_filer_hands_over_is_not_read_again() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    await q.work()
    channel.due["s1"] = None
    await q.file("s1", clock.now(), "s1")
    await q.work()
    assert channel.sent == ["s1"]
    assert channel.reads == 0


async def test_an_idle_queue_reads_its_hand_offs_less_often_until_another_copy_files() -> None:
    store, channel = Store(), Channel()
    q = queue(store, channel)
    tick = q.settings.sender_tick_seconds
    periods = []
    for _ in range(4):
        q._read_at = None
        await q.work()
        periods.append(q._period)
    assert periods == [2 * tick, 4 * tick, 4 * tick, 4 * tick]
    channel.due["elsewhere"] = None
    store.handoffs["elsewhere"] = clock.now()
    q._read_at = None
    await q.work()
    assert channel.sent == ["elsewhere"]
    assert q._period == tick


class Snapshots(Channel):
    """Items as read at a time: (id, due then); an attempt is counted each time."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[str] = []

    async def waiting(self, item_ids: list[str]) -> dict[str, Any]:
        self.reads += 1
        return {i: (i, self.due[i]) for i in item_ids if i in self.due and i not in self.sent}

    def due_at(self, item: Any) -> datetime | None:
        return cast(datetime | None, item[1])

    async def attempt(self, item: Any) -> datetime | None:
        self.attempts.append(item[0])
        return await super().attempt(item[0])


async def test_a_filing_worked_from_the_store_before_its_filer_noted_it_is_not_redone() -> None:
    """A pass that reads the hand-offs between the filer's write and its own note of the filing
    works the item from the store; the note, with the item as its filer wrote it (due now), must
    not send it again before its retry (seen: an email retried 30 s later was sent 21 ms later)."""
    store, channel = Store(), Snapshots()
    q = cast(DueQueue[Any], queue(store, channel))
    channel.due["s1"], channel.fail = None, {"s1"}
    write = store.hand_off

    async def worked_meanwhile(items: list[tuple[str, str, datetime]]) -> None:
        await write(items)
        await q.work()  # the worker's pass reads the hand-off from the store and attempts it

    store.hand_off = worked_meanwhile  # type: ignore[method-assign]
    await q.file("s1", clock.now(), ("s1", None))
    assert channel.attempts == ["s1"]
    await q.work()  # the filer's own note of the same filing is in memory now
    assert channel.attempts == ["s1"], "attempted again, though its retry is an hour away"
    q._read_at = None
    await q.work()
    assert channel.attempts == ["s1"]
    assert store.handoffs == {}, "its hand-off taken all the same"
