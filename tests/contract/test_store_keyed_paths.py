"""Store contract: the keyed access paths the services' hot paths use (DESIGN.md section 4).

Every hot read goes by `_id` equality, the only filter FerretDB serves from an index: ids
embedded in the owning document (`$push`/`$pull` of whole string elements), keyed index
documents, positions claimed by inserting their natural `_id`. Each path is driven through the
service's own store, and a command listener checks that what reached the store was `_id`
equality and nothing else.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect

from avis.intake.models import CaseStatus, TimelineKind
from avis.intake.rules import Scope
from avis.intake.store import Record, StoredConsent, StoredEntry, list_entry_id, list_key
from avis.intake.store import Store as IntakeStore
from avis.notify.store import Store as NotifyStore
from avis.review.models import AssignmentStatus, Rationale
from avis.review.models import CaseStatus as ReviewCaseStatus
from avis.review.rules import assignment_id_for, sort_key
from avis.review.store import AssignmentDoc, CaseDoc, ReviewerDoc, fold_due_days
from avis.review.store import Store as ReviewStore
from avis.shared.audit import HEADS, AuditHead, AuditRecord, AuditTrail
from avis.shared.envelope import Event
from avis.shared.events import CaseWithdrawn
from avis.shared.mongo import AggregateLocks, by_ids
from avis.shared.sealing import Keyring, generate_key

pytestmark = pytest.mark.infra

Document = dict[str, Any]
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Commands(monitoring.CommandListener):
    """The filters of every read, update and delete a client sends."""

    def __init__(self) -> None:
        self.filters: list[tuple[str, str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        name = event.command_name
        if name in ("find", "count", "distinct"):
            self.filters.append((name, command[name], command.get("filter", {})))
        elif name in ("update", "delete"):
            for op in command.get("updates", command.get("deletes", [])):
                self.filters.append((name, command[name], op["q"]))
        elif name in ("findAndModify", "aggregate"):
            self.filters.append((name, command[name], command.get("query", command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def not_by_id(self) -> list[tuple[str, str, Any]]:
        """Every command whose filter is anything but `_id` equal to a string or `$in` a list
        of strings (what the `_id` index serves)."""
        return [f for f in self.filters if not by_id(f[2])]


def by_id(query: Any) -> bool:
    """Whether `query` is `_id` equality on a string, or `_id` `$in` strings, and nothing else."""
    if not (isinstance(query, dict) and list(query) == ["_id"]):
        return False
    value = query["_id"]
    if isinstance(value, dict) and list(value) == ["$in"]:
        return bool(value["$in"]) and all(isinstance(v, str) for v in value["$in"])
    return isinstance(value, str)


@pytest.fixture
async def watched(store_url: str, db_name: str) -> Any:
    """A database on a client of its own, and the commands that client sends."""
    commands = Commands()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        store_url, tz_aware=True, event_listeners=[commands]
    )
    try:
        yield client[db_name], commands
    finally:
        await client.drop_database(db_name)
        await client.close()


# --- raw operations the paths are made of -----------------------------------------------------


def _plan_lines(reply: Document) -> list[str]:
    """The steps of a query plan, as text: FerretDB's SQLite plan, or MongoDB's stages."""
    planner = reply.get("queryPlanner", {})
    if "Plan" in planner:  # FerretDB on SQLite: EXPLAIN QUERY PLAN's rows
        return [str(step) for step in planner["Plan"]]
    stages: list[str] = []
    node = planner.get("winningPlan", {})
    while isinstance(node, dict) and node:
        stages.append(str(node.get("stage", "")))
        node = node.get("inputStage", {})
    return stages


async def assert_index_serves(
    db: AsyncDatabase[Document], query: Document, store_info: Any
) -> None:
    """`query` on `cases` searches an index: FerretDB's SQLite plan uses it and scans nothing,
    MongoDB's plan has no collection scan."""
    reply = await db.command("explain", {"find": "cases", "filter": query})
    plan = _plan_lines(reply)
    if store_info.is_ferretdb:
        assert any("USING INDEX" in step for step in plan), plan
        assert not any("detail=SCAN" in step for step in plan), plan
    else:
        assert plan, reply
        assert "COLLSCAN" not in plan, plan


