"""Outbox without transactions (DESIGN.md section 4) and the relay that publishes it.

A state change and the events it causes go into the aggregate's document in one write: the
events are pushed onto its `outbox` array and counted in `outbox_pending`. The relay, in the
owning service's process, publishes each pending event and, only once the broker acknowledged
it, pulls that very element (whole) and decrements the count, holding the aggregate's lock so
it never rewrites a document behind its writer's back.

The relay's cost follows what is pending, never what is stored: it reads aggregates by `_id`
only. A writer names the aggregate before its write (`Relay.publishing`): a small hint document
(`outbox_hints`, `_id` = `<collection>:<aggregate id>:<writer>`) is stored first, so a crash
between the write and the publish, even of an instance that never comes back, is recovered by
reading the hints (as many as there are pending aggregates), and the relay is woken with the id
after the write. The hint goes once the aggregate's outbox is out, taken away by the relay that
acts for its writer (the writer's own, or the one that adopted a gone copy's hint): one hint
per writer, so a relay publishing an aggregate never takes away the hint another copy stored
for events it wrote after the outbox was read (the lock does not reach that copy), which would
leave them to that copy's memory alone, lost with it.

A relay's own hints go together, one request a `forget_seconds` (a second) at most, rather
than one request per aggregate: each hint carries a token of the write it guards (a new one at
every write), and
the delete names the hint and the token seen under the aggregate's lock, so a hint the writer
stored again since (a newer write, its events not yet out) has another token and stays. A
hint left by a crash before that delete names an outbox already out: its recovery reads the
aggregate, publishes nothing and takes the hint away.

With several copies of a service, the lock is only in one process: a relay that publishes
another copy's aggregate could `$pull` beside that copy's next write, and the store's
read-modify-write update would lose one of the two. So a hint names its writer (the copy), and
a relay takes another copy's hint only once that copy is gone (its presence, a lease it holds
for life, expired or released), and only on the copy that holds the adoption lease; a live
copy's hints, however old, are left to its own relay (which retries them itself). A hint whose
writer is unknown (it named none, or its writer has not claimed its presence yet) is taken
once it is older than `recover_seconds`, as before. docs/replicas.md says what is left.
"""

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from avis.shared.envelope import Event
from avis.shared.mongo import AggregateLocks, Document, lock_key
from avis.shared.observability import OUTBOX_BACKLOG, OUTBOX_MARK, OUTBOX_OLDEST_AGE
from avis.shared.retry import Backoff

HINTS = "outbox_hints"
log = structlog.get_logger("avis.outbox")


def with_events(update: dict[str, Any], events: Sequence[Event]) -> dict[str, Any]:
    """`update` (a single-document update) extended with the events it causes."""
    merged = {op: dict(fields) for op, fields in update.items()}
    if events:
        merged.setdefault("$push", {})["outbox"] = {"$each": [e.to_doc() for e in events]}
        merged.setdefault("$inc", {})["outbox_pending"] = len(events)
    return merged


def new_with_events(doc: Document, events: Sequence[Event]) -> Document:
    """A new aggregate document carrying the events its creation causes."""
    return {**doc, "outbox": [e.to_doc() for e in events], "outbox_pending": len(events)}


def _hint_id(collection: str, aggregate_id: Any, writer: str) -> str:
    return f"{collection}:{aggregate_id}:{writer}"


# Hands an event to the producer; the returned awaitable completes on the broker's ack.
Send = Callable[[Event], Awaitable[Awaitable[None]]]
# Whether a copy (a writer) still lives: True, False (gone), None (not known).
Alive = Callable[[str], Awaitable[bool | None]]


