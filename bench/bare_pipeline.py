"""The limit of this machine: the work of the Avis journey done with the raw clients and no
framework, on the same broker and store, as a reference for the journey's throughput.

Four processes stand for the four services. Each has an aiokafka producer (acks from all
in-sync replicas, idempotent, key = case id) and one aiokafka consumer in a group of its own,
reading the topics that service's group reads in Avis, and writes through PyMongo's async
client to a database of its own. There is no validation, no tracing, no sealing, no rendering,
no HTTP, no SMTP: message bodies are plain JSON padded to about the size of the real events,
and documents carry padding where Avis stores sealed or rendered content.

Kafka hops per case (the journey's straight path: submit, one assignment, accepted, one opinion,
one report), on topics of the run's own (`bare-<run id>-<topic>`), 6 partitions each like the
real ones:

    topic             events per case            consumer groups (as GROUP_TOPICS in
                                                 tests/e2e/test_whole_journey.py)
    case-submitted    1 (submitted)              review, reports, notify
    review-assigned   2 (assigned, accepted)     intake, notify
    review-completed  1 (completed)              intake, reports
    report-ready      1 (ready)                  intake, notify

That is 5 events published and 11 records consumed per case. Notify reads `accepted` and
acknowledges it without an inbox marker (Avis's runtime skips a type no handler of the service
takes before its inbox is touched), and marks none of the others either: its case records the
ids of the events applied to it, in the write of the event's effect (`InboxUse.OWN`).

Store writes per case: every single-document write the services make on that path, counted
from their service.py and store.py and from avis.shared (outbox.py, emit.py, kafka.py). Each
published event costs, besides the state write it rides on, an outbox hint upserted before
the write and a `$pull` marking it published after the broker's ack; the hints whose events
are out are deleted together, one request a second at most (counted apart as `taken`), as
the relay does. Each consumed record of a type the stage handles costs an inbox marker after
its effect; where the service records the event with its effect (intake's and reports'
handlers: `recorded=True`), the markers go together, one request a second at most (counted
apart as `marks`), as the runtime's `Marks` write them.

    intake (14)
      draft    3  case_lists entry of "all" and of the owner (list_append), the case (insert_case)
      upload   3  the record's chunk, its metadata, its id pushed on the case (put_record)
      submit   2  outbox hint, the case with its status, timeline entry and event
      relay    1  case-submitted: published mark
      follow   5  the reviewer's case_lists entry (on assigned), and one case update (status and
                  timeline) for each of assigned, accepted, completed, report-ready (follow)
      (inbox)     its 4 markers, held and written together (`marks`)
    review (19)
      assign  10  matching key ($push), the case (insert_case), the two due-day buckets of the
                  round (file_due), outbox hint, the assignment with its event, the reviewer's
                  open assignments ($push), the case assigned, waiting and matching keys ($pull)
      accept   2  outbox hint, the assignment accepted with its event
      opinion  3  outbox hint, the opinion with its event, the reviewer's load released ($pull)
      relay    3  3 events x published mark
      inbox    1
    reports (8)
      case     1  the case aggregate (case_submitted)
      opinion  1  the opinion kept on the case (add_opinion)
      issue    4  the version (insert_version), the report id (claim_report_id), outbox hint, the
                  version entry on the case with its event (add_version)
      relay    1  report-ready: published mark
      pdf      1  the rendered PDF kept on the version (set_pdf), without rendering anything
      (inbox)     its 2 markers, held and written together (`marks`)
    notify (21), the case filed by a partner with one subscription to the three webhook types
      case     3  the case saved (save_case) with the event's id, once per event
      queue    3  3 emails x the send
      fan_out  6  3 webhooks x (the delivery, the subscription's recent deliveries)
      handoff  3  3 events x the hand-offs of its email and its delivery to the queues'
                  workers (two documents, one request), after the case is written
      email    3  3 emails x the attempt recorded as sent, without SMTP
      webhook  3  3 webhooks x the delivery saved as delivered, without HTTP

62 writes per case in all (a write: one request). Left out: the writes Avis amortises over
many cases (a keyed list's stored hint every 16 positions, a reference block every 100 cases,
due buckets of a new day or minute, notify's hand-offs deleted many at a time once done with:
here one bulk write per 16, and the outbox hints deleted together once a second, counted
apart as `taken`) and every read (inbox checks, aggregate reads, the relay's outbox read),
which are part of what the journey's design costs on top of this floor.
The same secondary indexes as the services' are created, so each write maintains them too.

Where Avis decides, this picks: reviewers in turn (no matching); an event that meets its case
before the case is known waits in memory and costs, once the case comes, the writes of the
straight path. Writers of one document hold its lock in the process (an aggregate, a keyed
index document, a due bucket, a reviewer, the subscription), as the store does not serialise
them; Avis's review also runs every matching under one lock, which this does not. Consumers
fetch batches, apply records one at a time per partition (partitions side by side;
`--sequential`: one record at a time) and commit each batch once its effects are stored.

Usage: python bench/bare_pipeline.py --cases 500   (AVIS_KAFKA_BOOTSTRAP, AVIS_MONGO_URL)
       `run()` from another benchmark: `await run(500, bootstrap=..., mongo_url=...)`.
Everything the run creates (topics, databases) is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bson import Binary
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, DeleteOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid, ConnectionFailure, OperationFailure

from avis.shared.kafka_access import KafkaAccess

Doc = dict[str, Any]

CS, RA, RC, RR = "case-submitted", "review-assigned", "review-completed", "report-ready"
TOPICS = (CS, RA, RC, RR)
PARTITIONS = 6
GROUP_TOPICS: dict[str, tuple[str, ...]] = {
    "intake": (RA, RC, RR),
    "review": (CS,),
    "reports": (CS, RC),
    "notify": (CS, RA, RR),
}
STAGES = tuple(GROUP_TOPICS)
EVENTS_PER_CASE = {CS: 1, RA: 2, RC: 1, RR: 1}
PUBLISHED_BY = {"intake": {CS: 1}, "review": {RA: 2, RC: 1}, "reports": {RR: 1}, "notify": {}}
CONSUMED_PER_CASE = {
    stage: {t: EVENTS_PER_CASE[t] for t in topics} for stage, topics in GROUP_TOPICS.items()
}
WRITES_PER_CASE: dict[str, dict[str, int]] = {
    "intake": {"draft": 3, "upload": 3, "submit": 2, "relay": 1, "follow": 5},
    "review": {"assign": 10, "accept": 2, "opinion": 3, "relay": 3, "inbox": 1},
    "reports": {"case": 1, "opinion": 1, "issue": 4, "relay": 1, "pdf": 1},
    "notify": {"case": 3, "queue": 3, "fan_out": 6, "handoff": 3, "email": 3, "webhook": 3},
}
TAKEN_AT_ONCE = 16  # notify's hand-offs done with, deleted in one bulk write
FORGET_SECONDS = 1.0  # the outbox hints whose events are out, deleted together this often
STATUS_ORDER = ["submitted", "assigned", "accepted", "completed", "ready"]
TEMPLATES = {"submitted": "case_received", "assigned": "review_assigned", "ready": "report_ready"}
# Indexes the services create (their store.init), so each write here maintains the same ones.
INDEXES: dict[str, dict[str, list[Any]]] = {
    "intake": {
        "cases": [
            "reference",
            [("patient_id", ASCENDING), ("_id", DESCENDING)],
            [("partner_id", ASCENDING), ("_id", DESCENDING)],
            [("reviewer_id", ASCENDING), ("_id", DESCENDING)],
            [("status", ASCENDING), ("_id", DESCENDING)],
        ],
        "documents": [[("case_id", ASCENDING), ("uploaded_at", ASCENDING)]],
    },
    "review": {
        "reviewers": [[("specialties", ASCENDING)], [("active", ASCENDING)]],
        "cases": [[("status", ASCENDING), ("queue_key", ASCENDING)]],
        "assignments": [
            [("case_id", ASCENDING)],
            [("reviewer_id", ASCENDING), ("status", ASCENDING)],
            [("status", ASCENDING), ("due_at", ASCENDING)],
            [("sort_key", ASCENDING)],
        ],
    },
}
COLLECTIONS = {
    "intake": ["cases", "case_lists", "record_chunks", "documents", "outbox_hints"],
    "review": ["cases", "keys", "assignments", "reviewers", "outbox_hints"],
    "reports": ["cases", "versions", "report_ids", "outbox_hints"],
    "notify": ["cases", "handoffs", "sends", "deliveries", "subscriptions"],
}
# Roughly the size of what Avis carries sealed or rendered (bytes of padding).
PAD = {"submitted": 900, "assigned": 200, "accepted": 150, "completed": 1800, "ready": 300}
RECORD_BYTES = 2048
PDF_BYTES = 12_000
RECENT_DELIVERIES = 200
SCRIPT = Path(__file__).resolve()
STORE_ATTEMPTS = 30


def topic_name(run_id: str, topic: str) -> str:
    """The run's own copy of a topic."""
    return f"bare-{run_id}-{topic}"


