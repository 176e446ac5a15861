"""Outbox without transactions (DESIGN.md section 4) and the relay that publishes it.

A state change and the events it causes go into the aggregate's document in one write: the
events are pushed onto its `outbox` array and counted in `outbox_pending`. The relay, in the
owning service's process, publishes each pending event and, only once the broker acknowledged
it, pulls that very element (whole) and decrements the count, holding the aggregate's lock so
it never rewrites a document behind its writer's back.
"""

import asyncio
import contextlib
import inspect
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from pymongo.asynchronous.collection import AsyncCollection

from avis.shared.envelope import Event
from avis.shared.mongo import AggregateLocks, Document
from avis.shared.observability import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE

PENDING = {"outbox_pending": {"$gt": 0}}
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


# Hands an event to the producer; the returned awaitable completes on the broker's ack.
Send = Callable[[Event], Awaitable[Awaitable[None]]]


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
    ) -> None:
        self.service = service
        self.send = send
        self.batch = batch
        self.locks = locks
        self.poll_seconds = poll_seconds
        self.backoff_max = backoff_max
        self.collections: list[AsyncCollection[Document]] = []
        self._wake = asyncio.Event()

    def watch(self, collection: AsyncCollection[Document]) -> None:
        """Relay the outbox of the aggregates in `collection`."""
        self.collections.append(collection)

    async def init(self) -> None:
        """Index what the relay polls for, in every watched collection."""
        for collection in self.collections:
            await collection.create_index("outbox_pending")

    def wake(self) -> None:
        """Tell the relay there is something to publish (writers call this after a write)."""
        self._wake.set()

    async def run(self) -> None:
        """Drain on every wake-up or poll interval; back off while a dependency is down."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                published = await self.drain()
                if failures:
                    log.info("outbox relay resumed", published=published)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = min(self.backoff_max, 0.2 * 2**failures) * random.uniform(0.8, 1.2)  # noqa: S311
                if failures == 1:  # once per pause: the runtime reports the missing dependency
                    log.warning("outbox relay paused", error=type(exc).__name__)
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def drain(self) -> int:
        """Publish every pending event once; returns how many were published."""
        published = 0
        for collection in self.collections:
            ids = [d["_id"] async for d in collection.find(PENDING, {"_id": 1}).sort("_id", 1)]
            for start in range(0, len(ids), self.batch):
                published += await self._relay(collection, ids[start : start + self.batch])
        await self.measure()
        return published

    async def _relay(self, collection: AsyncCollection[Document], ids: list[Any]) -> int:
        """Send the outboxes of `ids` in order, then mark each event once its ack is in."""
        async with contextlib.AsyncExitStack() as held:
            sent: list[tuple[Any, Document, Awaitable[None]]] = []
            try:
                for aggregate_id in ids:
                    # Locks taken in id order; each aggregate's writer waits meanwhile.
                    await held.enter_async_context(self.locks.hold(str(aggregate_id)))
                docs = collection.find({"_id": {"$in": ids}}, {"outbox": 1}).sort("_id", 1)
                async for doc in docs:
                    for entry in doc.get("outbox") or []:
                        sent.append((doc["_id"], entry, await self.send(Event.from_doc(entry))))
                for aggregate_id, entry, ack in sent:
                    await ack
                    # Marked only now that the broker acknowledged it. A crash before this
                    # line re-publishes the same ce_id later; consumers deduplicate on it.
                    await collection.update_one(
                        {"_id": aggregate_id},
                        {"$pull": {"outbox": entry}, "$inc": {"outbox_pending": -1}},
                    )
            finally:
                for *_, ack in sent:
                    if inspect.iscoroutine(ack):
                        ack.close()  # never awaited after a failure: the event stays pending
            return len(sent)

    async def measure(self) -> tuple[int, float]:
        """Update and return the backlog size and the age of its oldest event, in seconds."""
        backlog, oldest = 0, None
        for collection in self.collections:
            async for doc in collection.find(PENDING, {"outbox.time": 1}):
                for entry in doc.get("outbox") or []:
                    backlog += 1
                    t = entry["time"] if entry["time"].tzinfo else entry["time"].replace(tzinfo=UTC)
                    oldest = t if oldest is None or t < oldest else oldest
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        OUTBOX_BACKLOG.labels(self.service).set(backlog)
        OUTBOX_OLDEST_AGE.labels(self.service).set(age)
        return backlog, age
