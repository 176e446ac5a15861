"""The one way a service publishes an event (DESIGN.md section 4), written once.

    emitter = Emitter("/avis/intake", runtime.relay, store.cases)   # in main.py
    event = await emitter.emit(
        "intake.case.withdraw",                               # the span, in the case's trace
        CaseWithdrawn(case_id=case_id, withdrawn_at=at),      # or `lambda event_id: ...`
        aggregate=case_id,                                    # whose outbox it goes on
        trace=case.traceparent,
        write=lambda events: store.withdraw(case_id, at=at, events=events),
    )

`emit` opens a span in the case's trace, builds the event there (so it carries that trace),
leaves the relay its hint, hands the event to `write`, the store method that writes the state
change and the event in one single-document write (`avis.shared.outbox.with_events`), then
wakes the relay with the aggregate's id.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pymongo.asynchronous.collection import AsyncCollection

from avis.shared.envelope import Event, new_event_id
from avis.shared.events import Payload
from avis.shared.mongo import Document, lock_key
from avis.shared.observability import case_span
from avis.shared.outbox import Relay

T = TypeVar("T")
# A payload, or a function of the event id building it (when it seals a field under that id).
PayloadOf = Payload | Callable[[str], Payload]
Write = Callable[[Sequence[Event]], Awaitable[T]]


class Emitter:
    """Builds a service's events under the case's trace and hands them to its relay."""

    def __init__(self, source: str, relay: Relay, outbox: AsyncCollection[Document]) -> None:
        """Events go on the outbox of aggregates in `outbox`, which the relay now watches."""
        self.source = source
        self.relay = relay
        self.outbox = outbox
        relay.watch(outbox)

    def lock(self, aggregate: str) -> str:
        """The lock key of an aggregate of this outbox: its writer holds it, and the relay too
        while it publishes the aggregate's events, so neither rewrites the other's change."""
        return lock_key(self.outbox.name, aggregate)

    def event(self, span: str, payload: PayloadOf, *, trace: str = "") -> Event:
        """A new event, built in span `span` of the case's trace (`trace`: its traceparent).

        Without a trace (a case nobody traced yet), the current trace becomes the case's: the
        event's own `traceparent` is then the one to keep on the case.
        """
        event_id = new_event_id()
        with case_span(span, trace) as current:
            built = payload(event_id) if callable(payload) else payload
            current.set_attribute("avis.case_id", built.case_id)
            return Event.new(built, self.source, event_id=event_id)

    async def emit(
        self, span: str, payload: PayloadOf, *, aggregate: str, trace: str, write: Write[T]
    ) -> Event:
        """Build the event, write it with its state change in one write, hand it to the relay."""
        event = self.event(span, payload, trace=trace)
        await self.write(write, [event], aggregate=aggregate)
        return event

    async def write(self, write: Write[T], events: Sequence[Event], *, aggregate: str) -> T:
        """Run `write` with `events` (possibly none) on the outbox of aggregate `aggregate`.

        With events, the relay's hint is stored before the write and the relay is woken with
        the aggregate's id after it (`Relay.publishing`); the caller holds the aggregate's lock.
        """
        if not events:
            return await write(events)
        async with self.relay.publishing(self.outbox, aggregate):
            return await write(events)

    async def write_many(self, write: Callable[[], Awaitable[T]], aggregates: Sequence[str]) -> T:
        """Run `write`, which puts events on the outboxes of several `aggregates` in one
        request (`events` built beforehand with `event`): the relay's hints stored together
        before it, the relay woken with each id after it; the caller holds every aggregate's
        lock."""
        async with self.relay.publishing_many(self.outbox, aggregates):
            return await write()