async def test_id_equality_is_served_by_the_index_at_any_size(
    db: AsyncDatabase[Document], store_info: Any
) -> None:
    """Every keyed path rests on this: a `find` by `_id` searches the `_id` index, it does not
    read the collection. (FerretDB 1.24 filtered by another expression than its index's until
    deploy/ferretdb/patches; its update and delete by `_id` use the same expression.)"""
    coll = db["cases"]
    await coll.insert_many([{"_id": f"case-{i:04d}", "n": i} for i in range(200)])
    await assert_index_serves(db, {"_id": "case-0100"}, store_info)
    # and the same filter answers updates and deletes of exactly that document
    assert (await coll.update_one({"_id": "case-0100"}, {"$set": {"n": -1}})).modified_count == 1
    assert (await coll.delete_one({"_id": "case-0101"})).deleted_count == 1
    assert await coll.find_one({"_id": "case-0100"}) == {"_id": "case-0100", "n": -1}
    assert await coll.count_documents({}) == 199


async def test_push_and_pull_whole_string_elements(db: AsyncDatabase[Document]) -> None:
    coll = db["reviewers"]
    await coll.insert_one({"_id": "r", "open_assignments": []})
    for item in ("a-1", "a-2", "a-3"):
        await coll.update_one({"_id": "r"}, {"$push": {"open_assignments": item}})
    await coll.update_one({"_id": "r"}, {"$pull": {"open_assignments": "a-2"}})
    pulled_again = await coll.update_one({"_id": "r"}, {"$pull": {"open_assignments": "a-2"}})
    assert pulled_again.modified_count == 0
    doc = await coll.find_one({"_id": "r"})
    assert doc is not None
    assert doc["open_assignments"] == ["a-1", "a-3"]  # order kept


async def test_push_each_upserts_a_missing_keyed_document(db: AsyncDatabase[Document]) -> None:
    keys = db["keys"]
    await keys.update_one(
        {"_id": "due:all:2026-03-01"}, {"$push": {"ids": {"$each": ["x", "y"]}}}, upsert=True
    )
    await keys.update_one(
        {"_id": "due:all:2026-03-01"}, {"$push": {"ids": {"$each": ["z"]}}}, upsert=True
    )
    assert await keys.find_one({"_id": "due:all:2026-03-01"}) == {
        "_id": "due:all:2026-03-01",
        "ids": ["x", "y", "z"],
    }
    # $pull on a document that is not there changes nothing and creates nothing
    await keys.update_one({"_id": "absent"}, {"$pull": {"ids": "x"}})
    assert await keys.find_one({"_id": "absent"}) is None


async def test_add_to_set_lists_an_id_once_and_upserts_only_when_asked(
    db: AsyncDatabase[Document],
) -> None:
    keys = db["keys"]
    for item in ("2026-03-01", "2026-03-02", "2026-03-01"):
        await keys.update_one({"_id": "due:all:days"}, {"$addToSet": {"ids": item}}, upsert=True)
    assert await keys.find_one({"_id": "due:all:days"}) == {
        "_id": "due:all:days",
        "ids": ["2026-03-01", "2026-03-02"],  # once each, in the order first added
    }
    # without upsert, a document that is not there stays absent (a reviewer never made)
    missed = await keys.update_one({"_id": "absent"}, {"$addToSet": {"ids": "x"}})
    assert missed.matched_count == 0
    assert await keys.find_one({"_id": "absent"}) is None


# --- intake ----------------------------------------------------------------------------------


async def test_keyed_list_positions_are_claimed_by_insert_across_clients(
    store_url: str, db_name: str, client: AsyncMongoClient[Document]
) -> None:
    """Two instances (clients) append to one list at once, with no lock between them: the
    positions are claimed by inserting their `_id`, so no entry is lost and none is shared."""
    clients = [AsyncMongoClient[Document](store_url, tz_aware=True) for _ in range(2)]
    try:
        stores = [IntakeStore(c[db_name]) for c in clients]
        locks = [AggregateLocks(), AggregateLocks()]

        async def append(i: int) -> int:
            async with locks[i % 2].hold("list:all"):
                return await stores[i % 2].list_append("all", f"case-{i:03d}")

        positions = await asyncio.gather(*(append(i) for i in range(40)))
        assert sorted(positions) == list(range(1, 41))
        entries = [
            await stores[0].case_lists.find_one({"_id": list_entry_id("all", p)}) for p in positions
        ]
        assert sorted(e["case_id"] for e in entries if e) == [f"case-{i:03d}" for i in range(40)]
        assert await stores[0].list_last("all") == 40  # the hint, then forward to the end
    finally:
        await client.drop_database(db_name)
        for c in clients:
            await c.close()