def database_name(prefix: str, run_id: str, stage: str) -> str:
    """The run's own database of a stage."""
    return f"{prefix}_{run_id}_{stage}"


def expected_writes(cases: int) -> dict[str, dict[str, int]]:
    """The writes a run of `cases` cases makes, by stage and step."""
    return {s: {k: v * cases for k, v in steps.items()} for s, steps in WRITES_PER_CASE.items()}


BULK = ("taken", "marks")  # the steps that write many documents a request, counted apart


def _single(writes: dict[str, int]) -> dict[str, int]:
    """A stage's single-document writes by step: its bulk deletes (`taken`) and inbox
    markers written together (`marks`) left out."""
    return {step: n for step, n in writes.items() if step not in BULK}


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of `values` (seconds) in milliseconds, nearest rank."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {"p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1] * 1000}


# --- one stage (one process) ---------------------------------------------------------------


class Stage:
    """The plumbing of one stage: producer, consumer group, database, counters, marks."""

    name = ""

    def __init__(self, cfg: argparse.Namespace) -> None:
        self.cfg = cfg
        self.cases: int = cfg.cases
        self.run_id: str = cfg.run_id
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(cfg.mongo_url)
        self.db: AsyncDatabase[Doc] = self.client[
            database_name(cfg.database_prefix, cfg.run_id, self.name)
        ]
        self.hints = self.db["outbox_hints"]
        self.spent: list[tuple[str, str]] = []  # (hint, token) whose events are out
        self.forgot_at = 0.0
        self.held: dict[str, list[Doc]] = {}  # inbox markers to write together, by bucket
        self.marked_at = 0.0
        self.group = f"bare-{cfg.run_id}-{self.name}"
        self.producer = AIOKafkaProducer(
            **KafkaAccess.admin(cfg.bootstrap).options(), acks="all", enable_idempotence=True
        )
        self.topics = {topic_name(cfg.run_id, t): t for t in GROUP_TOPICS[self.name]}
        self.consumer = AIOKafkaConsumer(
            *self.topics,
            **KafkaAccess.admin(cfg.bootstrap).options(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=500,
        )
        self.writes: Counter[str] = Counter()
        self.consumed: Counter[str] = Counter()
        self.published: Counter[str] = Counter()
        self.marks: dict[str, dict[str, float]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.store_retries = 0
        self.locks: dict[str, asyncio.Lock] = {}
        self.expected_writes = expected_writes(self.cases)[self.name]
        self.expected_consumed = {
            t: n * self.cases for t, n in CONSUMED_PER_CASE[self.name].items()
        }
        self.expected_published = {t: n * self.cases for t, n in PUBLISHED_BY[self.name].items()}

    # plumbing

    async def write(self, step: str, op: Callable[[], Awaitable[Any]]) -> None:
        """One single-document write, counted under `step` once the store acknowledged it.

        A busy store (FerretDB's SQLite answering SQLITE_BUSY under load) or a lost connection
        is retried with backoff, as the services retry a transient failure; each retry is
        counted in `store_retries`.
        """
        delay = 0.02
        for attempt in range(STORE_ATTEMPTS):
            try:
                await op()
                break
            except (ConnectionFailure, OperationFailure) as exc:
                transient = isinstance(exc, ConnectionFailure) or "SQLITE_BUSY" in str(exc)
                if not transient or attempt == STORE_ATTEMPTS - 1:
                    raise
                self.store_retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        self.writes[step] += 1

    def mark(self, case_id: str, what: str) -> None:
        self.marks.setdefault(case_id, {})[what] = time.time()

    def lock(self, name: str) -> asyncio.Lock:
        """The in-process lock of one document: the store does not serialise writers."""
        return self.locks.setdefault(name, asyncio.Lock())

    def spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

        task = asyncio.create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def publish(
        self,
        step: str,
        collection: AsyncCollection[Doc],
        aggregate: str,
        *,
        topic: str,
        case_id: str,
        kind: str,
        insert: Doc | None = None,
        update: Doc | None = None,
        mark: str = "",
        then: Callable[[], Awaitable[None]] | None = None,
        extra: Doc | None = None,
    ) -> None:
        """The outbox path of one event: hint, then the state write carrying the event (both
        under `step`; the caller holds the aggregate's lock); then, in the background as the
        relay does: send, await the ack, mark it published and delete the hint under the
        aggregate's lock (under "relay"), then `then`."""
        event_id = uuid.uuid4().hex
        entry: Doc = {
            "id": event_id,
            "type": kind,
            "topic": topic,
            "subject": case_id,
            "time": time.time(),
            "data": {"case_id": case_id, "pad": "x" * PAD[kind], **(extra or {})},
        }
        hint, token = f"{collection.name}:{aggregate}", uuid.uuid4().hex
        await self.write(
            step,
            lambda: self.hints.update_one(
                {"_id": hint},
                {
                    "$set": {
                        "collection": collection.name,
                        "aggregate": aggregate,
                        "at": entry["time"],
                        "token": token,
                    }
                },
                upsert=True,
            ),
        )
        if insert is not None:
            await self.write(
                step,
                lambda: collection.insert_one({**insert, "outbox": [entry], "outbox_pending": 1}),
            )
        else:
            merged = {op: dict(fields) for op, fields in (update or {}).items()}
            merged.setdefault("$push", {})["outbox"] = entry
            merged.setdefault("$inc", {})["outbox_pending"] = 1
            await self.write(step, lambda: collection.update_one({"_id": aggregate}, merged))

        async def relay() -> None:
            ack = await self.producer.send(
                topic_name(self.run_id, topic),
                json.dumps(entry).encode(),
                key=case_id.encode(),
                headers=[("ce_id", event_id.encode()), ("ce_type", kind.encode())],
            )
            await ack
            if mark:
                self.mark(case_id, mark)
            self.published[topic] += 1
            async with self.lock(aggregate):  # never behind its writer's back
                await self.write(
                    "relay",
                    lambda: collection.update_one(
                        {"_id": aggregate},
                        {"$pull": {"outbox": entry}, "$inc": {"outbox_pending": -1}},
                    ),
                )
                self.spent.append((hint, token))
            if time.monotonic() - self.forgot_at >= FORGET_SECONDS:
                await self.forget_spent()
            if then is not None:
                await then()

        self.spawn(relay())

    async def forget_spent(self) -> None:
        """The hints whose events are out, each by its token, in one bulk write (`taken`)."""
        self.forgot_at = time.monotonic()
        spent, self.spent = self.spent, []
        if spent:
            ors = [{"_id": h, "token": t} for h, t in spent]
            await self.write("taken", lambda: self.hints.delete_many({"$or": ors}))

    async def consume(self) -> None:
        """Fetch, apply (one record at a time per partition), store the inbox marker, commit."""
        while True:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=500)
            if not batch:
                continue
            if self.cfg.sequential:
                for records in batch.values():
                    await self._apply(records)
            else:
                await asyncio.gather(*(self._apply(records) for records in batch.values()))
            await self.consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})

    async def _apply(self, records: list[Any]) -> None:
        for record in records:
            topic = self.topics[record.topic]
            event = json.loads(record.value)
            if event["type"] in self.skips:  # no handler for it: acknowledged, no marker
                self.consumed[topic] += 1
                continue
            await self.handle(topic, event)
            if not self.inbox_markers:  # the handler's own write records the event
                self.consumed[topic] += 1
                continue
            day = time.strftime("%Y%m%d", time.gmtime(event["time"]))
            marker = {"_id": f"{self.group}:{event['id']}", "topic": topic, "type": event["type"]}
            marker["at"] = time.time()
            if self.recorded:
                self.held.setdefault(f"inbox_{day}", []).append(marker)
                if time.monotonic() - self.marked_at >= FORGET_SECONDS:
                    await self.write_marks()
            else:
                await self.write("inbox", partial(self.db[f"inbox_{day}"].insert_one, marker))
            self.consumed[topic] += 1

    async def write_marks(self) -> None:
        """The inbox markers held, one request per bucket (`marks`)."""
        self.marked_at = time.monotonic()
        held, self.held = self.held, {}
        for bucket, markers in held.items():
            await self.write("marks", partial(self.db[bucket].insert_many, markers))

    async def handle(self, topic: str, event: Doc) -> None:
        """The effect of one record (the stage's own)."""

    skips: frozenset[str] = frozenset()  # the types the stage has no handler for
    recorded = False  # its handlers record their event with the effect: markers go together
    inbox_markers = True  # False: none (the case records the events applied to it)

    async def setup(self) -> None:
        """Collections and indexes (not counted)."""
        days = {time.strftime("%Y%m%d", time.gmtime(time.time() + d)) for d in (0, 3600)}
        for collection in [*COLLECTIONS[self.name], *(f"inbox_{d}" for d in days)]:
            with contextlib.suppress(CollectionInvalid):
                await self.db.create_collection(collection)
        for collection, indexes in INDEXES.get(self.name, {}).items():
            for keys in indexes:
                await self.db[collection].create_index(keys, unique=keys == "reference")

    async def drive(self) -> None:
        """Work started by the go signal rather than by a record (intake's submissions)."""

    def complete(self) -> bool:
        return (
            all(self.consumed[t] >= n for t, n in self.expected_consumed.items())
            and all(self.published[t] >= n for t, n in self.expected_published.items())
            and all(self.writes[s] >= n for s, n in self.expected_writes.items())
            and not self.tasks
        )

    async def main(self) -> Doc:
        await self.setup()
        await self.producer.start()
        await self.consumer.start()
        consuming = asyncio.create_task(self.consume())
        wanted = PARTITIONS * len(self.topics)
        async with asyncio.timeout(60):
            while len(self.consumer.assignment()) < wanted:
                if consuming.done():
                    consuming.result()
                await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu_start = cpu_now()
        started = time.time()
        self.spawn(self.drive())
        deadline = time.monotonic() + self.cfg.timeout
        while not self.complete() and not self.errors and time.monotonic() < deadline:
            if consuming.done():  # the consumer failed: reported with the figures
                exc = consuming.exception()
                self.errors.append(f"consumer: {type(exc).__name__}: {exc}")
                break
            await asyncio.sleep(0.02)
        finished = time.time()
        cpu = cpu_now() - cpu_start
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consuming
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.forget_spent()  # what the last second left, as the relay's next drain
        with contextlib.suppress(Exception):
            await self.write_marks()  # and the markers held, as a clean stop writes them
        await self.consumer.stop()
        await self.producer.stop()
        await self.client.close()
        return {
            "stage": self.name,
            "complete": self.complete(),
            "timed_out": not self.complete() and not self.errors,
            "errors": self.errors[:5],
            "store_retries": self.store_retries,
            "writes": dict(self.writes),
            "consumed": dict(self.consumed),
            "published": dict(self.published),
            "marks": self.marks,
            "started": started,
            "finished": finished,
            "cpu_seconds": cpu,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Intake(Stage):
    """Drafts, uploads and submits the cases (intake's HTTP writes), and follows them."""

    name = "intake"
    OWNER = "partner_id:bare-partner"
    recorded = True

    def __init__(self, cfg: argparse.Namespace) -> None:
        super().__init__(cfg)
        self.cases_c = self.db["cases"]
        self.lists = self.db["case_lists"]
        self.positions: Counter[str] = Counter()
        self.status: dict[str, str] = {}

    async def list_append(self, step: str, key: str, case_id: str) -> None:
        self.positions[key] += 1
        entry = {"_id": f"{key}:{self.positions[key]:012d}", "case_id": case_id}
        await self.write(step, lambda: self.lists.insert_one(entry))

    async def drive(self) -> None:
        room = asyncio.Semaphore(self.cfg.clients)

        async def one(n: int) -> None:
            async with room:
                await self.submit_one(n)

        await asyncio.gather(*(one(n) for n in range(self.cases)))

    async def submit_one(self, n: int) -> None:
        case_id = f"case-{self.run_id}-{n:06d}"
        now = time.time()
        self.mark(case_id, "draft")
        await self.list_append("draft", "all", case_id)
        await self.list_append("draft", self.OWNER, case_id)
        case = {
            "_id": case_id,
            "reference": f"AV-{self.run_id}-{n:06d}",
            "status": "draft",
            "partner_id": "bare-partner",
            "patient": {"pad": "x" * 300},
            "clinical_summary": "x" * 600,
            "questions": ["x" * 80],
            "record_ids": [],
            # the timeline's entries one text each, as intake keeps them
            "timeline": [json.dumps({"id": f"{case_id}:created", "status": "draft", "at": now})],
            "created_at": now,
            "outbox": [],
            "outbox_pending": 0,
        }
        await self.write("draft", lambda: self.cases_c.insert_one(case))
        record_id = f"{case_id}:{uuid.uuid4().hex}"
        data = Binary(os.urandom(RECORD_BYTES))
        chunk = {"_id": f"{record_id}:0", "record_id": record_id, "case_id": case_id, "n": 0}
        await self.write(
            "upload",
            lambda: self.db["record_chunks"].replace_one(
                {"_id": chunk["_id"]}, {**chunk, "data": data}, upsert=True
            ),
        )
        record = {"_id": record_id, "case_id": case_id, "size": RECORD_BYTES, "uploaded_at": now}
        await self.write(
            "upload",
            lambda: self.db["documents"].replace_one({"_id": record_id}, record, upsert=True),
        )
        await self.write(
            "upload",
            lambda: self.cases_c.update_one({"_id": case_id}, {"$push": {"record_ids": record_id}}),
        )
        self.mark(case_id, "submit")
        at = time.time()
        async with self.lock(case_id):
            self.status[case_id] = "submitted"
            await self.publish(
                "submit",
                self.cases_c,
                case_id,
                topic=CS,
                case_id=case_id,
                kind="submitted",
                update={
                    "$set": {"status": "submitted", "submitted_at": at, "consent": {"at": at}},
                    "$push": {
                        "timeline": json.dumps({"id": case_id, "status": "submitted", "at": at})
                    },
                },
                mark="case_submitted",
            )

    async def handle(self, topic: str, event: Doc) -> None:
        case_id = event["subject"]
        data = event["data"]
        async with self.lock(case_id):
            # Status only moves forward (topics are not ordered between them).
            status = max(self.status[case_id], event["type"], key=STATUS_ORDER.index)
            self.status[case_id] = status
            fields: Doc = {"status": status, "updated_at": time.time()}
            if event["type"] == "assigned":
                await self.list_append("follow", f"reviewer_id:{data['reviewer_id']}", case_id)
                fields |= {
                    "reviewer_id": data["reviewer_id"],
                    "assignment_id": data["assignment_id"],
                }
            entry = json.dumps({"id": event["id"], "status": event["type"], "at": event["time"]})
            await self.write(
                "follow",
                lambda: self.cases_c.update_one(
                    {"_id": case_id}, {"$set": fields, "$push": {"timeline": entry}}
                ),
            )
        if topic == RR:
            self.mark(case_id, "intake_done")


class Review(Stage):
    """Assigns each submitted case to a reviewer in turn; the reviewer accepts and answers."""

    name = "review"

    def __init__(self, cfg: argparse.Namespace) -> None:
        super().__init__(cfg)
        self.cases_c = self.db["cases"]
        self.keys = self.db["keys"]
        self.assignments = self.db["assignments"]
        self.reviewers = self.db["reviewers"]
        self.turn = 0

    async def setup(self) -> None:
        await super().setup()
        for r in range(self.cfg.reviewers):
            doc = {
                "_id": f"rev-{r}",
                "specialties": ["oncology"],
                "languages": ["fr", "en"],
                "active": True,
                "capacity": 10**9,
                "open_assignments": [],
            }
            await self.reviewers.insert_one(doc)

    async def handle(self, topic: str, event: Doc) -> None:
        case_id = event["subject"]
        reviewer = f"rev-{self.turn % self.cfg.reviewers}"
        self.turn += 1
        assignment_id = f"{case_id}:r1"
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.gmtime(now + 7 * 86400))
        sort_key = f"{day}|{assignment_id}"
        await self.key("assign", "matching", {"$push": {"ids": case_id}})
        case = {"_id": case_id, "status": "matching", "round": 0, "queue_key": f"{now}|{case_id}"}
        await self.write("assign", lambda: self.cases_c.insert_one({**case, "received_at": now}))
        for scope in ("all", f"reviewer:{reviewer}"):
            await self.key("assign", f"due:{scope}:{day}", {"$push": {"ids": sort_key}})

        async def reviewer_plays() -> None:
            self.spawn(self.accept_and_answer(case_id, assignment_id, reviewer))

        async with self.lock(assignment_id):
            await self.publish(
                "assign",
                self.assignments,
                assignment_id,
                topic=RA,
                case_id=case_id,
                kind="assigned",
                insert={
                    "_id": assignment_id,
                    "case_id": case_id,
                    "round": 1,
                    "reviewer_id": reviewer,
                    "status": "assigned",
                    "assigned_at": now,
                    "due_at": now + 7 * 86400,
                    "sort_key": sort_key,
                    "rationale": "x" * 200,  # one text, as review keeps it
                },
                mark="assigned",
                then=reviewer_plays,
                extra={"reviewer_id": reviewer, "assignment_id": assignment_id},
            )
        await self.reviewer("assign", reviewer, {"$push": {"open_assignments": assignment_id}})
        await self.write(
            "assign",
            lambda: self.cases_c.update_one(
                {"_id": case_id},
                {"$set": {"status": "assigned", "assignment_id": assignment_id, "round": 1}},
            ),
        )
        for key in ("waiting", "matching"):
            await self.key("assign", key, {"$pull": {"ids": case_id}}, upsert=False)

    async def key(self, step: str, name: str, update: Doc, *, upsert: bool = True) -> None:
        """A keyed index document's write, under its lock."""
        async with self.lock(f"key:{name}"):
            await self.write(
                step, lambda: self.keys.update_one({"_id": name}, update, upsert=upsert)
            )

    async def reviewer(self, step: str, reviewer: str, update: Doc) -> None:
        """A reviewer's load, under the reviewer's lock."""
        async with self.lock(f"reviewer:{reviewer}"):
            await self.write(step, lambda: self.reviewers.update_one({"_id": reviewer}, update))

    async def accept_and_answer(self, case_id: str, assignment_id: str, reviewer: str) -> None:
        """What the journey's driver does as the reviewer: accept, then post the opinion."""
        ids = {"reviewer_id": reviewer, "assignment_id": assignment_id}
        async with self.lock(assignment_id):
            await self.publish(
                "accept",
                self.assignments,
                assignment_id,
                topic=RA,
                case_id=case_id,
                kind="accepted",
                update={"$set": {"status": "accepted", "accepted_at": time.time()}},
                mark="accepted",
                extra=ids,
            )
        self.mark(case_id, "opinion")
        at = time.time()
        opinion = {"version": 1, "at": at, "opinion": {"pad": "x" * 1500}}
        async with self.lock(assignment_id):
            await self.publish(
                "opinion",
                self.assignments,
                assignment_id,
                topic=RC,
                case_id=case_id,
                kind="completed",
                update={
                    "$set": {"status": "completed", "opinion_version": 1, "completed_at": at},
                    "$push": {"opinions": opinion},
                },
                mark="completed",
                extra=ids,
            )
        await self.reviewer("opinion", reviewer, {"$pull": {"open_assignments": assignment_id}})


