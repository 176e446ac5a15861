"""Copies of every service under faults aimed at the single actors (tests/reliability/chaos.py
with two copies of each): the holder of each job's lease is SIGKILLed several times, and a
frozen former holder (SIGSTOP) is refused when it comes back.

The fault run's small version here keeps to kills (no outages: test_chaos.py has those) and
prints, per job, the seconds from a holder's death to the next term of another copy."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from pymongo import AsyncMongoClient

from avis.shared.lease import LEASES, Lease
from avis.shared.mongo import Document
from tests.reliability.chaos import Plan, report, run, write_results
from tests.support.basics import MONGO_URL, ROOT, unique

pytestmark = pytest.mark.infra

TTL, SKEW = 3.0, 0.5

# A former holder: holds the lease's section and writes a numbered mark every 0.2 s, each after
# checking its fence; prints what happened to each write.
HOLDER = """
import asyncio, sys
from pymongo import AsyncMongoClient
from avis.shared.lease import LEASES, Fenced, Lease

async def main(url, database):
    db = AsyncMongoClient(url, tz_aware=True)[database]
    lease = Lease(db[LEASES], "job", holder="frozen", ttl={ttl}, skew={skew})
    async with lease.section() as fence:
        print("held", fence, flush=True)
        n = 0
        while True:
            n += 1
            try:
                await lease.check()
            except Fenced:
                print("refused", n, flush=True)
                return
            await db["marks"].insert_one({{"_id": n, "by": "frozen", "fence": fence}})
            print("wrote", n, flush=True)
            await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_frozen_former_holder_is_refused_when_it_comes_back() -> None:
    database = unique("frozen").replace("-", "_")
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(MONGO_URL, tz_aware=True)
    db = mongo[database]
    script = HOLDER.format(ttl=TTL, skew=SKEW)
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read in a thread later
        [sys.executable, "-c", script, MONGO_URL, database],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        while not process.stdout.readline().startswith("held"):  # past the lease's own log
            pass
        await asyncio.sleep(0.5)
        os.kill(process.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        # Another copy takes the lease over once the frozen term expired (ttl + skew).
        other = Lease(db[LEASES], "job", holder="other", ttl=TTL, skew=SKEW)
        async with asyncio.timeout(TTL * 4):
            async with other.section() as fence:
                took = time.monotonic() - frozen_at
                await db["marks"].insert_one({"_id": "other", "fence": fence})
                os.kill(process.pid, signal.SIGCONT)
                out, _ = await asyncio.to_thread(process.communicate, timeout=30)
        said = [line for line in out.splitlines() if line.split()[:1] in (["wrote"], ["refused"])]
        lines = " ".join(said).split()
        # The take-over time is a figure, never a pass mark (the frozen holder's term began
        # before the freeze, so it can end sooner than ttl + skew after it).
        print(f"taken over {took:.1f} s after the freeze; the former holder said: {said}")
        assert "refused" in lines, out
        assert "fenced write refused" in out  # its log says so too
        # Nothing it tried after its thaw was written: its last mark predates the take-over.
        marks = [d async for d in db["marks"].find({"by": "frozen"})]
        refused_at = int(lines[lines.index("refused") + 1])
        assert max(d["_id"] for d in marks) == refused_at - 1
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        await mongo.drop_database(database)
        await mongo.close()


@pytest.mark.timeout(420)
async def test_lease_holders_killed_nothing_lost_nothing_twice() -> None:
    plan = Plan(
        cases=int(os.environ.get("REPLICAS_SMALL_CASES", "12")),
        seed=int(os.environ.get("CHAOS_SEED", "11")),
        reviewers=4,
        capacity=(2, 3),
        filers=3,
        fault_seconds=45.0,
        kills_per_service=1,
        think_seconds=4.0,
        quiet_timeout=180.0,
        copies=2,
        outages=False,
    )
    figures = await run(plan)
    print(report(figures))  # with each job's take-over time: a figure, never a pass mark
    write_results(figures)
    assert sum(figures.kills.values()) >= 4, figures.kills
    assert figures.problems == [], report(figures)
    assert figures.capacity_violations == 0
    assert figures.takeovers, "no kill met a holder: nothing timed"
