"""Flat cost as data grows: the store's idle CPU, intake under load and the lists people open,
at several sizes of stored data, with the four services running as separate processes.

For each size (1,000, 10,000 and 50,000 cases by default) the stores of intake and review are
seeded directly to that size, with documents and assignments in proportion, then:
  idle       FerretDB's CPU over `--idle` seconds (60) with the four services running, from
             10 s after they are ready; the store CPU of their start-up until then apart
  load       16 concurrent clients draft, upload one PDF and submit `--cases` cases each round:
             p50/p95/p99 of each step, cases/s, and the load generator's own CPU
  assign     submit -> assignment time of those cases (submit sent -> `review-assigned` on the
             broker, seen by the bench's own consumer)
  cpu        CPU ms per case of the store, the broker and each service, from the load's start
             until its cases are assigned (what a case costs, whatever else shares the cores)
  lists      p95 of each list a person opens (intake's cases, review's assignments, queue and
             reviewers), `--list-samples` requests each
  pages      p95 of each web page people open, and the store requests and the CPU ms (the
             store's, and everyone's) per view of each (which must not grow with the stored
             cases); `--pages` runs only the lists and the pages
Then the round's cases are withdrawn, so every size is measured with the same open work.
  sweep      one sweep of the retention calendar over that many documents kept besides 25 past
             their time (tests/support/retention.py): its store requests, deletes apart (the
             constant, which must not grow), and its time; `--sweep` runs only this part
One table by size is printed and written to bench/results/store-<time>.json; the baseline is
the smallest size of the same run (cost at N / cost at the smallest N).

Seeding clones one real case, made through the APIs at start, under new ids: whatever shape
the services store, the seeded documents are the ones they write themselves.
Usage: make bench-store  (or: python bench/bench_store.py --sizes 1000,10000 --quick;
       make bench-store BENCH_ARGS="--sweep --sizes 1000,50000" for the sweep's cost alone,
       make bench-store BENCH_ARGS="--pages --sizes 1000,50000 --cases 16" for the pages)
"""

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import re
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from avis.intake.store import Store as IntakeStore
from avis.intake.store import list_entry_id, list_key
from avis.review.rules import sort_key
from avis.review.store import Store as ReviewStore
from avis.review.store import file_due_many

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # journey uses tests/

from journey import ASSIGNED, Probe, bench_env, pct, store_requests
from pyspy import Profiler

from tests.support.retention import sweep_cost
from tests.support.stack import SERVICES, ServiceStack, cpu_seconds

ROOT = pathlib.Path(__file__).resolve().parent.parent
MONGO = os.environ.get("AVIS_MONGO_URL", "mongodb://127.0.0.1:17117")
STATE = pathlib.Path(os.environ.get("AVIS_STATE_DIR", ROOT / ".local/test"))
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
SPECIALTY = "oncology"


def bench_stack(database_prefix: str) -> ServiceStack:
    """The four services as separate processes on the bench stack's broker and store."""
    env = os.environ | bench_env()
    databases = {name: f"{database_prefix}_{name}" for name in (*SERVICES, "web")}
    stack = ServiceStack(
        env=env,
        logs=STATE / "bench-logs",
        databases=databases,
        services=(*SERVICES, "web"),
        command=lambda s: [sys.executable, str(ROOT / "bench/launch.py"), s],
    )
    # The pages call the services of this stack, known once their ports are drawn.
    stack.env = dict(env) | {f"AVIS_WEB_{s.upper()}_URL": stack.urls[s] for s in SERVICES}
    return stack


