"""The due-queue: work due at a time, filed under time buckets in the store, and the one loop that
works it. The emails and the webhook deliveries each have a queue of their own (store.py names
their documents); what differs between them, the channel, plugs into the same loop: which items
still wait, when each is due, and one attempt at one (which records what came of it and says
when to try again).

Exactly one worker per queue runs among the copies of notify: the holder of the queue's lease
(`email`, `webhook`; `avis.shared.lease`). Bucket documents are written by that worker only,
under the queue's in-process lock, and it walks forward from the stored cursor. Any copy files
an item by handing it off (`Store.hand_off`: one document per item, so no document is written by
two copies); the worker takes it at once when the filing copy is the worker's own, within a
tick (`AVIS_NOTIFY_SENDER_TICK_SECONDS`) otherwise, or within four after a while when no other
copy filed anything (an idle queue reads less). A hand-off due now is worked where it is and
deleted once done with; one due later is moved into its bucket. Before each attempt the worker
checks its fence: a copy paused past its lease's ttl (a SIGSTOP) resumes to find a newer epoch
and sends nothing (`lease.Fenced`). A pause between that check and the send can still repeat a
send once; it carries the same Message-ID or `webhook-id`, so the receiver can drop it (at
least once, as DESIGN.md section 4 says).

What a case's sends cost the store (each email and each delivery): its hand-off written by the
copy that queues it (with the other items of the same event, in one request: `file_together`),
one read of it among the pass's items (`_id` `$in`) unless its filer handed it over as it wrote
it, the attempt's record, and its hand-off deleted with the others done since the last read, in
one request. What the
worker wrote to its buckets during its term it does not read again: it is their one writer, so
it remembers them (the cursor too), and an idle pass reads only the hand-offs, at most once a
tick.

Why a lease and not a partition: the work is ordered by time, not by case. Retries come due
hours later, long after the partition that queued them may have moved to another copy, and a
replay arrives over HTTP at any copy; one worker per queue walking one set of time buckets keeps
"what is due now" a read by `_id`. A take-over costs at most ttl + skew + ttl/3 (about 13 s)
of sending. docs/replicas.md has the whole argument."""

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import structlog

from avis.notify import rules
from avis.notify.settings import Settings
from avis.notify.store import DueQueueName, Store
from avis.shared import clock
from avis.shared.lease import Fenced, Lease
from avis.shared.mongo import STORE_ERRORS
from avis.shared.retry import Backoff

log = structlog.get_logger("avis.notify")

Item = TypeVar("Item")
# Hand-offs done with wait to be deleted until the next read of them, or until this many.
TAKEN_AT_MOST = 64
# The hand-offs are read once a tick, or up to this many ticks apart while no other copy files.
IDLE_TICKS = 4
# The filings of hand-offs a worker remembers having worked (the latest this many).
WORKED_KEPT = 256


class Channel(Protocol[Item]):
    """What a channel plugs into the due-queue's loop."""

    async def waiting(self, item_ids: list[str]) -> dict[str, Item]:
        """Those of the items that still wait to be sent, in one read (one left out: done
        with, or gone)."""

    def due_at(self, item: Item) -> datetime | None:
        """When the item is due (None: now)."""

    def holding(self, item: Item) -> AbstractAsyncContextManager[None]:
        """What to hold around an attempt and its filing (the item's lock, if it has one)."""

    async def attempt(self, item: Item) -> datetime | None:
        """Attempt the item once, as `waiting` read it in this pass (its one writer is this
        loop), and record what came of it; when to try again, None once it is done with (sent,
        or given up)."""