class Reports(Stage):
    """Keeps each case and its opinion, issues the report version and announces it."""

    name = "reports"
    recorded = True

    def __init__(self, cfg: argparse.Namespace) -> None:
        super().__init__(cfg)
        self.cases_c = self.db["cases"]
        self.versions = self.db["versions"]
        self.known: set[str] = set()
        self.parked: dict[str, Doc] = {}

    async def handle(self, topic: str, event: Doc) -> None:
        case_id = event["subject"]
        async with self.lock(case_id):
            if topic == CS:
                doc = {"_id": case_id, "report_id": f"rep-{case_id}", "case": {"pad": "x" * 700}}
                await self.write("case", lambda: self.cases_c.insert_one({**doc, "outbox": []}))
                self.known.add(case_id)
                if case_id in self.parked:
                    await self.issue(case_id, self.parked.pop(case_id))
            elif case_id in self.known:
                await self.issue(case_id, event)
            else:
                self.parked[case_id] = event  # its case comes later (no order across topics)

    async def issue(self, case_id: str, completed: Doc) -> None:
        received = {"version": 1, "event_id": completed["id"], "sealed": {"pad": "x" * 1800}}
        await self.write(
            "opinion",
            lambda: self.cases_c.update_one({"_id": case_id}, {"$push": {"opinions": received}}),
        )
        key = f"rep-{case_id}:v1"
        version = {"_id": key, "case_id": case_id, "version": 1, "report": {"pad": "x" * 4000}}
        await self.write("issue", lambda: self.versions.insert_one(version))
        await self.write(
            "issue",
            lambda: self.db["report_ids"].update_one(
                {"_id": f"rep-{case_id}"}, {"$set": {"case_id": case_id}}, upsert=True
            ),
        )
        await self.publish(
            "issue",
            self.cases_c,
            case_id,
            topic=RR,
            case_id=case_id,
            kind="ready",
            update={"$push": {"versions": {"version": 1, "issued_at": time.time()}}},
            mark="report_ready",
        )
        pdf = {"sealed": Binary(os.urandom(PDF_BYTES)), "etag": uuid.uuid4().hex}
        self.spawn(
            self.write(
                "pdf", lambda: self.versions.update_one({"_id": key}, {"$set": {"pdf": pdf}})
            )
        )


