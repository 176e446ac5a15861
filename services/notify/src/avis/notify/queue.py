"""The due-queue: work due at a time, filed under time buckets in the store, and the one loop that
works it. The emails and the webhook deliveries each have a queue of their own (store.py names
their documents); what differs between them, the channel, plugs into the same loop: which items
still wait, when each is due, and one attempt at one (which records what came of it and says
when to try again).

Exactly one worker per queue runs among the copies of notify: the holder of the queue's lease
(`email`, `webhook`; `avis.shared.lease`). Bucket documents are written by that worker only,
under the queue's in-process lock, and it walks forward from the stored cursor. Any copy files
an item by handing it off (`Store.hand_off`: one document per item, so no document is written by
two copies); the worker moves hand-offs into their buckets at the start of each pass, at once
when the filing copy is the worker's own, within a tick (`AVIS_NOTIFY_SENDER_TICK_SECONDS`)
otherwise. Before each attempt the worker checks its fence: a copy paused past its lease's ttl
(a SIGSTOP) resumes to find a newer epoch and sends nothing (`lease.Fenced`). A pause between
that check and the send can still repeat a send once; it carries the same Message-ID or
`webhook-id`, so the receiver can drop it (at least once, as DESIGN.md section 4 says).

Why a lease and not a partition: the work is ordered by time, not by case. Retries come due
hours later, long after the partition that queued them may have moved to another copy, and a
replay arrives over HTTP at any copy; one worker per queue walking one set of time buckets keeps
"what is due now" a read by `_id`. A take-over costs at most ttl + skew + ttl/3 (about 13 s)
of sending. docs/replicas.md has the whole argument."""

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Generic, Protocol, TypeVar

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


class Channel(Protocol[Item]):
    """What a channel plugs into the due-queue's loop."""

    async def waiting(self, item_id: str) -> Item | None:
        """The item, while it still waits to be sent (None: done with, or gone)."""

    def due_at(self, item: Item) -> datetime | None:
        """When the item is due (None: now)."""

    def holding(self, item: Item) -> AbstractAsyncContextManager[None]:
        """What to hold around an attempt and its filing (the item's lock, if it has one)."""

    async def attempt(self, item: Item) -> datetime | None:
        """Attempt the item once and record what came of it; when to try again, None once it
        is done with (sent, or given up)."""


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

    def wake(self) -> None:
        """Tell the loop there is work."""
        self._wake.set()

    async def file(self, item_id: str, at: datetime) -> None:
        """File an item due at `at` (from any copy: handed off to the queue's worker)."""
        if self.handoff:
            await self.store.hand_off(self.name, item_id, at)
            self.wake()
            return
        await self._file(item_id, at)

    async def _file(self, item_id: str, at: datetime) -> None:
        """File an item under the bucket of its due time (the worker, or the only filer)."""
        bucket = rules.bucket_of(at, self.settings.due_bucket_seconds)
        async with self._lock:
            # Never behind the cursor: the loop walks forward from it.
            if self._cursor is not None:
                bucket = max(bucket, self._cursor)
            await self.store.file(bucket, item_id, self.name)

    async def _unfile(self, bucket: int, item_id: str) -> None:
        async with self._lock:
            await self.store.unfile(bucket, item_id, self.name)

    async def run(self, lease: Lease | None = None) -> None:
        """Work the queue while this copy holds `lease` (for the life of the service without
        one): whatever is due, then sleep until the next due time, a wake-up, or the tick."""
        self.lease, self._cursor = lease, None
        retry = Backoff(self.settings.retry_backoff_max_seconds)
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
                # Whatever happened, the loop lives on: what was not recorded is still filed
                # and is tried again (an email with the same Message-ID).
                wait = retry.next_delay()
                log.exception("sender pass failed", queue=self.name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def work(self) -> float:
        """One pass: attempt (or start) what is due now; returns how long the loop may sleep."""
        await self._fence()
        size = self.settings.due_bucket_seconds
        current = rules.bucket_of(clock.now(), size)
        async with self._lock:
            cursor = await self.store.cursor(self.name)
            if cursor is None:
                cursor = current
                await self.store.set_cursor(cursor, self.name)
            self._cursor = cursor
        if self.handoff:
            # After the cursor is read: an item is never filed behind it (another holder may
            # have moved it since this copy last worked the queue).
            for item_id, at in await self.store.handed_off(self.name):
                await self._file(item_id, at)
                await self.store.take_handoff(self.name, item_id, at)
        sleep = self.settings.sender_tick_seconds
        for bucket in range(cursor, current + 1):
            for item_id in await self.store.bucket(bucket, self.name):
                pending = await self._step(item_id, bucket)
                if pending is not None:
                    sleep = min(sleep, max((pending - clock.now()).total_seconds(), 0.01))
        async with self._lock:
            moved = cursor
            while moved < current and not await self.store.bucket(moved, self.name):
                await self.store.drop_bucket(moved, self.name)
                moved += 1
            if moved != cursor:
                await self.store.set_cursor(moved, self.name)
            self._cursor = moved
        return sleep

    async def _step(self, item_id: str, bucket: int) -> datetime | None:
        """Attempt (or start) one filed item if it is due; returns its due time if not yet."""
        if self.pool is not None and self.pool.busy(item_id):
            return None
        item = await self.channel.waiting(item_id)
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
        if self.pool is None:
            await self._attempt(item_id, item, bucket)
        else:
            attempt = functools.partial(self._attempt, item_id, item, bucket)
            await self.pool.start(item_id, item, attempt, self.wake)
        return None

    async def _attempt(self, item_id: str, item: Item, bucket: int) -> None:
        """One attempt, then the item filed where its retry is due, or taken out once done."""
        async with self.channel.holding(item):
            await self._fence()
            retry_at = await self.channel.attempt(item)
            if retry_at is not None:
                await self._file(item_id, retry_at)
            size = self.settings.due_bucket_seconds
            if retry_at is None or rules.bucket_of(retry_at, size) != bucket:
                await self._unfile(bucket, item_id)

    async def _fence(self) -> None:
        """Refuse to go on (`lease.Fenced`) once a newer holder of the queue's lease exists."""
        if self.lease is not None:
            await self.lease.check()
