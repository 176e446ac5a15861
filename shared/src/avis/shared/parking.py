"""Events parked for a case the service does not know yet, and the bound on how long they wait.

A consumer that meets an event before the case it belongs to (no order across topics) keeps
what it needs on the case and acknowledges the event (docs/architecture.md, "When the second
event comes before the first"). Most such cases arrive within seconds; one that never does
must not keep its events forever. So every parked event is also written here, keyed by its
case (`_id` = case id, one document per unknown case: this collection holds only the cases
waiting now, and the sweep reads it whole). Once a case has waited `park_max_hours`, the service
drops what it parked and its events go to `<topic>.dlq` with the reason
`unknown case after <N>h`; their inbox markers are forgotten, so `avis-dlq-replay` applies them
again once the case exists.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog

from avis.shared.envelope import Event
from avis.shared.kafka import Messaging
from avis.shared.settings import CommonSettings

PARKED = "parked_events"
log = structlog.get_logger("avis.parking")
# The service's part of an expiry: under the case's lock, drop what it parked for the case and
# call the given `give_up` (which dead-letters the events); False if the case is known by now.
Expire = Callable[[str, Callable[[], Awaitable[None]]], Awaitable[bool]]
# Raises if this copy may no longer sweep (a newer holder of the parking lease exists).
Guard = Callable[[], Awaitable[object]]


class Parking:
    """The register of parked events of one service, and its sweep."""

    def __init__(self, messaging: Messaging, settings: CommonSettings) -> None:
        self.messaging = messaging
        self.parked = messaging.db[PARKED]
        self.max_age = timedelta(hours=settings.park_max_hours)
        self.every = settings.park_sweep_seconds
        self.reason = f"unknown case after {_duration(self.max_age)}"

    async def park(self, event: Event) -> None:
        """Note `event` as waiting for its case (call it under the case's lock)."""
        await self.parked.update_one(
            {"_id": event.subject},
            {"$setOnInsert": {"since": datetime.now(UTC)}, "$addToSet": {"events": event.to_doc()}},
            upsert=True,
        )

    async def release(self, case_id: str) -> None:
        """The case is known (or final): nothing of it waits any more."""
        await self.parked.delete_one({"_id": case_id})

    async def due(self, now: datetime | None = None) -> list[str]:
        """The cases whose events have waited longer than the bound."""
        cutoff = (now or datetime.now(UTC)) - self.max_age
        return [
            doc["_id"]
            async for doc in self.parked.find({}, {"since": 1})
            if _aware(doc["since"]) <= cutoff
        ]

    async def give_up(self, case_id: str) -> int:
        """Dead-letter the events parked for `case_id`, forget them; returns how many."""
        doc = await self.parked.find_one({"_id": case_id})
        events = [Event.from_doc(e) for e in (doc or {}).get("events") or []]
        for event in sorted(events, key=lambda e: e.time):
            await self.messaging.give_up(event, self.reason)
        await self.release(case_id)
        if events:
            log.warning("parked events dead-lettered", case_id=case_id, events=len(events))
        return len(events)

    async def sweep(
        self, expire: Expire, now: datetime | None = None, guard: Guard | None = None
    ) -> int:
        """Expire every case waiting too long; returns how many events were dead-lettered.
        `guard` (the lease's fence check) runs before each case and stops a former holder."""
        given = 0
        for case_id in await self.due(now):
            if guard is not None:
                await guard()
            count = 0

            async def give_up(case_id: str = case_id) -> None:
                nonlocal count
                count = await self.give_up(case_id)

            if await expire(case_id, give_up):
                given += count
            else:
                await self.release(case_id)
        return given

    async def run(self, expire: Expire, guard: Guard | None = None) -> None:
        """Sweep every `park_sweep_seconds`, for the life of the service (on the holder of the
        service's parking lease, so N copies sweep once per period)."""
        while True:
            try:
                await self.sweep(expire, guard=guard)
            except Exception as exc:  # the sweep outlives any failure: it runs again later
                log.warning("parked events not swept this time", error=type(exc).__name__)
            await asyncio.sleep(self.every)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _duration(span: timedelta) -> str:
    """`24h`, `90m` or `4s`: the bound as the dead letter's reason names it."""
    seconds = round(span.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