class Notify(Stage):
    """Queues an email and a partner webhook for each of submitted, assigned and ready, and
    records them as sent and delivered (without SMTP or HTTP)."""

    name = "notify"
    SUBSCRIPTION = "sub-bare"
    skips = frozenset({"accepted"})
    inbox_markers = False

    def __init__(self, cfg: argparse.Namespace) -> None:
        super().__init__(cfg)
        self.cases_c = self.db["cases"]
        self.handoffs = self.db["handoffs"]
        self.taken: list[str] = []  # hand-offs done with, deleted TAKEN_AT_ONCE at a time
        self.docs: dict[str, Doc] = {}
        self.known: set[str] = set()
        self.parked: dict[str, list[Doc]] = {}
        self.recent: list[str] = []

    async def save_case(self, case_id: str) -> None:
        doc = self.docs[case_id]
        await self.write(
            "case", lambda: self.cases_c.update_one({"_id": case_id}, {"$set": doc}, upsert=True)
        )

    async def handle(self, topic: str, event: Doc) -> None:
        case_id = event["subject"]
        async with self.lock(case_id):
            if topic == CS:
                self.docs[case_id] = {
                    "contact": {"pad": "x" * 300},
                    "reference": case_id,
                    "partner_id": "bare-partner",
                    "notifications": [],
                    "deliveries": [],
                    "submitted": True,
                    "updated_at": time.time(),
                }
                self.known.add(case_id)
                filed = [await self.notice(case_id, event)]
                for early in self.parked.pop(case_id, []):
                    filed.append(await self.notice(case_id, early))
            elif case_id in self.known:
                filed = [await self.notice(case_id, event)]
            else:  # its case comes later: parked (Avis parks it on the case, saved below)
                self.docs.setdefault(case_id, {"parked": []})["parked"].append(event["id"])
                self.parked.setdefault(case_id, []).append(event)
                filed = []
            self.docs[case_id]["updated_at"] = time.time()
            self.docs[case_id].setdefault("applied", []).append(event["id"])
            await self.save_case(case_id)
            # Handed off once the case is written, every item of the event in one request.
            for items in filed:
                at = await self.file([handoff for handoff, _ in items])
                for _, work in items:
                    self.spawn(work(at))

    async def file(self, handoffs: list[str]) -> float:
        """Hand an event's items off to their queues' workers (one document per item, all in
        one request, as Avis's `hand_off`); the workers work them from there."""
        at = time.time()
        ops = [UpdateOne({"_id": h}, {"$set": {"at": at}}, upsert=True) for h in handoffs]
        await self.write("handoff", lambda: self.handoffs.bulk_write(ops))
        return at

    async def notice(
        self, case_id: str, event: Doc
    ) -> list[tuple[str, Callable[[float], Awaitable[None]]]]:
        """Queue the event's email and delivery; their hand-offs and their work, for the
        caller to file once the case is written."""
        template = TEMPLATES[event["type"]]
        case = self.docs[case_id]
        delivery_id = f"{event['id']}:{self.SUBSCRIPTION}"
        body = {"id": event["id"], "type": event["type"], "case_id": case_id, "pad": "x" * 200}
        delivery = {"_id": delivery_id, "status": "queued", "body": json.dumps(body)}
        await self.write("fan_out", lambda: self.db["deliveries"].insert_one(delivery))
        case.setdefault("deliveries", []).append(delivery_id)
        async with self.lock(f"subscription:{self.SUBSCRIPTION}"):
            self.recent = [*self.recent, delivery_id][-RECENT_DELIVERIES:]
            subscription = {"partner_id": "bare-partner", "recent": self.recent, "enabled": True}
            await self.write(
                "fan_out",
                lambda: self.db["subscriptions"].update_one(
                    {"_id": self.SUBSCRIPTION}, {"$set": subscription}, upsert=True
                ),
            )
        send_id = f"send-{event['id']}"
        send = {"_id": send_id, "case_id": case_id, "template": template, "status": "queued"}
        await self.write(
            "queue", lambda: self.db["sends"].insert_one({**send, "params": {"pad": "x" * 200}})
        )
        case.setdefault("notifications", []).append(send_id)
        return [
            (f"email:{send_id}", partial(self.send_email, case_id, template, send_id)),
            (f"webhook:{delivery_id}", partial(self.deliver, case_id, template, delivery_id)),
        ]

    async def unfile(self, kind: str, item: str) -> None:
        """A hand-off done with: deleted with others, TAKEN_AT_ONCE in one bulk write."""
        self.taken.append(f"{kind}:{item}")
        if len(self.taken) >= TAKEN_AT_ONCE:
            ids, self.taken = self.taken, []
            deletes = [DeleteOne({"_id": i}) for i in ids]
            await self.write("taken", lambda: self.handoffs.bulk_write(deletes))

    async def send_email(self, case_id: str, template: str, send_id: str, filed: float) -> None:
        attempt = {"at": time.time(), "outcome": "sent", "code": 250}
        await self.write(
            "email",
            lambda: self.db["sends"].update_one(
                {"_id": send_id},
                {
                    "$push": {"attempts": attempt},
                    "$set": {"status": "sent", "sent_at": time.time()},
                },
            ),
        )
        await self.unfile("email", send_id)
        self.mark(case_id, f"email:{template}")

    async def deliver(self, case_id: str, template: str, delivery_id: str, filed: float) -> None:
        attempt = {"at": time.time(), "outcome": "sent", "code": 204, "latency_ms": 1}
        await self.write(
            "webhook",
            lambda: self.db["deliveries"].update_one(
                {"_id": delivery_id},
                {
                    "$set": {
                        "status": "delivered",
                        "attempts": [attempt],
                        "delivered_at": time.time(),
                    }
                },
            ),
        )
        await self.unfile("webhook", delivery_id)
        self.mark(case_id, f"hook:{template}")