class Relay:
    """Publishes the outbox of the watched collections; marks each event after its ack."""

    def __init__(
        self,
        service: str,
        send: Send,
        locks: AggregateLocks,
        poll_seconds: float = 1.0,
        backoff_max: float = 10.0,
        batch: int = 100,
        recover_seconds: float = 30.0,
        writer: str = "",
        alive: Alive | None = None,
        adopts: Callable[[], bool] = lambda: True,
        forget_seconds: float = 1.0,
    ) -> None:
        self.service = service
        self.writer = writer  # this copy, named in its hints
        self.alive = alive  # None: no copy is known alive, every hint goes by its age
        self.adopts = adopts  # whether this copy takes the hints of copies that are gone
        self.send = send
        self.batch = batch
        self.locks = locks
        self.poll_seconds = poll_seconds
        self.backoff_max = backoff_max
        self.recover_seconds = recover_seconds
        self.collections: dict[str, AsyncCollection[Document]] = {}
        self._wake = asyncio.Event()
        # Aggregates written since the last drain, by collection: the live path.
        self._pending: dict[str, set[Any]] = {}
        # The hints of other writers this relay took (`recover`), taken away once out.
        self._adopted: dict[tuple[str, Any], set[str]] = {}
        # The token of this copy's last hint per aggregate (set and taken under its lock), and
        # the hints whose outbox is out, by collection: (hint id, token), deleted together.
        self._tokens: dict[tuple[str, Any], str] = {}
        self._spent: dict[str, list[tuple[str, str]]] = {}
        self.forget_seconds = forget_seconds
        self._forgot_at = -forget_seconds
        self._recovered_at: float | None = None
        # Pending events not yet acknowledged, for the backlog gauges: aggregate -> times.
        self._backlog: dict[tuple[str, Any], list[datetime]] = {}

    def watch(self, collection: AsyncCollection[Document]) -> None:
        """Relay the outbox of the aggregates in `collection`."""
        self.collections[collection.name] = collection

    @contextlib.asynccontextmanager
    async def publishing(
        self, collection: AsyncCollection[Document], aggregate_id: Any
    ) -> AsyncIterator[None]:
        """Around a write that puts events on an aggregate's outbox (under its lock).

        The hint is stored before the write, so no crash can leave an event nobody knows of;
        the relay is woken with the aggregate's id once the write is done.
        """
        async with self.publishing_many(collection, [aggregate_id]):
            yield

    @contextlib.asynccontextmanager
    async def publishing_many(
        self, collection: AsyncCollection[Document], aggregate_ids: Sequence[Any]
    ) -> AsyncIterator[None]:
        """`publishing` for a write that puts events on several aggregates' outboxes (under
        all their locks): their hints stored in one request before it, the relay woken with
        each id after it."""
        if collection.name not in self.collections:
            raise ValueError(f"the relay does not watch {collection.name!r}")
        now = datetime.now(UTC)
        tokens = {aggregate_id: uuid.uuid4().hex for aggregate_id in aggregate_ids}
        if tokens:
            await collection.database[HINTS].bulk_write(
                [
                    UpdateOne(
                        {"_id": _hint_id(collection.name, aggregate_id, self.writer)},
                        {
                            "$set": {
                                "collection": collection.name,
                                "aggregate": aggregate_id,
                                "at": now,
                                "writer": self.writer,
                                "token": token,
                            }
                        },
                        upsert=True,
                    )
                    for aggregate_id, token in tokens.items()
                ]
            )
        for aggregate_id, token in tokens.items():
            self._tokens[(collection.name, aggregate_id)] = token
        yield
        for aggregate_id in tokens:
            self.note(collection.name, aggregate_id)

    def note(self, collection: str, aggregate_id: Any) -> None:
        """Publish the outbox of this aggregate soon (its hint is already stored)."""
        self._pending.setdefault(collection, set()).add(aggregate_id)
        self._wake.set()

    def wake(self) -> None:
        """Tell the relay to drain now."""
        self._wake.set()

    async def run(self) -> None:
        """Drain on every wake-up or poll interval; back off while a dependency is down."""
        retry = Backoff(self.backoff_max)
        while True:
            self._wake.clear()
            try:
                published = await self.drain()
                if retry.attempt:
                    log.info("outbox relay resumed", published=published)
                retry.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = retry.next_delay()
                if retry.attempt == 1:  # once per pause: the runtime reports the missing dependency
                    log.warning("outbox relay paused", error=type(exc).__name__)
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()

    async def recover(self) -> int:
        """Queue every aggregate a hint names that is this relay's to publish (left by a crash,
        here or in a copy that is gone; see the module's docstring).

        Without knowledge of the copies (`alive` None), every hint counts at start and later
        those older than `recover_seconds`. The hints are as many as the pending aggregates,
        so reading them all costs what is pending, not what is stored.
        """
        found = 0
        first = self._recovered_at is None
        cutoff = datetime.now(UTC).timestamp() - self.recover_seconds
        verdicts: dict[str, bool | None] = {}
        for collection in self.collections.values():
            hints = collection.database[HINTS]
            async for hint in hints.find({"collection": collection.name}):
                old = _aware(hint["at"]).timestamp() < cutoff
                if await self._ours(str(hint.get("writer") or ""), first, old, verdicts):
                    self._pending.setdefault(collection.name, set()).add(hint["aggregate"])
                    key = (collection.name, hint["aggregate"])
                    self._adopted.setdefault(key, set()).add(str(hint["_id"]))
                    found += 1
        self._recovered_at = time.monotonic()
        return found

    async def _ours(
        self, writer: str, first: bool, old: bool, verdicts: dict[str, bool | None]
    ) -> bool:
        """Whether a hint of `writer` is this relay's to publish now."""
        if self.alive is None or (writer and writer == self.writer):
            return first or old
        if not self.adopts():
            return False
        if writer and writer not in verdicts:
            verdicts[writer] = await self.alive(writer)
        verdict = verdicts.get(writer)
        if verdict is None:
            return old  # unknown: its writer may be starting; taken once it is old
        return not verdict  # a live copy's own relay publishes it

    async def drain(self) -> int:
        """Publish the outboxes of the aggregates written since the last drain (and of every
        hint, at start and every `recover_seconds`); returns how many events went out."""
        due = self._recovered_at is None or (
            time.monotonic() - self._recovered_at >= self.recover_seconds
        )
        if due:
            await self.recover()
        taken, self._pending = self._pending, {}
        published = 0
        try:
            for name in sorted(taken):
                ids = sorted(taken[name])
                while ids:
                    batch = ids[: self.batch]
                    published += await self._relay(self.collections[name], batch)
                    del ids[: len(batch)]
            if time.monotonic() - self._forgot_at >= self.forget_seconds:
                await self._forget_spent()
        except BaseException:
            # What was not done stays queued for the next drain (and hinted in the store).
            for name, left in taken.items():
                self._pending.setdefault(name, set()).update(left)
            raise
        finally:
            self.measure()
        return published

    async def _relay(self, collection: AsyncCollection[Document], ids: list[Any]) -> int:
        """Send the outboxes of `ids` in order, then mark each event once its ack is in."""
        hints = collection.database[HINTS]
        async with contextlib.AsyncExitStack() as held:
            sent: list[tuple[Any, Document, Awaitable[None]]] = []
            try:
                for aggregate_id in ids:
                    # Locks taken in id order; each aggregate's writer (`Emitter.lock`) waits.
                    lock = lock_key(collection.name, str(aggregate_id))
                    await held.enter_async_context(self.locks.hold(lock))
                for aggregate_id in ids:
                    doc = await collection.find_one({"_id": aggregate_id}, {"outbox": 1})
                    entries = (doc or {}).get("outbox") or []
                    key = (collection.name, aggregate_id)
                    self._backlog[key] = [_aware(e["time"]) for e in entries]
                    for entry in entries:
                        sent.append((aggregate_id, entry, await self.send(Event.from_doc(entry))))
                for aggregate_id, entry, ack in sent:
                    await ack
                    # Marked only now that the broker acknowledged it. A crash before this
                    # line re-publishes the same ce_id later; consumers deduplicate on it.
                    await collection.update_one(
                        {"_id": aggregate_id},
                        {"$pull": {"outbox": entry}, "$inc": {"outbox_pending": -1}},
                        comment=OUTBOX_MARK,
                    )
                    self._backlog[(collection.name, aggregate_id)].pop(0)
                for aggregate_id in ids:
                    # Still under the lock: no writer of this copy added to this outbox since it
                    # was read; another copy's may have, and its hint stays (its own relay's).
                    key = (collection.name, aggregate_id)
                    mine = _hint_id(collection.name, aggregate_id, self.writer)
                    adopted = self._adopted.pop(key, set())
                    token = self._tokens.pop(key, None)
                    if token is not None:  # this copy's hint of its last write: with the others
                        self._spent.setdefault(collection.name, []).append((mine, token))
                        adopted.discard(mine)
                    for hint_id in sorted(adopted):
                        await hints.delete_one({"_id": hint_id})
                    self._backlog.pop(key, None)
            finally:
                for *_, ack in sent:
                    if inspect.iscoroutine(ack):
                        ack.close()  # never awaited after a failure: the event stays pending
            return len(sent)

    async def _forget_spent(self) -> None:
        """Delete this copy's hints whose outbox is out, each only if not stored again since
        (its token unchanged), in one request per collection and up to `batch` hints."""
        self._forgot_at = time.monotonic()
        for name in sorted(self._spent):
            hints = self.collections[name].database[HINTS]
            while spent := self._spent.get(name):
                chunk = spent[: self.batch]
                await hints.delete_many({"$or": [{"_id": i, "token": t} for i, t in chunk]})
                del spent[: len(chunk)]
            self._spent.pop(name, None)

    def measure(self) -> tuple[int, float]:
        """Update and return the backlog the relay knows of and the age of its oldest event."""
        times = [t for entries in self._backlog.values() for t in entries]
        age = (datetime.now(UTC) - min(times)).total_seconds() if times else 0.0
        OUTBOX_BACKLOG.labels(self.service).set(len(times))
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)
        return len(times), age


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