async def make_case(intake: httpx.AsyncClient, n: int) -> tuple[str, dict[str, float]]:
    """Draft, upload one PDF and submit one case; returns its id and each step's seconds."""
    times: dict[str, float] = {}
    body = {
        "patient": {
            "given_name": "Camille",
            "family_name": "Martin",
            "birth_date": "1971-03-14",
            "email": "camille.martin@example.org",
            "phone": "+33 6 12 34 56 78",
            "preferred_language": "fr",
        },
        "physician": {"name": "Dr Bernard", "institution_code": "BENCH-HOSP"},
        "specialty": SPECIALTY,
        "urgency": "routine",
        "questions": ["diagnosis_clarification"],
        "clinical_summary": "Bench case.",
    }
    start = time.perf_counter()
    draft = await intake.post("/v1/cases", json=body)
    draft.raise_for_status()
    times["draft"] = time.perf_counter() - start
    case_id = draft.json()["case_id"]
    start = time.perf_counter()
    stored = await intake.post(
        f"/v1/cases/{case_id}/documents",
        files={"file": ("record.pdf", PDF + f"% {n} {uuid.uuid4().hex}\n".encode())},
        data={"kind": "test_result"},
    )
    stored.raise_for_status()
    times["upload"] = time.perf_counter() - start
    start = time.perf_counter()
    consent = {
        "consent": {
            "text_version": "consent-2026-01",
            "accepted_at": datetime.now(UTC).isoformat(),
            "scopes": ["review"],
        }
    }
    times["submit_sent_at"] = time.time()  # wall clock, as the broker stamps events
    submitted = await intake.post(f"/v1/cases/{case_id}/submit", json=consent)
    submitted.raise_for_status()
    times["submit"] = time.perf_counter() - start
    return case_id, times