STAGE_CLASSES: dict[str, type[Stage]] = {
    "intake": Intake,
    "review": Review,
    "reports": Reports,
    "notify": Notify,
}


async def stage_main(cfg: argparse.Namespace) -> int:
    stage = STAGE_CLASSES[cfg.stage](cfg)
    result = await stage.main()
    print("result " + json.dumps(result), flush=True)
    return 0 if result["complete"] else 1


# --- the run (the parent process) ----------------------------------------------------------


async def _create_topics(bootstrap: str, run_id: str) -> list[str]:
    names = [topic_name(run_id, t) for t in TOPICS]
    admin = AIOKafkaAdminClient(**KafkaAccess.admin(bootstrap).options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()
    return names


async def _delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(**KafkaAccess.admin(bootstrap).options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


async def _verify(client: AsyncMongoClient[Doc], prefix: str, run_id: str, cases: int) -> Doc:
    """What the store holds after the run, against what every case should have left there."""

    async def count(stage: str, collection: str, query: Doc | None = None) -> int:
        db = client[database_name(prefix, run_id, stage)]
        return await db[collection].count_documents(query or {})

    async def inbox(stage: str) -> int:
        db = client[database_name(prefix, run_id, stage)]
        names = [n for n in await db.list_collection_names() if n.startswith("inbox_")]
        return sum([await db[n].count_documents({}) for n in names])

    found = {
        "intake.cases submitted": await count("intake", "cases", {"status": "ready"}),
        "intake.case_lists": await count("intake", "case_lists"),
        "intake.record_chunks": await count("intake", "record_chunks"),
        "intake.inbox": await inbox("intake"),
        "review.assignments completed": await count(
            "review", "assignments", {"status": "completed"}
        ),
        "review.inbox": await inbox("review"),
        "reports.versions with pdf": await count("reports", "versions", {"pdf": {"$exists": True}}),
        "reports.report_ids": await count("reports", "report_ids"),
        "reports.inbox": await inbox("reports"),
        "notify.sends sent": await count("notify", "sends", {"status": "sent"}),
        "notify.deliveries delivered": await count("notify", "deliveries", {"status": "delivered"}),
        "notify.inbox": await inbox("notify"),
        "outbox hints left": sum(
            [await count(s, "outbox_hints") for s in ("intake", "review", "reports")]
        ),
        "outbox events left": sum(
            [
                await count(s, c, {"outbox_pending": {"$ne": 0}})
                for s, c in (("intake", "cases"), ("review", "assignments"), ("reports", "cases"))
            ]
        ),
    }
    wanted = {
        "intake.cases submitted": cases,
        "intake.case_lists": 3 * cases,
        "intake.record_chunks": cases,
        "intake.inbox": 4 * cases,
        "review.assignments completed": cases,
        "review.inbox": cases,
        "reports.versions with pdf": cases,
        "reports.report_ids": cases,
        "reports.inbox": 2 * cases,
        "notify.sends sent": 3 * cases,
        "notify.deliveries delivered": 3 * cases,
        "notify.inbox": 0,  # the case records the events applied to it; `accepted` skipped
        "outbox hints left": 0,
        "outbox events left": 0,
    }
    return {"found": found, "wanted": wanted, "ok": found == wanted}


def _figures(cases: int, results: dict[str, Doc]) -> Doc:
    """Throughput and per-hop latencies from the marks of the four stages."""
    marks: dict[str, dict[str, float]] = {}
    for result in results.values():
        for case_id, m in result["marks"].items():
            marks.setdefault(case_id, {}).update(m)
    hooks = [f"{kind}:{t}" for t in TEMPLATES.values() for kind in ("email", "hook")]
    needed = ["draft", "submit", "case_submitted", "assigned", "accepted", "opinion"]
    needed += ["completed", "report_ready", "intake_done", *hooks]
    whole = {c: m for c, m in marks.items() if all(k in m for k in needed)}
    hops: dict[str, list[float]] = {
        "submit -> case-submitted": [],
        "-> review-assigned": [],
        "opinion -> review-completed": [],
        "-> report-ready": [],
        "-> email sent and webhook delivered": [],
        "submit -> report-ready": [],
        "submit -> last notification": [],
    }
    for m in whole.values():
        last = max(m[h] for h in hooks)
        hops["submit -> case-submitted"].append(m["case_submitted"] - m["submit"])
        hops["-> review-assigned"].append(m["assigned"] - m["case_submitted"])
        hops["opinion -> review-completed"].append(m["completed"] - m["opinion"])
        hops["-> report-ready"].append(m["report_ready"] - m["completed"])
        ready_sent = max(m["email:report_ready"], m["hook:report_ready"])
        hops["-> email sent and webhook delivered"].append(ready_sent - m["report_ready"])
        hops["submit -> report-ready"].append(m["report_ready"] - m["submit"])
        hops["submit -> last notification"].append(last - m["submit"])
    first = min((m["draft"] for m in marks.values() if "draft" in m), default=0.0)
    ends = [max(v for k, v in m.items()) for m in whole.values()]
    ready = [m["report_ready"] for m in whole.values()]
    seconds = (max(ends) - first) if ends else float("nan")
    to_ready = (max(ready) - first) if ready else float("nan")
    return {
        "cases": cases,
        "complete_cases": len(whole),
        "seconds": seconds,
        "cases_per_s": len(whole) / seconds if ends else 0.0,
        "report_ready_seconds": to_ready,
        "report_ready_per_s": len(whole) / to_ready if ready else 0.0,
        "hops_ms": {name: percentiles(values) for name, values in hops.items()},
    }


async def run(
    cases: int,
    *,
    bootstrap: str,
    mongo_url: str,
    database_prefix: str = "bare",
    timeout: float | None = None,
    clients: int = 16,
    reviewers: int = 10,
    sequential: bool = False,
    verify: bool = True,
) -> dict[str, Any]:
    """Run `cases` cases through the bare pipeline and return its figures.

    `cases_per_s`: complete cases over the seconds from the first draft to the last write of
    the last case; `report_ready_per_s` the same up to report-ready; `hops_ms`: p50/p95/p99/max
    per hop; `writes`, `consumed`, `published` by stage against `expected_*`; `verify`: what
    the store holds afterwards. Stops by itself once every count is reached, or after
    `timeout` seconds (default 60 + 1 s per case); deletes its topics and databases.
    """
    timeout = timeout if timeout is not None else 60.0 + 1.0 * cases
    run_id = uuid.uuid4().hex[:8]
    topics: list[str] = []
    procs: dict[str, asyncio.subprocess.Process] = {}
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongo_url)
    with tempfile.TemporaryDirectory(prefix="bare-") as logs:
        try:
            topics = await _create_topics(bootstrap, run_id)
            for name in STAGES:
                args = [sys.executable, str(SCRIPT), "--stage", name]
                args += ["--run-id", run_id, "--cases", str(cases), "--timeout", str(timeout)]
                args += ["--bootstrap", bootstrap, "--mongo-url", mongo_url]
                args += ["--database-prefix", database_prefix, "--clients", str(clients)]
                args += ["--reviewers", str(reviewers)] + (["--sequential"] if sequential else [])
                with _log(logs, name) as err:
                    procs[name] = await asyncio.create_subprocess_exec(
                        *args,
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=err,
                    )
            for name, proc in procs.items():
                assert proc.stdout is not None
                async with asyncio.timeout(90):
                    line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"{name} did not start: {_tail(logs, name)}")
            load_before = os.getloadavg()
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            results: dict[str, Doc] = {}
            async with asyncio.timeout(timeout + 60):
                for name, proc in procs.items():
                    assert proc.stdout is not None
                    out = (await proc.stdout.read()).decode()
                    await proc.wait()
                    lines = [x for x in out.splitlines() if x.startswith("result ")]
                    if not lines:
                        raise RuntimeError(f"{name} gave no result: {_tail(logs, name)}")
                    results[name] = json.loads(lines[-1].removeprefix("result "))
            load_after = os.getloadavg()
            figures = _figures(cases, results)
            figures |= {
                "run_id": run_id,
                "stages_complete": {n: r["complete"] for n, r in results.items()},
                "errors": {n: r["errors"] for n, r in results.items() if r["errors"]},
                # The single-document writes by step; the bulk deletes and markers apart.
                "writes": {n: _single(r["writes"]) for n, r in results.items()},
                "taken": sum(r["writes"].get("taken", 0) for r in results.values()),
                "marks": sum(r["writes"].get("marks", 0) for r in results.values()),
                "expected_writes": expected_writes(cases),
                "writes_per_case": sum(sum(_single(r["writes"]).values()) for r in results.values())
                / max(cases, 1),
                "consumed": {n: r["consumed"] for n, r in results.items()},
                "expected_consumed": {
                    n: {t: k * cases for t, k in c.items()} for n, c in CONSUMED_PER_CASE.items()
                },
                "published": {n: r["published"] for n, r in results.items()},
                "expected_published": {
                    n: {t: k * cases for t, k in c.items()} for n, c in PUBLISHED_BY.items()
                },
                "store_retries": {n: r["store_retries"] for n, r in results.items()},
                "cpu_seconds": {n: r["cpu_seconds"] for n, r in results.items()},
                "peak_rss_mib": {n: r["peak_rss_mib"] for n, r in results.items()},
                "load_average": {"before": load_before, "after": load_after},
            }
            if verify:
                figures["verify"] = await _verify(client, database_prefix, run_id, cases)
            return figures
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            with contextlib.suppress(Exception):
                for name in STAGES:
                    await client.drop_database(database_name(database_prefix, run_id, name))
            await client.close()
            with contextlib.suppress(Exception):
                await _delete_topics(bootstrap, topics)