class Pool(Generic[Item]):
    """Attempts in tasks of their own: at most `size` at once, and for each share (a key of the
    item, e.g. its subscription, its partner) at most that share's number with the same key, so
    a slow endpoint, or a partner's many, hold only their own share."""

    def __init__(self, size: int, shares: Sequence[tuple[Callable[[Item], str], int]]) -> None:
        self.shares = list(shares)
        self._slots = asyncio.Semaphore(size)
        self._held: list[Counter[str]] = [Counter() for _ in self.shares]
        self._inflight: dict[str, asyncio.Task[None]] = {}

    def busy(self, item_id: str) -> bool:
        """Whether an attempt at the item is in flight."""
        return item_id in self._inflight

    async def start(
        self,
        item_id: str,
        item: Item,
        attempt: Callable[[], Awaitable[None]],
        done: Callable[[], None],
    ) -> None:
        """Run `attempt()` in a task if there is room for it (else a later pass starts it);
        `done` is called once it is over, however it ended."""
        keys = [key(item) for key, _ in self.shares]
        full = any(
            held[k] >= most
            for held, k, (_, most) in zip(self._held, keys, self.shares, strict=True)
        )
        if full or self._slots.locked():
            return
        await self._slots.acquire()
        for held, k in zip(self._held, keys, strict=True):
            held[k] += 1
        self._inflight[item_id] = asyncio.create_task(self._run(item_id, keys, attempt, done))

    async def _run(
        self,
        item_id: str,
        keys: list[str],
        attempt: Callable[[], Awaitable[None]],
        done: Callable[[], None],
    ) -> None:
        try:
            await attempt()
        except Exception:
            log.exception("attempt failed", item_id=item_id)
        finally:
            self._slots.release()
            for held, k in zip(self._held, keys, strict=True):
                held[k] -= 1
                if held[k] <= 0:
                    del held[k]  # a partner gone quiet leaves no count behind
            self._inflight.pop(item_id, None)
            done()


@dataclasses.dataclass(frozen=True)
class Filing(Generic[Item]):
    """One item to file on its queue, due at `at`; `item` as its filer wrote or read it."""

    queue: "DueQueue[Item]"
    item_id: str
    at: datetime
    item: Item | None = None