async def poll(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise TimeoutError("condition not met")


def renamed(value: Any, names: dict[str, str]) -> Any:
    """`value` with every string holding one of `names` rewritten (ids inside ids too)."""
    if isinstance(value, str):
        for old, new in names.items():
            if old in value:
                value = value.replace(old, new)
        return value
    if isinstance(value, dict):
        return {renamed(k, names): renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    return value


class Seeder:
    """Clones one complete case of intake and review to reach a given number of cases."""

    def __init__(self, mongo: AsyncMongoClient[dict[str, Any]], stack: ServiceStack) -> None:
        self.mongo = mongo
        self.stack = stack
        self.template: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.names: dict[str, str] = {}
        self.count = 0

    async def capture(self, names: list[str]) -> None:
        """Keep every document of both services that belongs to the template case: its `_id`
        names the case (or its assignment), or its `case_id` field is the case."""
        self.names = {name: "" for name in names}
        case_id = names[0]
        for service in ("intake", "review"):
            db = self.mongo[self.stack.databases[service]]
            kept: dict[str, list[dict[str, Any]]] = {}
            for name in await db.list_collection_names():
                if name.startswith(("inbox", "outbox_hints", "system.")):
                    continue
                if service == "intake" and name in ("case_lists", "case_list_hints"):
                    continue  # positions, not clones: written by `lists` below
                mine = [
                    d
                    async for d in db[name].find({})
                    if d.get("case_id") == case_id or any(n in str(d["_id"]) for n in names)
                ]
                if mine:
                    kept[name] = mine
            self.template[service] = kept

    async def grow_to(self, cases: int, batch: int = 500) -> float:
        """Insert clones until `cases` seeded cases exist; returns the seconds it took."""
        start = time.perf_counter()
        case_id, reference, patient, assignment = list(self.names)
        while self.count < cases:
            todo = range(self.count, min(cases, self.count + batch))
            due_keys: dict[str, list[str]] = {}
            for service, collections in self.template.items():
                db = self.mongo[self.stack.databases[service]]
                for name, docs in collections.items():
                    clones = []
                    for i in todo:
                        names = {
                            case_id: str(uuid.UUID(int=i + 1)),
                            reference: f"AV-1999-{i:06d}",
                            patient: f"seed-patient-{i}",
                            assignment: f"seed-assignment-{i:06d}",
                        }
                        for doc in docs:
                            clone = renamed(doc, names)
                            if clone["_id"] == doc["_id"]:
                                clone["_id"] = f"{doc['_id']}-{i}"
                            clone.pop("outbox", None)
                            if "outbox_pending" in clone:
                                clone["outbox_pending"] = 0
                            if service == "review" and name == "assignments":
                                spread(clone, i, due_keys)
                            clones.append(clone)
                    await db[name].insert_many(clones, ordered=False)
                    if due_keys:
                        await file_due_many(ReviewStore(db), due_keys)
                        due_keys.clear()
            await self.lists(todo)
            self.count = todo.stop
        return time.perf_counter() - start

    async def lists(self, todo: range) -> None:
        """Intake's keyed lists of the clones, as intake writes them: each clone at the next
        position of every case's list (after the template, the first), and first in its
        patient's own list; the hint of the last position follows."""
        db = self.mongo[self.stack.databases["intake"]]
        end = await IntakeStore(db).list_last("all")  # after the cases made under load too
        entries, hints = [], []
        for k, i in enumerate(todo):
            case_id = str(uuid.UUID(int=i + 1))
            entries.append({"_id": list_entry_id("all", end + 1 + k), "case_id": case_id})
            patient = list_key("patient_id", f"seed-patient-{i}")
            entries.append({"_id": list_entry_id(patient, 1), "case_id": case_id})
            hints.append({"_id": patient, "last": 1})
        await db["case_lists"].insert_many(entries, ordered=False)
        await db["case_list_hints"].insert_many(hints, ordered=False)
        await db["case_list_hints"].update_one(
            {"_id": "all"}, {"$set": {"last": end + len(todo)}}, upsert=True
        )


def spread(assignment: dict[str, Any], i: int, due_keys: dict[str, list[str]]) -> None:
    """Give the i-th cloned round its own time, ten minutes apart going back (a year of
    history at 50,000), and note its sort key for review's day buckets."""
    shift = timedelta(minutes=10 * (i + 1))
    for field in ("assigned_at", "due_at", "accepted_at", "completed_at"):
        if isinstance(assignment.get(field), datetime):
            assignment[field] -= shift
    assignment["sort_key"] = sort_key(assignment["due_at"], assignment["_id"])
    due_keys.setdefault(assignment["reviewer_id"], []).append(assignment["sort_key"])


async def setup_reviewers(review: httpx.AsyncClient, how_many: int = 20) -> None:
    for i in range(how_many):
        response = await review.post(
            "/v1/reviewers",
            json={
                "id": f"bench-onc-{i:02d}",
                "display_name": f"Bench reviewer {i}",
                "specialties": [SPECIALTY],
                "languages": ["fr", "en"],
                "institution_code": f"BENCH-REV-{i}",
                "capacity": 100,
            },
        )
        assert response.status_code in (200, 201), response.text


async def template_case(stack: ServiceStack, seeder: Seeder) -> None:
    """One case through draft, upload, submit, assignment, acceptance and opinion."""
    async with stack.client("intake", "seed-template", "patient") as intake:
        case_id, _ = await make_case(intake, 0)
        case = (await intake.get(f"/v1/cases/{case_id}")).json()
    async with stack.client("review", "coord-bench", "coordinator") as coordinator:

        async def assigned() -> Any:
            items = (await coordinator.get("/v1/assignments", params={"case_id": case_id})).json()
            return items["items"]

        (assignment,) = await poll(assigned)
    async with stack.client("review", assignment["reviewer_id"], "reviewer") as reviewer:
        url = f"/v1/assignments/{assignment['id']}"
        (await reviewer.post(f"{url}/accept")).raise_for_status()
        opinion = {
            "diagnosis": {"assessment": "confirmed", "explanation": "Bench."},
            "imaging_and_lab_review": "Bench.",
            "alternative_pathways": "Bench.",
            "risk_benefit": "Bench.",
            "further_tests": "Bench.",
            "summary_for_patient": "Bench.",
        }
        (await reviewer.post(f"{url}/opinion", json=opinion)).raise_for_status()
    async with stack.client("intake", "seed-template", "patient") as intake:

        async def completed() -> bool:
            status = (await intake.get(f"/v1/cases/{case_id}")).json()["status"]
            return bool(status == "in_review" or status == "report_ready")

        with contextlib.suppress(TimeoutError):
            await poll(completed, timeout=30)
    await seeder.capture([case_id, case["reference"], "seed-template", assignment["id"]])


SETTLE_SECONDS = 10.0  # after the services are ready, before idle is measured


async def idle_cpu(seconds: float, since_start: float) -> tuple[float, float]:
    """FerretDB's CPU, in cores, over `seconds` of an idle stack, measured once the services'
    start-up has settled (SETTLE_SECONDS after they are ready); and the store CPU seconds spent
    from `since_start` (the store's CPU when the services were started) until then."""
    pid = int((STATE / "ferretdb.pid").read_text())
    await asyncio.sleep(SETTLE_SECONDS)
    before, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start), before - since_start


class CpuSpent:
    """CPU the stack spends from the start of the load until its cases are assigned, per case:
    the broker, the store and each service. Unlike latency, it hardly depends on what else the
    machine runs, so it says what a size costs even on shared cores."""

    def __init__(self, stack: ServiceStack) -> None:
        self.pids = {
            "store": int((STATE / "ferretdb.pid").read_text()),
            "broker": int((STATE / "kafka.pid").read_text()),
        } | {m.service: m.process.pid for m in stack.members if m.process is not None}
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def per_case(self, cases: int) -> dict[str, float]:
        spent = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.pids.items()}
        out = {name: round(1000 * seconds / max(cases, 1), 1) for name, seconds in spent.items()}
        out["total"] = round(1000 * sum(spent.values()) / max(cases, 1), 1)
        return out


