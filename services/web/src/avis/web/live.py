"""Live status by server-sent events, and the broker-side readings of the board.

Web reads the four topics in a consumer group of its own copy (so every copy sees every event)
and keeps only each event's case id and type: events carry no health data, and web stores
nothing of them. A case's page opens `/cases/{id}/live`; when an event of that case arrives,
the stream asks intake for the case again with the person's own token and pushes the new
timeline. Intake decides, at the opening and at every push, who may see the case, so a stream
only ever carries a case's updates to someone who may see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import StreamingResponse
from faststream.kafka.annotations import KafkaMessage

from avis.shared import topics
from avis.shared.clock import now
from avis.shared.kafka import dlq_depths, make_broker, tolerant_parse, undecoded
from avis.shared.kafka_access import KafkaAccess, refuse_anonymous_in_production
from avis.shared.retry import Backoff
from avis.shared.tasks import stopped
from avis.web import rules
from avis.web.api import POLL_SECONDS, CaseId, Pages, Person, Web, language_of, token, zone_of
from avis.web.models import CaseView
from avis.web.service import Refused
from avis.web.settings import Settings
from avis.web.store import Session
from avis.web.texts import Texts

log = structlog.get_logger("avis.web.live")
router = APIRouter(include_in_schema=False)
KEEPALIVE_SECONDS = 15.0
# After an event, intake may not have applied it yet: ask again this often, this many times.
CATCH_UP_SECONDS = 0.3
CATCH_UP_TRIES = 20
DEAD_LETTERS_EVERY = 30.0


class Hub:
    """The open streams of this copy, by case id."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue[str | None]]] = {}

    @contextlib.contextmanager
    def watch(self, case_id: str) -> Iterator[asyncio.Queue[str | None]]:
        """A queue of the case's event types while the stream is open."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=16)
        self._watchers.setdefault(case_id, set()).add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(case_id, set())
            watchers.discard(queue)
            if not watchers:
                self._watchers.pop(case_id, None)

    def changed(self, case_id: str, event_type: str) -> None:
        """An event of `case_id` arrived: wake its streams (a full queue has a wake-up already)."""
        for queue in self._watchers.get(case_id, ()):
            if not queue.full():
                queue.put_nowait(event_type)

    def close(self) -> None:
        """End every stream (the app stops)."""
        for watchers in self._watchers.values():
            for queue in watchers:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    def __len__(self) -> int:
        return sum(len(w) for w in self._watchers.values())


class Feed:
    """The topics, read by this copy of web in a consumer group of its own, from their end."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self.settings = settings
        self.broker = make_broker(settings, publishes=False)
        self.group = f"avis-web-live-{uuid.uuid4().hex[:12]}"
        self._task: asyncio.Task[None] | None = None

        @self.broker.subscriber(
            *topics.TOPICS,
            group_id=self.group,
            auto_offset_reset="latest",
            decoder=undecoded,
            parser=tolerant_parse,
        )
        async def seen(msg: KafkaMessage) -> None:
            record = cast(ConsumerRecord[bytes, bytes], msg.raw_message)
            headers = dict(record.headers or ())
            subject = (headers.get("ce_subject") or b"").decode(errors="replace")
            kind = (headers.get("ce_type") or b"").decode(errors="replace")
            if subject:
                hub.changed(subject, kind)

    def start(self) -> None:
        """Connect in the background, retrying with backoff until the broker answers."""
        self._task = asyncio.create_task(self._connect(), name="web-live-feed")

    async def _connect(self) -> None:
        retry = Backoff(self.settings.retry_backoff_max_seconds)
        while True:
            try:
                await self.broker.start()
                log.info("live status connected", group=self.group)
                return
            except (KafkaError, OSError) as exc:
                log.warning("live status waits for Kafka", error=type(exc).__name__)
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(retry.next_delay())

    async def stop(self) -> None:
        """Stop reading, within the shutdown grace: a broker already gone must not hold the
        process (leaving the group would wait for it)."""
        await stopped(self._task)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.shutdown_grace_seconds):
                await self.broker.stop()


@dataclass(frozen=True)
class Depths:
    """Dead letters not yet replayed per topic, as last measured."""

    by_topic: dict[str, int]
    at: datetime

    @property
    def total(self) -> int:
        """All topics together."""
        return sum(self.by_topic.values())