async def test_list_positions_reserved_under_the_lock_are_written_after_it(
    store_url: str, db_name: str, client: AsyncMongoClient[Document]
) -> None:
    """Intake's appends: a position is reserved under the list's lock, written after it is
    released, so many writes are in flight at once, from two instances: every position from 1
    to the last is written exactly once (no hole a forward probe would stop at)."""
    clients = [AsyncMongoClient[Document](store_url, tz_aware=True) for _ in range(2)]
    try:
        stores = [IntakeStore(c[db_name]) for c in clients]
        locks = [AggregateLocks(), AggregateLocks()]

        async def join(i: int) -> int:
            store, lock = stores[i % 2], locks[i % 2]
            while True:
                async with lock.hold("list:all"):
                    position = await store.list_reserve("all")
                if await store.list_claim("all", position, f"case-{i:03d}"):
                    return position

        positions = await asyncio.gather(*(join(i) for i in range(40)))
        assert sorted(positions) == list(range(1, 41))
        entries = [
            await stores[0].case_lists.find_one({"_id": list_entry_id("all", p)})
            for p in range(1, 42)
        ]
        assert entries[-1] is None
        assert sorted(e["case_id"] for e in entries[:-1] if e) == [
            f"case-{i:03d}" for i in range(40)
        ]
        assert await IntakeStore(client[db_name]).list_last("all") == 40
    finally:
        await client.drop_database(db_name)
        for c in clients:
            await c.close()