async def load(stack: ServiceStack, cases: int, clients: int, round_: int) -> dict[str, Any]:
    """`clients` concurrent patients make `cases` cases; latencies, rate and our own CPU."""
    steps: dict[str, list[float]] = {"draft": [], "upload": [], "submit": []}
    made: list[tuple[str, str, float]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(cases):
        queue.put_nowait(n)

    async def worker(w: int) -> None:
        sub = f"bench-patient-{round_}-{w}"
        async with stack.client("intake", sub, "patient") as intake:
            while not queue.empty():
                n = queue.get_nowait()
                case_id, times = await make_case(intake, n)
                for step in steps:
                    steps[step].append(times[step])
                made.append((sub, case_id, times["submit_sent_at"]))

    cpu_before = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - start
    cpu = (time.process_time() - cpu_before) / elapsed
    figures: dict[str, Any] = {"cases": cases, "seconds": round(elapsed, 2)}
    figures["cases_per_s"] = round(cases / elapsed, 2)
    figures["load_generator_cpu_cores"] = round(cpu, 3)
    for step, values in steps.items():
        figures[step] = {f"p{q}": round(1000 * pct(values, q), 1) for q in (50, 95, 99)}
    figures["made"] = made
    return figures


async def assignment_times(
    made: list[tuple[str, str, float]], probe: Probe, deadline: float = 300.0
) -> dict[str, Any]:
    """Submit -> assignment of the cases just made: from the moment each submit was sent to
    the broker's time of its `review-assigned` event, as the bench's own consumer saw it (no
    request to the services, so measuring adds no load). The cases still unassigned at the
    deadline are counted, not waited for."""

    def assigned_at(case_id: str) -> float | None:
        return probe.times.get(case_id, {}).get(ASSIGNED)

    async def all_assigned() -> bool:
        return all(assigned_at(c) is not None for _, c, _ in made)

    with contextlib.suppress(TimeoutError):
        await poll(all_assigned, timeout=deadline)
    waits = [at - sent for _, c, sent in made if (at := assigned_at(c)) is not None]
    out: dict[str, Any] = {f"p{q}": round(1000 * pct(waits, q), 1) for q in (50, 95, 99)}
    out["unassigned_at_deadline"] = sum(assigned_at(c) is None for _, c, _ in made)
    return out


async def lists(stack: ServiceStack, samples: int, patient: str) -> dict[str, float]:
    """p95 of each list a person opens, first page, `samples` requests each."""
    targets = {
        "intake cases (patient)": ("intake", patient, "patient", "/v1/cases"),
        "intake cases (coordinator)": ("intake", "coord-bench", "coordinator", "/v1/cases"),
        "review assignments (coordinator)": (
            "review",
            "coord-bench",
            "coordinator",
            "/v1/assignments",
        ),
        "review assignments (reviewer)": ("review", "bench-onc-00", "reviewer", "/v1/assignments"),
        "review queue": ("review", "coord-bench", "coordinator", "/v1/queue"),
        "review reviewers": ("review", "coord-bench", "coordinator", "/v1/reviewers"),
    }
    out: dict[str, float] = {}
    for label, (service, sub, role, path) in targets.items():
        async with stack.client(service, sub, role) as http:
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                response = await http.get(path, params={"limit": 20})
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, (label, response.status_code, response.text)
            out[label] = round(1000 * pct(times, 95), 1)
    return out


# The pages people open, by who opens them (`{case}`: a case of the person's own).
PAGES = {
    "patient": ["/cases", "/cases/new", "/cases/{case}", "/cases/{case}/timeline"],
    "coordinator": ["/board", "/board/cases/{case}", "/board/reviewers", "/board/partners"],
    "partner": ["/partner"],
    "reviewer": ["/review", "/review/{assignment}"],
}


@contextlib.asynccontextmanager
async def signed_in(stack: ServiceStack, identity: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the web pages, signed in as `role:subject` (the bench's own sign-in)."""
    async with httpx.AsyncClient(
        base_url=stack.urls["web"], timeout=30.0, follow_redirects=True
    ) as web:
        page = await web.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        done = await web.post("/signin", data={"csrf": csrf.group(1), "identity": identity})
        assert done.status_code == 200, (identity, done.status_code)
        yield web


async def pages(
    stack: ServiceStack, samples: int, people: dict[str, tuple[str, dict[str, str]]]
) -> dict[str, float]:
    """p95 of each page's server time (the request through web and the services' APIs it
    calls, on loopback), `samples` requests each, with the store requests and the CPU a view
    costs; `people` gives each role's identity and the ids its pages name."""
    out: dict[str, float] = {}
    for role, paths in PAGES.items():
        identity, ids = people[role]
        async with signed_in(stack, identity) as web:
            for template in paths:
                path = template.format(**ids)
                times = []
                before = await data_requests(stack)
                cpu = CpuSpent(stack)
                for _ in range(samples):
                    start = time.perf_counter()
                    response = await web.get(path, follow_redirects=False)
                    times.append(time.perf_counter() - start)
                    assert response.status_code == 200, (path, response.status_code)
                used = cpu.per_case(samples)
                spent = (await data_requests(stack)) - before
                out[f"{role} {template}"] = round(1000 * pct(times, 95), 1)
                out[f"{role} {template}{REQUESTS}"] = round(spent / samples, 1)
                out[f"{role} {template}{STORE_CPU}"] = used["store"]
                out[f"{role} {template}{ALL_CPU}"] = used["total"]
    return out


async def data_requests(stack: ServiceStack) -> float:
    """The requests for their own data the services and web have sent the store so far (what
    the services do in the background between two readings counts too: a few)."""
    counts = await store_requests(stack, stack.services)
    return sum(n for by_kind in counts.values() for k, n in by_kind.items() if k.startswith("data"))


async def open_pages(
    stack: ServiceStack, made: list[tuple[str, str, float]], args: argparse.Namespace
) -> dict[str, float]:
    """The pages' p95, as the first case of the round's owner, its reviewer and the others see
    them (the case is waited for until assigned)."""
    sub, case_id, _ = made[0]

    async def assigned() -> tuple[str, str] | None:
        with contextlib.suppress(ValueError):
            return await assignment_of(stack, case_id)
        return None

    reviewer, assignment = await poll(assigned, timeout=args.wait)
    case = {"case": case_id}
    people = {
        "patient": (f"patient:{sub}", case),
        "coordinator": ("coordinator:coord-bench", case),
        "partner": ("partner:desk-bench:partner-bench", {}),
        "reviewer": (f"reviewer:{reviewer}", {"assignment": assignment}),
    }
    if not (args.profile and args.pages):
        return await pages(stack, args.list_samples, people)
    # py-spy on web and the services its pages call, while the pages are opened.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    profilers = {}
    for name in ("web", "review", "intake"):
        process = stack.of(name)[0].process
        assert process is not None
        path = ROOT / f"bench/results/pages-profile-{name}-{stamp}.txt"
        profilers[name] = Profiler(process.pid, path)
    try:
        return await pages(stack, args.list_samples, people)
    finally:
        for name, profiler in profilers.items():
            print(f"[bench-store] pages profile of {name}:", flush=True)
            print(json.dumps(profiler.stop(), indent=1), flush=True)


# After the round's last assignment: its emails, events and trails written before the lists.
PAGES_SETTLE_SECONDS = 5.0


async def settled(stack: ServiceStack, made: list[tuple[str, str, float]], wait: float) -> None:
    """Wait until every case of the round is assigned, then a few seconds more, so the lists
    and pages are measured on a quiet stack: measured while the matcher still worked through
    the round, a page paid for the matching's store work beside its own, in time and in the
    store's CPU."""

    async def all_assigned() -> bool:
        return await open_work(stack) >= len(made)

    await poll(all_assigned, timeout=wait)
    await asyncio.sleep(PAGES_SETTLE_SECONDS)


async def assignment_of(stack: ServiceStack, case_id: str) -> tuple[str, str]:
    """The reviewer and the id of a case's assignment."""
    async with stack.client("review", "coord-bench", "coordinator") as review:
        found = await review.get("/v1/assignments", params={"case_id": case_id})
        (assignment,) = found.json()["items"]
    return assignment["reviewer_id"], assignment["id"]


async def open_work(stack: ServiceStack) -> int:
    """The assignments the reviewers hold open, from review's directory."""
    async with stack.client("review", "coord-bench", "coordinator") as review:
        reviewers = (await review.get("/v1/reviewers", params={"limit": 100})).json()["items"]
    return sum(r["load"] for r in reviewers)


async def withdraw(stack: ServiceStack, made: list[tuple[str, str, float]], clients: int) -> None:
    """Withdraw the cases of a round and wait until review has released them, so each size
    starts with the same open work (the overdue gauge reads every open assignment: left open,
    the rounds would grow the next size's idle cost by what is open, not by what is stored)."""
    todo: asyncio.Queue[tuple[str, str, float]] = asyncio.Queue()
    for one in made:
        todo.put_nowait(one)

    async def worker() -> None:
        while not todo.empty():
            sub, case_id, _ = todo.get_nowait()
            async with stack.client("intake", sub, "patient") as intake:
                response = await intake.post(f"/v1/cases/{case_id}/withdraw")
                assert response.status_code == 200, (case_id, response.text)

    await asyncio.gather(*(worker() for _ in range(clients)))

    async def released() -> bool:
        return await open_work(stack) <= 1  # the template case's round, if its opinion was late

    await poll(released, timeout=300)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    stack = bench_stack(f"bstore{uuid.uuid4().hex[:6]}")
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGO, tz_aware=True)
    seeder = Seeder(mongo, stack)
    figures: dict[str, Any]
    results: dict[str, Any] = {"sizes": {}, "started": datetime.now(UTC).isoformat()}
    try:
        async with stack.running():
            async with stack.client("review", "coord-bench", "coordinator") as review:
                await setup_reviewers(review)
            await template_case(stack, seeder)
        for round_, size in enumerate(sizes):
            seconds = await seeder.grow_to(size)
            print(f"[bench-store] seeded {size} cases in {seconds:.1f} s", flush=True)
            if args.pages:
                async with stack.running():
                    made = (await load(stack, args.cases, args.clients, round_))["made"]
                    await settled(stack, made, args.wait)
                    figures = {"list_p95_ms": await lists(stack, args.list_samples, made[0][0])}
                    figures["page_p95_ms"] = await open_pages(stack, made, args)
                    await withdraw(stack, made, args.clients)
                results["sizes"][str(size)] = figures
                print(json.dumps({size: figures}, indent=1), flush=True)
                continue
            sweep = (await sweep_costs([size]))[str(size)]  # the store alone, before the services
            store_before_start = cpu_seconds(int((STATE / "ferretdb.pid").read_text()))
            async with stack.running():
                figures = {"seed_seconds": round(seconds, 1), "sweep": sweep}
                idle, startup = await idle_cpu(args.idle, store_before_start)
                open_before = await open_work(stack)
                figures["idle_store_cpu_cores"] = round(idle, 3)
                figures["startup_store_cpu_s"] = round(startup, 2)
                profiler = None
                if args.profile and size == sizes[-1]:
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
                    path = ROOT / f"bench/results/store-profile-intake-{size}-{stamp}.txt"
                    intake = stack.of("intake")[0].process
                    assert intake is not None
                    profiler = Profiler(intake.pid, path)
                probe = Probe(on_assigned=lambda _: None)
                await probe.start()
                spent = CpuSpent(stack)
                loaded = await load(stack, args.cases, args.clients, round_)
                if profiler is not None:
                    figures["intake_profile"] = profiler.stop()
                made = loaded.pop("made")
                figures["load"] = loaded
                try:
                    waits = await assignment_times(made, probe, args.wait)
                finally:
                    await probe.stop()
                figures["submit_to_assignment_ms"] = waits
                figures["cpu_ms_per_case"] = spent.per_case(len(made))
                figures["list_p95_ms"] = await lists(stack, args.list_samples, made[0][0])
                figures["page_p95_ms"] = await open_pages(stack, made, args)
                figures["open_assignments_while_idle"] = open_before
                await withdraw(stack, made, args.clients)
            results["sizes"][str(size)] = figures
            print(json.dumps({size: figures}, indent=1), flush=True)
    finally:
        for database in stack.databases.values():
            await mongo.drop_database(database)
        await mongo.close()
    results["peak_rss_mib_bench"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return results


async def sweep_costs(sizes: list[int]) -> dict[str, Any]:
    """A retention sweep's store requests at each size (the calendar's own database)."""
    found: dict[str, Any] = {}
    for size in sizes:
        cost = await sweep_cost(MONGO, size)
        found[str(size)] = {
            "removed": cost.removed,
            "requests": len(cost.requests),
            "deletes": cost.requests.count("delete"),
            "beyond_removed": cost.beyond_removed,
            "by_command": {n: cost.requests.count(n) for n in sorted(set(cost.requests))},
            "kept_left": cost.left,
            "sweep_ms": round(cost.seconds * 1000, 1),
        }
        print(f"[bench-store] sweep over {size} kept: {found[str(size)]}", flush=True)
    return found


def sweep_table(sweeps: dict[str, Any]) -> str:
    sizes = list(sweeps)
    rows = [
        ("sweep: documents removed", "removed"),
        ("sweep: store requests", "requests"),
        ("sweep: requests beyond removed", "beyond_removed"),
        ("sweep: ms", "sweep_ms"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    lines = ["kept besides".ljust(width) + "".join(f"{s:>12}" for s in sizes)]
    for label, key in rows:
        lines.append(label.ljust(width) + "".join(f"{sweeps[s][key]:>12}" for s in sizes))
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    sizes = list(results["sizes"])
    base = results["sizes"][sizes[0]]
    if "load" not in base:  # --pages
        return rows_table(results, lists_and_pages(base))
    rows: list[tuple[str, Callable[..., Any]]] = [
        ("idle store CPU (cores)", lambda f: f["idle_store_cpu_cores"]),
        ("store CPU s, services' start-up", lambda f: f["startup_store_cpu_s"]),
        ("cases/s (16 clients)", lambda f: f["load"]["cases_per_s"]),
        ("load generator CPU (cores)", lambda f: f["load"]["load_generator_cpu_cores"]),
    ]
    for step in ("draft", "upload", "submit"):
        for q in ("p50", "p95", "p99"):
            rows.append((f"{step} {q} ms", lambda f, s=step, q=q: f["load"][s][q]))
    for part in ("total", "store", "intake", "review", "broker"):
        rows.append((f"CPU ms per case: {part}", lambda f, p=part: f["cpu_ms_per_case"][p]))
    rows.append(("submit->assigned p50 ms", lambda f: f["submit_to_assignment_ms"]["p50"]))
    rows.append(("submit->assigned p95 ms", lambda f: f["submit_to_assignment_ms"]["p95"]))
    rows += lists_and_pages(base)
    rows.append(("sweep: store requests", lambda f: f["sweep"]["requests"]))
    rows.append(("sweep: requests beyond removed", lambda f: f["sweep"]["beyond_removed"]))
    return rows_table(results, rows)


def lists_and_pages(base: dict[str, Any]) -> list[tuple[str, Callable[..., Any]]]:
    """The rows of the lists' and the pages' figures."""
    rows: list[tuple[str, Callable[..., Any]]] = []
    for label in base["list_p95_ms"]:
        rows.append((f"list p95 ms: {label}", lambda f, lb=label: f["list_p95_ms"][lb]))
    for label in base["page_p95_ms"]:
        rows.append((page_row(label), lambda f, lb=label: f["page_p95_ms"][lb]))
    return rows


def page_row(label: str) -> str:
    """A page's row in the table: its p95, or its store requests per view."""
    if label.endswith(REQUESTS):
        return f"page store requests/view: {label.removesuffix(REQUESTS)}"
    if label.endswith(STORE_CPU):
        return f"page store CPU ms/view: {label.removesuffix(STORE_CPU)}"
    if label.endswith(ALL_CPU):
        return f"page CPU ms/view, all: {label.removesuffix(ALL_CPU)}"
    return f"page p95 ms: {label}"


REQUESTS = " (store requests)"
# The CPU a view costs the store, and the store, the broker and every service together
# (`CpuSpent`): unlike the p95, it hardly moves with what else the machine runs.
STORE_CPU = " (store CPU ms)"
ALL_CPU = " (CPU ms)"


def rows_table(results: dict[str, Any], rows: list[tuple[str, Callable[..., Any]]]) -> str:
    sizes = list(results["sizes"])
    width = max(len(r[0]) for r in rows) + 2
    lines = ["".ljust(width) + "".join(f"{s:>12}" for s in sizes) + f"{'last/first':>12}"]
    for label, get in rows:
        values = [get(results["sizes"][s]) for s in sizes]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        lines.append(label.ljust(width) + "".join(f"{v:>12}" for v in values) + f"{ratio:>12.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--cases", type=int, default=400, help="cases made under load per size")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument("--list-samples", type=int, default=40)
    parser.add_argument("--wait", type=float, default=300.0, help="seconds to wait for assignment")
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 cases, short")
    parser.add_argument("--label", default="", help="a name for this run in the results file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on intake during the load, largest size (with --pages: on web, review "
        "and intake while the pages are opened)",
    )
    parser.add_argument(
        "--pages",
        action="store_true",
        help="only the lists' and pages' p95 per size (after --cases cases, no idle, sweep)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="only a retention sweep's store requests per size"
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.cases, args.idle, args.list_samples = "1000,5000", 80, 15.0, 15
    if args.sweep:
        sizes = [int(s) for s in args.sizes.split(",")]
        results = {"sweep": asyncio.run(sweep_costs(sizes)), "label": args.label}
        results["table"] = sweep_table(results["sweep"])
    else:
        results = asyncio.run(main(args))
        results["label"] = args.label
        results["table"] = table(results)
    print(results["table"])
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = out / f"store-{stamp}{'-' + args.label if args.label else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")
    sys.exit(0)