async def file_together(filings: Sequence[Filing[Any]]) -> None:
    """File items, of one queue or several (an event's email and its webhook deliveries): the
    hand-offs of the queues that take them in one store request, then each worker told."""
    handed = []
    for filing in filings:
        if not filing.queue.handoff:
            await filing.queue._file(filing.item_id, filing.at)
            continue
        at = filing.at.replace(microsecond=filing.at.microsecond // 1000 * 1000)  # as stored
        handed.append(dataclasses.replace(filing, at=at))
    if not handed:
        return
    await handed[0].queue.store.hand_off([(f.queue.name, f.item_id, f.at) for f in handed])
    for filing in handed:
        filing.queue._handed(filing.item_id, filing.at, filing.item)


class DueQueue(Generic[Item]):
    """One channel's queue of due work, and the loop that works it."""

    def __init__(
        self,
        *,
        name: DueQueueName,
        store: Store,
        channel: Channel[Item],
        settings: Settings,
        pool: Pool[Item] | None = None,
        handoff: bool = False,
    ) -> None:
        self.name = name
        # True where copies share the queue: filings go through `handoffs`, and only the lease
        # holder writes buckets (False: this process is the only filer, as in unit tests).
        self.handoff = handoff
        self.lease: Lease | None = None
        self.store = store
        self.channel = channel
        self.settings = settings
        self.pool = pool  # None: one attempt at a time, in the loop itself
        # Every write to the queue's bucket documents, under one lock.
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._cursor: int | None = None
        # What this worker knows for the term of its lease (the only writer of the buckets):
        # the buckets it has read or written, as they are in the store; the hand-offs it is
        # done with and has not deleted yet (item -> its filing time); its own copy's filings
        # since its last pass; the items whose attempts ended since a pass began reading.
        self._running = False
        self._known: dict[int, dict[str, None]] = {}  # ids in filing order
        self._taken: dict[str, datetime] = {}
        self._local: dict[str, datetime] = {}
        self._fresh: dict[str, Item] = {}  # ... and those of them its filer handed over
        self._ended: set[str] = set()
        # The hand-offs worked this term (item -> its filing time), the latest WORKED_KEPT: the
        # filer's own note of a filing (`_local`, `_fresh`) comes after its write to the store,
        # so a pass that read the hand-offs meanwhile may have worked it already; the note,
        # with the item as the filer wrote it, is then dropped rather than worked again.
        self._worked: dict[str, datetime] = {}
        self._read_at: float | None = None  # monotonic time of the last read of the hand-offs
        self._period = settings.sender_tick_seconds  # ... and until the next
        self._checked_at: float | None = None  # ... and of the last fence check in the store

    def wake(self) -> None:
        """Tell the loop there is work."""
        self._wake.set()

    async def file(self, item_id: str, at: datetime, item: Item | None = None) -> None:
        """File an item due at `at` (from any copy: handed off to the queue's worker); `item`,
        the item as its filer just wrote or read it, spares this copy's worker reading it."""
        await file_together([Filing(self, item_id, at, item)])

    def filing(self, item_id: str, at: datetime, item: Item | None = None) -> "Filing[Item]":
        """An item to file with others (`file_together`)."""
        return Filing(self, item_id, at, item)

    def _handed(self, item_id: str, at: datetime, item: Item | None) -> None:
        """Its hand-off is written: the worker, if it is this copy's, takes it from here at its
        next pass."""
        if self._running:
            self._local[item_id] = at
            if item is not None:
                self._fresh[item_id] = item
        self.wake()

    async def _file(self, item_id: str, at: datetime) -> None:
        """File an item under the bucket of its due time (the worker, or the only filer)."""
        bucket = rules.bucket_of(at, self.settings.due_bucket_seconds)
        async with self._lock:
            # Never behind the cursor: the loop walks forward from it.
            if self._cursor is not None:
                bucket = max(bucket, self._cursor)
            await self.store.file(bucket, item_id, self.name)
            if bucket in self._known:
                self._known[bucket][item_id] = None

    async def _unfile(self, bucket: int, item_id: str) -> None:
        async with self._lock:
            await self.store.unfile(bucket, item_id, self.name)
            if bucket in self._known:
                self._known[bucket].pop(item_id, None)

    async def _bucket(self, bucket: int, *, locked: bool = False) -> list[str]:
        """The ids filed under a bucket: read once a term (under the lock, so no filing of this
        worker's lands between the read and what it remembers), then as this worker wrote it."""
        if bucket not in self._known:
            if not locked:
                async with self._lock:
                    return await self._bucket(bucket, locked=True)
            self._known[bucket] = dict.fromkeys(await self.store.bucket(bucket, self.name))
        return list(self._known[bucket])

    async def run(self, lease: Lease | None = None) -> None:
        """Work the queue while this copy holds `lease` (for the life of the service without
        one): whatever is due, then sleep until the next due time, a wake-up, or the tick."""
        self.lease, self._cursor = lease, None
        self._known, self._taken, self._local, self._fresh = {}, {}, {}, {}
        self._worked = {}
        self._read_at = self._checked_at = None
        self._period = self.settings.sender_tick_seconds
        self._running = True
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        try:
            while True:
                self._wake.clear()
                try:
                    wait = await self.work()
                    retry.reset()
                except Fenced:
                    wait = self.settings.sender_tick_seconds  # lost the lease: its loss ends us
                except STORE_ERRORS as exc:
                    wait = retry.next_delay()
                    log.warning("sender waits for the store", error=type(exc).__name__)
                except Exception:
                    # Whatever happened, the loop lives on: what was not recorded is still
                    # filed and is tried again (an email with the same Message-ID).
                    wait = retry.next_delay()
                    log.exception("sender pass failed", queue=self.name)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            self._running = False
            self._local, self._fresh = {}, {}

    async def work(self) -> float:
        """One pass: attempt (or start) what is due now; returns how long the loop may sleep.

        The hand-offs are read whole once a tick (another copy's filings, and whatever an
        earlier holder left), or less often, up to `IDLE_TICKS` ticks apart, while a read finds
        none but this copy's own; between, a pass takes this copy's own filings from memory. A
        hand-off due now is attempted where it is, and deleted (with the others done since the
        last read, in one request) once it is done with; one due later is filed in its bucket.
        """
        await self._fence()
        size, tick = self.settings.due_bucket_seconds, self.settings.sender_tick_seconds
        current = rules.bucket_of(clock.now(), size)
        async with self._lock:
            if self._cursor is None:
                cursor = await self.store.cursor(self.name)
                if cursor is None:
                    cursor = current
                    await self.store.set_cursor(cursor, self.name)
                self._cursor = cursor
            cursor = self._cursor
        sleep = tick
        if self.handoff:
            # After the cursor is read: an item is never filed behind it (another holder may
            # have moved it since this copy last worked the queue).
            began = time.monotonic()
            whole = self._read_at is None or began - self._read_at >= self._period
            handed, self._local = self._local, {}
            fresh, self._fresh = self._fresh, {}
            if whole:
                stored = await self.store.handed_off(self.name)
                self._read_at = began
                found = {item: at for item, at in stored if self._taken.get(item) != at}
                # Idle, or only this copy's own filings: read less often, up to IDLE_TICKS
                # ticks apart; another copy's filing (or an earlier holder's) brings it back.
                others = any(
                    handed.get(item) != at and not self._busy(item) for item, at in found.items()
                )
                self._period = tick if others else min(self._period * 2, tick * IDLE_TICKS)
                handed = found | handed
            read_at = began if whole else self._read_at
            assert read_at is not None
            sleep = max(self._period - (time.monotonic() - read_at), 0.01)
            await self._work_handed(handed, fresh)
            if whole or len(self._taken) >= TAKEN_AT_MOST:
                taken, self._taken = self._taken, {}
                await self.store.take_handoffs(self.name, taken)
        for bucket in range(cursor, current + 1):
            ids = await self._bucket(bucket)
            for item_id, item in (await self._waiting(ids)).items():
                pending = await self._step(item_id, item, bucket)
                if pending is not None:
                    sleep = min(sleep, max((pending - clock.now()).total_seconds(), 0.01))
        async with self._lock:
            moved = cursor
            while moved < current and not await self._bucket(moved, locked=True):
                await self.store.drop_bucket(moved, self.name)
                self._known.pop(moved, None)
                moved += 1
            if moved != cursor:
                await self.store.set_cursor(moved, self.name)
            self._cursor = moved
        return sleep

    async def _waiting(self, ids: list[str]) -> dict[str, Item | None]:
        """The items not in flight, as they are now (None: done with), in one read. An item
        whose attempt ended after the read began is left to the next pass: what was read of it
        may be older than what its attempt wrote."""
        ids = [i for i in ids if not self._busy(i)]
        if not ids:
            return {}
        self._ended.clear()
        found = await self.channel.waiting(ids)
        return {i: found.get(i) for i in ids if i not in self._ended}

    def _busy(self, item_id: str) -> bool:
        return self.pool is not None and self.pool.busy(item_id)

    async def _work_handed(self, handed: dict[str, datetime], fresh: dict[str, Item]) -> None:
        """Work the hand-offs where they are: done with ones taken, ones due later filed in
        their buckets, ones due now attempted (or left for the next pass: no room, in flight).
        One this copy's filer handed over as it wrote it is not read again: nothing but this
        loop moves it on from there (an erasure's cancel is seen by the attempt itself)."""
        for item_id, at in list(handed.items()):
            if self._worked.get(item_id) == at:  # worked already: read from the store first
                del handed[item_id]
                self._taken[item_id] = at
        given: dict[str, Item | None] = {
            i: fresh[i] for i in handed if i in fresh and not self._busy(i)
        }
        waiting = given | await self._waiting([i for i in handed if i not in given])
        for item_id, at in handed.items():
            if item_id not in waiting:  # in flight, or its attempt just ended: next pass
                self._local[item_id] = at
                continue
            item = waiting[item_id]
            due = None if item is None else self.channel.due_at(item)
            if item is not None and due is not None and due > clock.now():
                await self._file(item_id, due)
            elif item is not None:
                await self._start(item_id, item, None, at)
                continue
            self._taken[item_id] = at
            self._note_worked(item_id, at)

    async def _step(self, item_id: str, item: Item | None, bucket: int) -> datetime | None:
        """Attempt (or start) one filed item if it is due; returns its due time if not yet."""
        if item is None:
            await self._unfile(bucket, item_id)  # done with already (a crash before unfiling)
            return None
        due = self.channel.due_at(item)
        if due is not None and due > clock.now():
            if rules.bucket_of(due, self.settings.due_bucket_seconds) > bucket:
                # Filed early: move it where it belongs.
                await self._file(item_id, due)
                await self._unfile(bucket, item_id)
                return None
            return due
        await self._start(item_id, item, bucket, None)
        return None

    async def _start(
        self, item_id: str, item: Item, bucket: int | None, handed_at: datetime | None
    ) -> None:
        """Attempt the item in the loop, or start it in the pool (a hand-off not started for
        want of room waits for the next pass)."""
        if self.pool is None:
            await self._attempt(item_id, item, bucket, handed_at)
            return
        attempt = functools.partial(self._attempt, item_id, item, bucket, handed_at)
        await self.pool.start(item_id, item, attempt, functools.partial(self._end, item_id))
        if handed_at is not None and not self.pool.busy(item_id):
            self._local[item_id] = handed_at

    def _end(self, item_id: str) -> None:
        """An attempt in the pool is over: the next pass may start what waited for room."""
        self._ended.add(item_id)
        self.wake()

    async def _attempt(
        self, item_id: str, item: Item, bucket: int | None, handed_at: datetime | None
    ) -> None:
        """One attempt, then the item filed where its retry is due, and taken out of its bucket
        or its hand-off once it is not due there any more."""
        async with self.channel.holding(item):
            await self._fence()
            retry_at = await self.channel.attempt(item)
            if retry_at is not None:
                await self._file(item_id, retry_at)
            if bucket is None:
                assert handed_at is not None
                self._taken[item_id] = handed_at  # deleted with the next read of the hand-offs
                self._note_worked(item_id, handed_at)
                return
            size = self.settings.due_bucket_seconds
            if retry_at is None or rules.bucket_of(retry_at, size) != bucket:
                await self._unfile(bucket, item_id)

    def _note_worked(self, item_id: str, at: datetime) -> None:
        """Remember that the hand-off filed at `at` was worked (the latest WORKED_KEPT)."""
        self._worked.pop(item_id, None)
        self._worked[item_id] = at
        if len(self._worked) > WORKED_KEPT:
            del self._worked[next(iter(self._worked))]

    async def _fence(self) -> None:
        """Refuse to go on (`lease.Fenced`) once a newer holder of the queue's lease exists.

        The store is asked at most once a renewal period (ttl/3, the period at which the lease
        itself asks it, renewing); in between, the lease's own verdict: held until its last
        renewal began plus its ttl on this copy's monotonic clock, which a pause (a SIGSTOP)
        runs past, so a copy resumed after a take-over asks the store again before any
        attempt."""
        if self.lease is None:
            return
        now = time.monotonic()
        recent = self._checked_at is not None and now - self._checked_at < self.lease.ttl / 3
        if recent and self.lease.holding():
            return
        await self.lease.check()
        self._checked_at = now