class DeadLetters:
    """Dead-letter depth, read from the broker now and then (no service's API gives it): the
    end of each `<topic>.dlq` minus what the replay group has put back."""

    def __init__(self, kafka: KafkaAccess, every: float = DEAD_LETTERS_EVERY) -> None:
        self.kafka = kafka
        self.every = every
        self.last: Depths | None = None
        self._measuring: asyncio.Task[None] | None = None

    def depths(self) -> Depths | None:
        """The last measure (None: none yet); a stale one is measured again in the background,
        so a page never waits for the broker."""
        stale = self.last is None or (now() - self.last.at).total_seconds() > self.every
        if stale and (self._measuring is None or self._measuring.done()):
            self._measuring = asyncio.create_task(self._measure(), name="web-dead-letters")
        return self.last

    async def _measure(self) -> None:
        try:
            async with asyncio.timeout(10):
                found = await dlq_depths(self.kafka, topics.TOPICS)
            self.last = Depths(found, now())
        except Exception as exc:  # the board says "not measured" rather than fail
            log.info("dead-letter depth not measured", error=type(exc).__name__)


def attach(app: FastAPI, web: Web, settings: Settings) -> None:
    """Give the app its hub, its feed (started and stopped with the app) and its dead letters."""
    refuse_anonymous_in_production(settings)  # it reads the topics and the dead letters
    hub = Hub()
    app.state.live = hub
    app.state.dead_letters = DeadLetters(KafkaAccess.of(settings))
    feed = Feed(settings, hub) if settings.live_events else None
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        async with inner(application):
            if feed is not None:
                feed.start()
            try:
                yield
            finally:
                hub.close()
                if feed is not None:
                    await feed.stop()

    app.router.lifespan_context = lifespan


def event(name: str, data: str) -> str:
    """One server-sent event: its name and its data, line by line."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


@router.get("/cases/{case_id}/live")
async def live(request: Request, web: Pages, session: Person, case_id: CaseId) -> StreamingResponse:
    """The case's new timeline each time it moves, for as long as the page is open."""
    case = await web.platform.get_case(token=token(session), case_id=case_id)
    hub: Hub = request.app.state.live
    stream = Stream(web, session, case, Texts(language_of(request), zone_of(request)))
    return StreamingResponse(
        stream.events(hub),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


class Stream:
    """One page's stream: what it was opened on, and what it has shown since."""

    def __init__(self, web: Web, session: Session, case: CaseView, texts: Texts) -> None:
        self.web = web
        self.session = session
        self.case_id = case.case_id
        self.opened = rules.case_actions(
            case.status, len(case.documents), erased=bool(case.erased_at)
        )
        self.shown = _moment(case)
        self.texts = texts

    def alive(self) -> bool:
        """Whether the person is still signed in (not signed out, not idle too long)."""
        sessions = self.web.sessions
        idle = rules.idle_expired(self.session.last_seen, time.monotonic(), sessions.idle_seconds)
        return self.session in sessions and self.session.signed_in and not idle

    async def events(self, hub: Hub) -> AsyncIterator[str]:
        """Server-sent events until the page goes, the session ends or the case is settled."""
        yield "retry: 5000\n\n"
        with hub.watch(self.case_id) as changes:
            while self.alive():
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        kind = await changes.get()
                except TimeoutError:
                    yield ": still here\n\n"
                    continue
                if kind is None or not self.alive():
                    return
                case = await self._caught_up()
                if case is None:
                    continue
                actions = rules.case_actions(
                    case.status, len(case.documents), erased=bool(case.erased_at)
                )
                if actions != self.opened:
                    # The page offers something else now (the report, no withdrawal): reload it.
                    yield event("reload", case.status)
                    return
                yield event("timeline", self._fragment(case))

    async def _caught_up(self) -> CaseView | None:
        """The case once intake shows the change (None: it does not yet, or may no longer be
        seen by this person)."""
        for _ in range(CATCH_UP_TRIES):
            try:
                case = await self.web.platform.get_case(
                    token=token(self.session), case_id=self.case_id
                )
            except Refused:
                return None
            if _moment(case) != self.shown:
                self.shown = _moment(case)
                return case
            await asyncio.sleep(CATCH_UP_SECONDS)
        return None

    def _fragment(self, case: CaseView) -> str:
        actions = rules.case_actions(case.status, len(case.documents), erased=bool(case.erased_at))
        template = self.web.templates.get_template("timeline.html")
        return template.render(
            t=self.texts,
            lang=self.texts.language.value,
            case=case,
            actions=actions,
            poll_seconds=POLL_SECONDS,
        )


def _moment(case: CaseView) -> tuple[str, int]:
    return case.status, len(case.timeline)