async def test_a_failed_list_write_hands_its_position_back(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reserved position whose write failed is the next one handed out, so no hole stays."""
    store = IntakeStore(db)
    assert await store.list_append("all", "case-a") == 1
    reserved = await store.list_reserve("all")
    real_insert = store.case_lists.insert_one

    async def store_away(*args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("the store went away")

    monkeypatch.setattr(store.case_lists, "insert_one", store_away)
    with pytest.raises(AutoReconnect):
        await store.list_claim("all", reserved, "case-b")
    monkeypatch.setattr(store.case_lists, "insert_one", real_insert)
    assert await store.list_append("all", "case-b") == reserved == 2
    assert await store.list_append("all", "case-c") == 3
    assert await IntakeStore(db).list_last("all") == 3


@pytest.mark.parametrize(
    "query",
    [
        {"_id": {"$in": ["case-0100", "case-0042", "case-0100", "missing"]}},
        {"_id": "case-0100", "n": {"$lt": 1000}},
    ],
    ids=["in", "id-and-more"],
)
async def test_an_id_list_or_an_id_beside_other_conditions_is_served_by_the_index(
    db: AsyncDatabase[Document], store_info: Any, query: Document
) -> None:
    """A page's rows in one request (`_id` `$in` their ids) and a lease's conditional renewal
    (`_id` and its holder) search the `_id` index, and the rest of the filter still applies
    (FerretDB 1.24 read the whole collection for both until deploy/ferretdb/patches)."""
    coll = db["cases"]
    await coll.insert_many([{"_id": f"case-{i:04d}", "n": i} for i in range(200)])
    await assert_index_serves(db, query, store_info)
    found = sorted([d["_id"] async for d in coll.find(query)])
    assert found == (["case-0042", "case-0100"] if "$in" in str(query) else ["case-0100"])
    assert await coll.find_one({"_id": "case-0100", "n": {"$gt": 1000}}) is None
    rows = await by_ids(coll, ["case-0100", "missing", "case-0042", "case-0100"], {"n": 1})
    assert rows == [
        {"_id": "case-0100", "n": 100},
        None,
        {"_id": "case-0042", "n": 42},
        {"_id": "case-0100", "n": 100},
    ]
    moved = await coll.update_one({"_id": "case-0100", "n": {"$lt": 0}}, {"$set": {"n": -5}})
    assert moved.matched_count == 0
    gone = await coll.delete_many({"_id": {"$in": ["case-0001", "case-0002"]}, "n": 1})
    assert gone.deleted_count == 1 and await coll.count_documents({}) == 199


async def test_case_lists_and_records_read_only_by_id(watched: Any) -> None:
    db, commands = watched
    store = IntakeStore(db)
    now = T0
    base = {
        "reference": "",
        "status": "draft",
        "created_by": {"sub": "p", "role": "patient"},
        "patient": {
            "given_name": "A",
            "family_name": "B",
            "birth_date": "1970-01-01",
            "email": "a@example.org",
            "preferred_language": "fr",
        },
        "specialty": "oncology",
        "urgency": "routine",
        "language": "fr",
        "questions": ["diagnosis_clarification"],
        "clinical_summary": "x",
        "created_at": now,
        "updated_at": now,
        "record_ids": [],
    }
    for i in range(30):
        case_id = f"case-{i:03d}"
        owner = "p-1" if i % 3 == 0 else "p-2"
        for key in ("all", list_key("patient_id", owner)):
            await store.list_append(key, case_id)
        status = "submitted" if i % 2 else "draft"
        await db["cases"].insert_one(
            base | {"_id": case_id, "reference": f"R-{i}", "patient_id": owner, "status": status}
        )
    await store.list_append("all", "never-written")  # an entry whose case never came
    commands.filters.clear()

    page = await store.cases_page(Scope("patient_id", "p-1"), None, 4)
    assert [r.id for r in page.rows] == ["case-027", "case-024", "case-021", "case-018"]
    rest = await store.cases_page(Scope("patient_id", "p-1"), page.positions[-1], 10)
    assert [r.id for r in rest.rows] == [
        "case-015",
        "case-012",
        "case-009",
        "case-006",
        "case-003",
        "case-000",
    ]
    submitted = await store.cases_page(Scope(statuses=(CaseStatus.WITHDRAWN,)), None, 5)
    assert submitted.rows == []  # a status no case has: an empty page, every entry looked at once
    every = await store.cases_page(Scope(), None, 100)
    assert len(every.rows) == 30 and every.more is None

    # a record of 600 KiB in three pieces, listed on its case
    data = bytes(range(256)) * 2400
    record = Record.model_validate(
        {
            "_id": "case-000:abc",
            "case_id": "case-000",
            "document_id": "abc",
            "kind": "test_result",
            "content_type": "application/pdf",
            "size": len(data),
            "uploaded_at": now,
            "uploaded_by": {"sub": "p-1", "role": "patient"},
        }
    )
    keyring = Keyring.parse(f"k1:{generate_key()}")
    await store.put_record(record, data, keyring)
    piece = await store.chunks.find_one({"_id": "case-000:abc:000001"})
    assert piece is not None and "data" not in piece  # sealed, bound to its `_id`
    case = await store.case("case-000")
    assert case is not None and case.record_ids == ["case-000:abc"]
    (stored,) = await store.records_of(case)
    assert stored.chunks == 3
    chunks = await store.record_bytes(stored, keyring)
    assert chunks is not None
    assert b"".join([c async for c in chunks]) == data
    assert await store.delete_record("case-000", "case-000:abc")
    assert not await store.delete_record("case-000", "case-000:abc")
    case = await store.case("case-000")
    assert case is not None and await store.records_of(case) == []
    assert await store.record_bytes(stored, keyring) is None

    # a submission is one request that answers with the case as written
    before = len(commands.filters)
    consent = StoredConsent(text_version="v1", accepted_at=now, scopes=[], recorded_at=now)
    entry = StoredEntry(id="ev-1", kind=TimelineKind.SUBMITTED, status=CaseStatus.SUBMITTED, at=now)
    event = Event.new(CaseWithdrawn(case_id="case-000", withdrawn_at=now), "/avis/test")
    submitted_case = await store.submit(
        "case-000", at=now, consent=consent, traceparent="", entry=entry, events=[event]
    )
    assert len(commands.filters) == before + 1
    assert submitted_case is not None and submitted_case.status is CaseStatus.SUBMITTED
    assert [e.id for e in submitted_case.timeline] == ["ev-1"]
    raw = await db["cases"].find_one({"_id": "case-000"})
    assert raw is not None and raw["outbox"], "the event is in the case's outbox"
    assert (
        await store.submit(
            "case-999", at=now, consent=consent, traceparent="", entry=entry, events=[]
        )
        is None
    )
    assert commands.not_by_id() == []


# --- review ----------------------------------------------------------------------------------


def _assignment(
    case_id: str, round_: int, reviewer: str, due: datetime, status: str
) -> AssignmentDoc:
    aid = assignment_id_for(case_id, round_)
    return AssignmentDoc.model_validate(
        {
            "_id": aid,
            "case_id": case_id,
            "round": round_,
            "reviewer_id": reviewer,
            "status": status,
            "specialty": "oncology",
            "urgency": "routine",
            "language": "fr",
            "assigned_at": due - timedelta(days=5),
            "due_at": due,
            "sort_key": sort_key(due, aid),
        }
    )


async def test_review_loads_rounds_queue_and_lists_read_only_by_id(watched: Any) -> None:
    db, commands = watched
    store = ReviewStore(db)
    for rid in ("r-1", "r-2"):
        await store.insert_reviewer(
            ReviewerDoc.model_validate(
                {
                    "_id": rid,
                    "display_name": rid,
                    "specialties": ["oncology"],
                    "languages": ["fr"],
                    "capacity": 5,
                    "active": True,
                    "created_at": T0,
                    "updated_at": T0,
                }
            )
        )
    made = []
    for i in range(12):
        case_id = f"c-{i:02d}"
        reviewer = "r-1" if i % 2 else "r-2"
        status = "assigned" if i < 4 else "completed"
        doc = _assignment(case_id, 1, reviewer, T0 + timedelta(hours=7 * i), status)
        await store.file_due(doc)
        await store.insert_assignment(doc, [])
        if status == "assigned":
            await store.add_open(reviewer, doc.id)
            await store.add_open(reviewer, doc.id)  # counted once
        made.append(doc)
        await store.insert_case(CaseDoc(id=case_id, status=ReviewCaseStatus.ASSIGNED, round=1))
    # a second round written by an attempt that stopped before the case learnt of it
    second = _assignment("c-05", 2, "r-2", T0 + timedelta(days=9), "assigned")
    await store.insert_assignment(second, [])
    await store.insert_case(CaseDoc(id="w-1", status=ReviewCaseStatus.MATCHING))
    nobody = Rationale(
        rule="no_candidate", chosen=None, candidates=[], decided_at=T0, decided_by="matcher"
    )
    await store.set_case_waiting("w-1", since=T0, last_attempt=nobody)
    commands.filters.clear()

    assert await store.loads(["r-1", "r-2", "nobody"]) == {"r-1": 2, "r-2": 2, "nobody": 0}
    rounds = await store.assignments_of("c-05", 1)
    assert [r.id for r in rounds] == [made[5].id, second.id]
    assert [c.id for c in await store.cases_in(ReviewCaseStatus.WAITING)] == ["w-1"]
    assert await store.cases_in(ReviewCaseStatus.MATCHING) == []

    page, more = await store.assignments_page(
        reviewer_id=None, statuses=frozenset(), case_id=None, overdue_at=None, after=None, limit=5
    )
    assert [d.id for d in page] == [d.id for d in made[:5]] and more is None
    after, _ = await store.assignments_page(
        reviewer_id="r-1",
        statuses=frozenset(),
        case_id=None,
        overdue_at=None,
        after=page[-1].sort_key,
        limit=20,
    )
    assert [d.id for d in after] == [d.id for d in made[5:] if d.reviewer_id == "r-1"]
    overdue, _ = await store.assignments_page(
        reviewer_id=None,
        statuses=frozenset(),
        case_id=None,
        overdue_at=(True, T0 + timedelta(hours=15)),
        after=None,
        limit=20,
    )
    assert [d.id for d in overdue] == [made[0].id, made[1].id, made[2].id]
    open_, _ = await store.assignments_page(
        reviewer_id="r-2",
        statuses=frozenset({AssignmentStatus.ASSIGNED}),
        case_id=None,
        overdue_at=None,
        after=None,
        limit=20,
    )
    assert [d.id for d in open_] == [made[0].id, made[2].id]
    await store.accept(made[2].id, at=T0, seq=2, events=[])
    both, _ = await store.assignments_page(
        reviewer_id="r-2",
        statuses=frozenset({AssignmentStatus.ASSIGNED, AssignmentStatus.ACCEPTED}),
        case_id=None,
        overdue_at=None,
        after=None,
        limit=20,
    )
    assert [(d.id, d.status) for d in both] == [
        (made[0].id, AssignmentStatus.ASSIGNED),
        (made[2].id, AssignmentStatus.ACCEPTED),
    ], "open work in either status, from the reviewer's list, soonest due first"
    assert commands.not_by_id() == [
        f for f in commands.filters if f[1] == "reviewers" and f[2] == {}
    ], "only the directory itself is read whole (its size is the reviewers, not the cases)"

    await store.remove_open("r-1", made[1].id)
    assert await store.load("r-1") == 1


async def test_the_due_walk_reads_days_together_and_pages_on_past_its_budget(
    watched: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds spread over many days, one or none a day: a page reads the months, then the month's
    days with their counts, then as many day buckets together as the counts say the page needs
    (at most eight a request), and when it stops at its budget
    its cursor goes on exactly where it stopped, so the pages together are the whole walk, in
    order."""
    db, commands = watched
    store = ReviewStore(db)
    made = []
    for i in range(15):
        due = T0 + timedelta(days=i * (1 if i % 3 else 2))  # some days without any round
        doc = _assignment(f"d-{i:02d}", 1, "r-1", due, "completed" if i % 2 else "declined")
        await store.file_due(doc)
        await store.insert_assignment(doc, [])
        made.append(doc)
    commands.filters.clear()
    (whole, more) = await store.assignments_page(
        reviewer_id=None, statuses=frozenset(), case_id=None, overdue_at=None, after=None, limit=50
    )
    assert [d.id for d in whole] == [d.id for d in sorted(made, key=lambda d: d.sort_key)]
    assert more is None
    keys = [f for f in commands.filters if f[1] == "keys"]
    read = [len(f[2]["_id"]["$in"]) for f in keys[2:]]
    assert keys[0][2] == {"_id": {"$in": ["due:all:months", "due:all:days"]}}
    assert keys[1][2] == {"_id": {"$in": ["due:all:days:2026-03"]}}
    assert read == [8, 7], f"the months, March's days, then 15 days' buckets 8 and 7: {keys}"

    monkeypatch.setattr("avis.review.store.DUE_SCAN_BUDGET", 4)
    pages, after, stops = [], None, 0
    for _ in range(20):
        page, more = await store.assignments_page(
            reviewer_id=None,
            statuses=frozenset({AssignmentStatus.COMPLETED}),
            case_id=None,
            overdue_at=None,
            after=after,
            limit=50,
        )
        pages += page
        if more is None:
            break
        after, stops = more, stops + 1
    assert stops >= 3, "15 entries at 4 a request: the walk stopped at its budget"
    completed = [d.id for d in whole if d.status == AssignmentStatus.COMPLETED]
    assert [d.id for d in pages] == completed and len(completed) == 7
    assert commands.not_by_id() == []


async def test_rounds_filed_together_write_each_bucket_once(watched: Any) -> None:
    """A batch's rounds filed in one request: one write per bucket (a day's, its month's list
    of days, the months) and scope, whatever number of rounds it files, and the walk finds them
    all, per reviewer too, with their days' counts."""
    db, commands = watched
    store = ReviewStore(db)
    made = [  # six rounds, two reviewers, two days
        _assignment(f"b-{i}", 1, f"r-{i % 2}", T0 + timedelta(days=i // 3, hours=i), "assigned")
        for i in range(6)
    ]
    commands.filters.clear()
    await store.file_due(*made)
    writes = [f[2]["_id"] for f in commands.filters if f[0] == "update"]
    # Three scopes (all, r-0, r-1) by two days, three writes each; one by one it was 36.
    assert len(writes) == 18
    assert len([w for w in writes if w.endswith(("2026-03-01", "2026-03-02"))]) == 6
    for doc in made:
        await store.insert_assignment(doc, [])
    for reviewer_id in (None, "r-0", "r-1"):
        page, _ = await store.assignments_page(
            reviewer_id=reviewer_id,
            statuses=frozenset(),
            case_id=None,
            overdue_at=None,
            after=None,
            limit=50,
        )
        wanted = sorted((d for d in made if reviewer_id in (None, d.reviewer_id)), key=_by_due)
        assert [d.id for d in page] == [d.id for d in wanted]
    days = await db["keys"].find_one({"_id": "due:all:days:2026-03"})
    assert days is not None and days["n"] == {"2026-03-01": 3, "2026-03-02": 3}


def _by_due(doc: Any) -> str:
    return str(doc.sort_key)


async def test_the_due_walk_reads_bounded_lists_across_months_and_folds_the_old_list(
    watched: Any,
) -> None:
    """Rounds over three months: each month's list holds its own days only, with their counts, so
    a page reads documents of a bounded size however long the history; a page that a short first
    day does not fill reads the buckets it needs in one request; a moved due date leaves its
    emptied day's count at 0 and the walk in order; a list of every day left by the versions
    before is read as it is, then folded into the months at start-up."""
    db, commands = watched
    store = ReviewStore(db)
    await store.insert_reviewer(
        ReviewerDoc.model_validate(
            {
                "_id": "r-1",
                "display_name": "r-1",
                "specialties": ["oncology"],
                "languages": ["fr"],
                "capacity": 5,
                "active": True,
                "created_at": T0,
                "updated_at": T0,
            }
        )
    )
    made = []
    for i in range(30):  # one round every third day from March 1st: March, April and May
        due = T0 + timedelta(days=3 * i, hours=i % 2)
        doc = _assignment(f"m-{i:02d}", 1, "r-1", due, "completed")
        await store.file_due(doc)
        await store.insert_assignment(doc, [])
        made.append(doc)
    for scope in ("all", "reviewer:r-1"):
        months = await store.key_counts([f"due:{scope}:months"])
        assert sorted(months[0][0]) == ["2026-03", "2026-04", "2026-05"]
        lists = await store.key_counts([f"due:{scope}:days:{m}" for m in months[0][0]])
        assert [len(days) for days, _ in lists] == [11, 10, 9]
        assert all(counts == dict.fromkeys(days, 1) for days, counts in lists)

    # a due date moved (a pause): filed again on its new day, then taken off the former one
    moved = made[0].model_copy(
        update={
            "due_at": T0 + timedelta(days=4),
            "sort_key": sort_key(T0 + timedelta(days=4), made[0].id),
        }
    )
    await store.file_due(moved)
    await store.assignments.update_one(
        {"_id": moved.id}, {"$set": {"due_at": moved.due_at, "sort_key": moved.sort_key}}
    )
    await store.information.unfile_due(made[0])
    march = await store.key_counts(["due:all:days:2026-03"])
    assert march[0][1]["2026-03-01"] == 0 and march[0][1]["2026-03-05"] == 1
    expected = sorted([moved, *made[1:]], key=lambda d: d.sort_key)
    assert [d.id for d in expected][:3] == [made[1].id, moved.id, made[2].id]

    async def walk(limit: int) -> list[str]:
        pages: list[str] = []
        after = None
        for _ in range(40):
            page, _more = await store.assignments_page(
                reviewer_id="r-1",
                statuses=frozenset(),
                case_id=None,
                overdue_at=None,
                after=after,
                limit=limit,
            )
            pages += [d.id for d in page]
            if len(page) < limit:
                return pages
            after = page[-1].sort_key
        raise AssertionError("the walk did not end")

    assert await walk(4) == [d.id for d in expected]
    commands.filters.clear()
    assert await walk(50) == [d.id for d in expected]
    keys = [f for f in commands.filters if f[1] == "keys"]
    assert len(keys) == 1 + 2 + 4, (
        f"the months, two requests of two and one months, 30 days 8 at a time: {keys}"
    )

    # the layout of the versions before: one list of every day, beside the months
    await store.keys.update_one(
        {"_id": "due:reviewer:r-1:days"},
        {"$addToSet": {"ids": {"$each": ["2026-06-02"]}}},
        upsert=True,
    )
    late = _assignment("m-old", 1, "r-1", T0 + timedelta(days=93), "completed")
    await store.keys.update_one(
        {"_id": "due:reviewer:r-1:2026-06-02"}, {"$push": {"ids": late.sort_key}}, upsert=True
    )
    await store.insert_assignment(late, [])
    assert await walk(7) == [d.id for d in expected] + [late.id], "read before the fold"
    await fold_due_days(store)
    assert await store.key_ids("due:reviewer:r-1:days") == []
    assert "2026-06" in await store.key_ids("due:reviewer:r-1:months")
    assert await store.key_ids("due:reviewer:r-1:days:2026-06") == ["2026-06-02"]
    assert await walk(7) == [d.id for d in expected] + [late.id], "and after"
    await fold_due_days(store)  # again: nothing to fold
    assert commands.not_by_id() == [
        f for f in commands.filters if f[1] == "reviewers" and f[2] == {}
    ], "only the directory is read whole (the fold's scopes)"


# --- notify ----------------------------------------------------------------------------------


async def test_notify_due_queue_read_and_written_only_by_id(watched: Any) -> None:
    db, commands = watched
    store = NotifyStore(db)
    for kind in ("email", "webhook"):
        assert await store.cursor(kind) is None
        await store.set_cursor(100, kind)
        await store.file(100, f"{kind}-1", kind)
        await store.file(100, f"{kind}-1", kind)  # filed once
        await store.file(100, f"{kind}-2", kind)
        await store.file(101, f"{kind}-3", kind)
        assert await store.bucket(100, kind) == [f"{kind}-1", f"{kind}-2"]
        await store.unfile(100, f"{kind}-1", kind)
        await store.unfile(100, f"{kind}-2", kind)
        assert await store.bucket(100, kind) == []
        await store.drop_bucket(100, kind)
        await store.set_cursor(101, kind)
        assert await store.cursor(kind) == 101
        assert await store.bucket(101, kind) == [f"{kind}-3"]
    assert await store.bucket(100, "email") == []
    assert commands.not_by_id() == []


async def test_the_access_trail_is_appended_and_paged_only_by_id(
    watched: Any, store_url: str, db_name: str
) -> None:
    """The trail's entries and head, written and read by `_id` alone, also where two instances
    append at once and where the head was written back by the earlier of two writers: every
    append and page steps past a head that lags, and the chain still verifies."""
    db, commands = watched
    trail = AuditTrail(db)
    other: AsyncMongoClient[Document] = AsyncMongoClient(store_url, tz_aware=True)
    try:
        elsewhere = AuditTrail(other[db_name])  # a second instance, on a client of its own
        case_id = "case-trail"

        def read(n: int) -> AuditRecord:
            return AuditRecord(
                actor=f"sub-{n}", role="coordinator", action="case.read", purpose="care"
            )

        written = await asyncio.gather(
            *(
                (trail if n % 2 else elsewhere).append(case_id, read(n), T0 + timedelta(seconds=n))
                for n in range(8)
            )
        )
        assert sorted(e.seq for e in written if e) == list(range(1, 9))
        # The earliest entry's head written last, as a racing instance may leave it.
        first = min((e for e in written if e), key=lambda e: e.seq)
        await db[HEADS].replace_one({"_id": case_id}, AuditHead.of(first).to_doc())
        entries, last = await trail.page(case_id, after=0, limit=20)
        assert last == 8 and [e.seq for e in entries] == list(range(1, 9))
        nine = await trail.append(case_id, read(9), T0 + timedelta(seconds=9))
        assert nine is not None and nine.seq == 9
        assert await trail.verify(case_id) is None
        assert [h.seq for h in await trail.keep([case_id])] == [9]  # the heads' write, by `_id`
        head = await trail.head(case_id)
        assert head is not None and head.seq == 9
    finally:
        await other.close()
    assert commands.not_by_id() == []