def _log(logs: str, name: str) -> IO[bytes]:
    return open(Path(logs) / f"{name}.err", "wb")


def _tail(logs: str, name: str) -> str:
    with contextlib.suppress(OSError):
        return (Path(logs) / f"{name}.err").read_text()[-2000:]
    return ""


def _print(figures: Doc) -> None:
    print(
        f"bare pipeline: {figures['complete_cases']}/{figures['cases']} cases in "
        f"{figures['seconds']:.1f} s = {figures['cases_per_s']:.1f} cases/s "
        f"(to report-ready {figures['report_ready_per_s']:.1f} cases/s), "
        f"{figures['writes_per_case']:.1f} writes per case"
    )
    for hop, p in figures["hops_ms"].items():
        if p:
            print(
                f"  {hop:40s} p50 {p['p50']:7.0f} ms  p95 {p['p95']:7.0f}  "
                f"p99 {p['p99']:7.0f}  max {p['max']:7.0f}"
            )
    cpu = ", ".join(f"{n} {s:.1f}" for n, s in figures["cpu_seconds"].items())
    print(f"  CPU seconds: {cpu}")
    load = figures["load_average"]
    print(f"  load average: before {load['before'][0]:.2f}, after {load['after'][0]:.2f}")
    if "verify" in figures:
        print(f"  store holds what every case should leave: {figures['verify']['ok']}")
    if figures["errors"]:
        print(f"  errors: {figures['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description="The Avis journey's work, bare.")
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument(
        "--bootstrap", default=os.environ.get("AVIS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument(
        "--mongo-url", default=os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    parser.add_argument("--database-prefix", default="bare")
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--clients", type=int, default=16, help="submissions in flight")
    parser.add_argument("--reviewers", type=int, default=10)
    parser.add_argument("--sequential", action="store_true", help="one record at a time")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    cfg = parser.parse_args()
    if cfg.stage:
        sys.exit(asyncio.run(stage_main(cfg)))
    figures = asyncio.run(
        run(
            cfg.cases,
            bootstrap=cfg.bootstrap,
            mongo_url=cfg.mongo_url,
            database_prefix=cfg.database_prefix,
            timeout=cfg.timeout,
            clients=cfg.clients,
            reviewers=cfg.reviewers,
            sequential=cfg.sequential,
        )
    )
    if cfg.json:
        print(json.dumps(figures, indent=2))
    else:
        _print(figures)
    sys.exit(0 if figures["complete_cases"] == cfg.cases else 1)


if __name__ == "__main__":
    main()
