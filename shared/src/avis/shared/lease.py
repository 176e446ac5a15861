"""A lease in the store with a fencing token: one copy of a service acts for a job at a time.

The store does not arbitrate conditional updates (DESIGN.md section 4: on FerretDB racing
version-guarded updates all "match"), so the only arbiter is the unique `_id`. A job's lease is
a chain of epoch documents in the service's `leases` collection:

- `<job>:<epoch>` holds the holder's id, its ttl and its last renewal (`renewed_at`, and
  `expires_at` = `renewed_at` + ttl, both read on the holder's clock). It is inserted once, by
  its claimant, and afterwards written only by that holder (renewals, the release): one writer
  per document, so no update ever races another.
- `<job>:head` is a hint naming the latest epoch, so a reader need not search. It may lag or,
  in a rare race, step back; every reader probes forward from it (`<job>:<head+1>`, ...) by
  `_id`, so the chain's end is the truth and the hint only saves reads.

Claiming epoch n+1 is inserting `<job>:<n+1>`: of two claimants exactly one insert succeeds,
the other meets the duplicate-key error and has lost. A claimant only tries once the current
holder's lease has expired by the holder's own rules: the holder's recorded `expires_at` (its
renewal time plus its ttl, on its clock), judged against the claimant's clock with a margin
`skew` for the difference between the two clocks; or at once if the holder released it. The
holder, on its side, believes in its lease only until its last successful renewal *began* plus
its ttl, measured on its monotonic clock. So while the clocks of two copies differ by less than
`skew`, the old holder has stopped believing before anyone may claim.

The fence is the epoch number. A holder checks it before each decision write (`check`): the
write is refused if a newer epoch exists (the head hint or `<job>:<fence+1>`, one read by
`_id`). What that guarantees on FerretDB, and what it does not:

- guaranteed: a write begun after the take-over's insert was acknowledged is refused, however
  long its writer was paused (a SIGSTOP, a long GC) and whatever it believes about its lease;
- not guaranteed by the check alone: a writer paused *between* its check and its write still
  writes once it resumes (the check and the write are two operations and the store offers no
  transaction to join them). Where that matters, the written document also carries the fence
  (`stamp`) and the write is filtered on it (`fenced`): a stale write onto a document that the
  new holder has already written matches nothing. On FerretDB this filter is evaluated
  read-modify-write, so it refuses a stale write that comes *after* the new holder's write
  (the case a resumed, paused holder produces) but cannot arbitrate the two writes if they
  land at the same instant, nor protect a document the new holder has not written yet. Every
  job is therefore also idempotent, so such a late write repeats a decision rather than
  contradicting one.

There is no TTL index (FerretDB has none): the chain stays short because the winner of epoch n
deletes `<job>:<n-2>`; a holder of that epoch is refused by the head hint, which already names n.

The periodic jobs of a service (the parking sweep, the inbox pruning, review's overdue count)
run under a lease per job (`singleton`), so N copies run each once per period; a take-over may
run the job once early. The dead-letter depth gauge stays on every copy: it only reads the
broker and sets this copy's own gauge, so running it twice costs two reads and changes nothing
(dashboards take the maximum over copies). docs/architecture.md says why per job.

A job that decides on demand rather than on a period (review's matching) holds its lease for one
critical section at a time (`section`): claim (waiting while another copy is inside), renew while
inside, release on the way out, so the next copy claims at once. Its writes check the fence as
above. A section that ends while another task of the same copy waits for one hands its term over
instead (no release, no claim: seven store requests saved), for at most ttl/3 after the run's
claim; then it releases, and the copy's next claim waits long enough for a copy polling the
store to claim first, so copies take turns. A copy that dies inside keeps the others out until
its term expires (ttl + skew). docs/replicas.md says which single actor uses which.

Writes to one aggregate that may reach any copy (intake's HTTP writes beside the events its
partition owner applies) take a lighter section of their own (`Sections`): one document per
aggregate, inserted on the way in and deleted a moment after the way out (`linger`), so that
the writes that follow each other on one aggregate in this copy (a write, then its relay) share
one entry.
"""

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from avis.shared.clock import now
from avis.shared.mongo import AggregateLocks, Document
from avis.shared.tasks import stopped

LEASES = "leases"
SECTIONS = "sections"
log = structlog.get_logger("avis.lease")


class Fenced(Exception):
    """A newer epoch exists: the caller is a former holder and must not write."""


@dataclass(frozen=True)
class Term:
    """One epoch of a lease as stored: who holds it, and until when by its own clock."""

    epoch: int
    holder: str
    expires_at: datetime
    released: bool = False

    @classmethod
    def of(cls, doc: Document) -> "Term":
        """The term recorded in an epoch document."""
        return cls(
            epoch=int(doc["epoch"]),
            holder=str(doc["holder"]),
            expires_at=doc["expires_at"],
            released=bool(doc.get("released", False)),
        )

    def expired(self, at: datetime, skew: float) -> bool:
        """Whether a claimant whose clock reads `at` may take over: the holder released it,
        or its own `expires_at` lies more than `skew` seconds behind `at`."""
        return self.released or at >= self.expires_at + timedelta(seconds=skew)


def holder_id(service: str) -> str:
    """An id for this copy of `service`, unique across hosts, processes and restarts."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def presence_job(holder: str) -> str:
    """The job of a copy's presence: a lease it holds for life, so other copies know whether
    it still lives (expired or released: gone)."""
    return f"copy:{holder}"


def stamp(fence: int) -> Document:
    """The fields a fenced write sets on its document (`$set` them with the change)."""
    return {"fence": fence}


def fenced(filter_: Document, fence: int) -> Document:
    """`filter_` narrowed to documents no newer holder has written (their fence is not above
    ours); a document created for fenced writes starts with `stamp(0)`."""
    return {**filter_, "fence": {"$lte": fence}}


class Turns:
    """One task at a time, like an asyncio lock whose waiters go in the order they came, but for
    those that ask to go `first`: the next turn is theirs, every other turn at most when others
    wait too, so the others still get one turn in two and never starve."""

    def __init__(self) -> None:
        self._held = False
        self._others: deque[asyncio.Future[None]] = deque()
        self._firsts: deque[asyncio.Future[None]] = deque()
        self._first_went = False  # the turn running now went to one that came first

    def locked(self) -> bool:
        return self._held

    async def acquire(self, *, first: bool = False) -> None:
        if not self._held:
            self._held, self._first_went = True, first
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._firsts if first else self._others
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the turn came with the cancellation: the next one takes it
            elif waiter in queue:
                queue.remove(waiter)
            raise

    def release(self) -> None:
        """Hand the turn to the next waiter (one that came first, unless the turn ending was
        such one's and others wait), or free it."""
        while self._firsts or self._others:
            first = bool(self._firsts) and not (self._first_went and self._others)
            waiter = (self._firsts if first else self._others).popleft()
            if not waiter.done():
                self._first_went = first
                waiter.set_result(None)
                return
        self._held = False


class Lease:
    """The lease of one job: claim, renew, release, check a fence, and hold it in a loop."""

    def __init__(
        self,
        collection: AsyncCollection[Document],
        job: str,
        *,
        holder: str,
        ttl: float = 9.0,
        skew: float = 1.0,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.leases = collection
        self.job = job
        self.holder = holder
        self.ttl = ttl
        self.skew = skew
        self.clock = clock
        self.fence: int | None = None
        self.held = asyncio.Event()
        self._valid_until = 0.0  # monotonic: this copy stops believing in its lease here
        self._inside = Turns()  # one section of this copy at a time
        self._quiet = False  # sections come and go by the thousand: not each one in the log
        # The hand-over of `section`: a run of sections of this copy on one claimed term.
        self.run_limit = ttl / 3  # hand over no longer than this after the run's claim
        self.handovers = 0  # sections entered on a term handed over (no claim of their own)
        self._waiting = 0  # this copy's tasks waiting to enter a section
        self._renewing: asyncio.Task[None] | None = None  # a section's term, held and renewed
        self._run_began = 0.0  # monotonic: the claim the current run began with
        self._claim_took = 0.0  # seconds: the last claim of a section, store round trips included
        self._ceded = False  # the last run was released with this copy's tasks still waiting
        self._letting_go: asyncio.Task[None] | None = None

    def _key(self, epoch: int | str) -> str:
        return f"{self.job}:{epoch}"

    async def latest(self) -> tuple[int, Term | None]:
        """The chain's last epoch and its term (0 and None before the first claim)."""
        head = await self.leases.find_one({"_id": self._key("head")})
        epoch = int(head["epoch"]) if head else 0
        doc = await self.leases.find_one({"_id": self._key(epoch)}) if epoch else None
        while (after := await self.leases.find_one({"_id": self._key(epoch + 1)})) is not None:
            epoch, doc = epoch + 1, after
        return epoch, Term.of(doc) if doc is not None else None

    async def claim(self, *, own: bool = False) -> int | None:
        """Become the holder if the current term has expired (or, with `own`, is this copy's
        own: a section whose release failed); the new fence, or None."""
        epoch, term = await self.latest()
        mine = own and term is not None and term.holder == self.holder
        if term is not None and not mine and not term.expired(self.clock(), self.skew):
            return None
        began = time.monotonic()
        at = self.clock()
        try:
            await self.leases.insert_one(
                {
                    "_id": self._key(epoch + 1),
                    "job": self.job,
                    "epoch": epoch + 1,
                    "holder": self.holder,
                    "ttl_s": self.ttl,
                    "claimed_at": at,
                    "renewed_at": at,
                    "expires_at": at + timedelta(seconds=self.ttl),
                }
            )
        except DuplicateKeyError:
            return None  # another claimant inserted this epoch first
        self._gain(epoch + 1, began)
        await self._tidy(epoch + 1)
        return epoch + 1

    async def _tidy(self, epoch: int) -> None:
        """Point the head hint at `epoch` and drop the epoch two back (best effort)."""
        with contextlib.suppress(DuplicateKeyError):  # two first claims upserting the head
            await self.leases.update_one(
                {"_id": self._key("head")}, {"$set": {"epoch": epoch}}, upsert=True
            )
        if epoch > 2:
            await self.leases.delete_one({"_id": self._key(epoch - 2)})

    def _gain(self, fence: int, began: float) -> None:
        self.fence = fence
        self._valid_until = began + self.ttl
        self.held.set()
        (log.debug if self._quiet else log.info)(
            "lease held", job=self.job, fence=fence, holder=self.holder
        )

    def _lose(self, why: str) -> None:
        if self.fence is not None:
            log.warning("lease lost", job=self.job, fence=self.fence, why=why)
        self.fence = None
        self.held.clear()

    def holding(self) -> bool:
        """Whether this copy may still believe it holds the lease (its own clock's verdict)."""
        return self.fence is not None and time.monotonic() < self._valid_until

    async def renew(self) -> bool:
        """Extend our term (only our own epoch document, only by us); False once lost."""
        if self.fence is None:
            return False
        if not self.holding():
            self._lose("not renewed within its ttl")
            return False
        began = time.monotonic()
        at = self.clock()
        result = await self.leases.update_one(
            {"_id": self._key(self.fence), "holder": self.holder},
            {"$set": {"renewed_at": at, "expires_at": at + timedelta(seconds=self.ttl)}},
        )
        if result.matched_count != 1 or await self.superseded(self.fence):
            self._lose("a newer epoch exists")
            return False
        self._valid_until = began + self.ttl
        return True

    async def superseded(self, fence: int) -> bool:
        """Whether an epoch newer than `fence` exists (the head hint or the next epoch)."""
        keys = [self._key("head"), self._key(fence + 1)]
        async for doc in self.leases.find({"_id": {"$in": keys}}):
            if doc["_id"] != self._key("head") or int(doc["epoch"]) > fence:
                return True
        return False

    async def check(self, fence: int | None = None) -> int:
        """The fence to write with; raises `Fenced` if a newer epoch exists or we hold none (a
        refusal of our own fence also ends our belief in it: `holding()` turns false)."""
        fence = self.fence if fence is None else fence
        if fence is None or await self.superseded(fence):
            # A former holder's write, refused: the log says so, for the fault runs to count.
            log.warning("fenced write refused", job=self.job, fence=fence, holder=self.holder)
            if fence == self.fence:
                self._valid_until = 0.0  # a newer epoch exists: stop believing in ours
            raise Fenced(f"{self.job}: fence {fence} is no longer current")
        return fence

    def believed(self) -> int:
        """The fence to write with, by this copy's own clock alone (no store request): for the
        writes of a decision after its `check()`; raises `Fenced` once this copy no longer
        believes in its term (not renewed within its ttl: a pause, a lost store, a refusal).
        A newer epoch can only be claimed after that (while the clocks differ by less than
        `skew`), so a write that passes began before any take-over."""
        if self.fence is None or not self.holding():
            log.warning("fenced write refused", job=self.job, fence=self.fence, holder=self.holder)
            raise Fenced(f"{self.job}: fence {self.fence} is no longer believed")
        return self.fence

    async def release(self) -> None:
        """Give the lease up now (a clean stop): another copy may claim at once."""
        fence, self.fence = self.fence, None
        self.held.clear()
        if fence is not None:
            await self.leases.update_one(
                {"_id": self._key(fence), "holder": self.holder},
                {"$set": {"released": True, "expires_at": self.clock()}},
            )

    @contextlib.asynccontextmanager
    async def section(self, *, poll: float = 0.02, first: bool = False) -> AsyncIterator[int]:
        """Hold the lease for one critical section: claim it (polling every ~`poll` s while
        another copy is inside), renew it while inside, release it on the way out; yields the
        fence. Inside, `check()` refuses once the term was lost (a pause past the ttl).

        Hand-over: a section that ends while another task of this copy waits to enter one hands
        the term to it instead of releasing it: the next section keeps the fence and the
        renewal, so it costs no store request to enter or leave (a claim is three reads and an
        insert, then the head's upsert and a delete; a release is an update: seven requests
        saved per section handed over; `check()` still costs its read before each write). It
        is made only while `holding()` and while `check()` has refused nothing, never by a task
        being cancelled (a copy that stops releases), and only for
        `run_limit` seconds (ttl/3) after the run's claim. Then the lease is released, and this
        copy's next claim waits `_grace()` (a poll of the other copies and two claims' time),
        so a copy waiting in the store claims first: a run keeps the others out for at most
        `run_limit` plus one section.

        `first`: this copy's next section is this one, ahead of those that came before it, every
        other section at most while others wait (`Turns`).
        """
        await self._enter(first)
        try:
            self._quiet = True
            fence = self._handed()
            if fence is None:
                await self._let_go()  # a term handed over but lost meanwhile (best effort)
                fence = await self._claim_section(poll)
            else:
                self.handovers += 1
            try:
                yield fence
            finally:
                if not self._may_hand_over():
                    self._ceded = self._waiting > 0
                    await self._let_go()
        finally:
            self._inside.release()

    async def _enter(self, first: bool = False) -> None:
        """Take this copy's turn (`_inside`; `first`: ahead of the others waiting, every other
        turn at most), counted among the waiters until then. A waiter cancelled after the term
        was handed to it lets go of the term, if nobody else waits."""
        self._waiting += 1
        try:
            await self._inside.acquire(first=first)
        except asyncio.CancelledError:
            self._waiting -= 1
            if self._waiting == 0 and self._renewing is not None and not self._inside.locked():
                self._letting_go = asyncio.create_task(self._abandoned(), name="lease-let-go")
            raise
        self._waiting -= 1

    async def _abandoned(self) -> None:
        """Release a term handed over to a waiter that was cancelled, unless another came."""
        await self._inside.acquire()
        try:
            if self._waiting == 0:
                await self._let_go()
        finally:
            self._inside.release()

    def _handed(self) -> int | None:
        """The fence of a term the previous section of this copy left us, if still believed."""
        if self._renewing is None or self._renewing.done() or not self.holding():
            return None
        return self.fence

    def _may_hand_over(self) -> bool:
        """Whether the section ending now may leave its term to the next task of this copy (not
        when its task is being cancelled: a copy that stops releases at once)."""
        task = asyncio.current_task()
        return (
            self._waiting > 0
            and self.holding()
            and time.monotonic() - self._run_began < self.run_limit
            and not (task is not None and task.cancelling())
        )

    async def _claim_section(self, poll: float) -> int:
        """Claim the lease for a run of sections (the first one's), and renew it meanwhile."""
        if self._ceded:
            self._ceded = False
            await asyncio.sleep(self._grace(poll))
        began = time.monotonic()
        # Only this copy's previous section can have left a term of ours: take it back.
        while (fence := await self.claim(own=True)) is None:
            await asyncio.sleep(poll * random.uniform(0.5, 1.5))  # noqa: S311
            began = time.monotonic()
        self._claim_took = time.monotonic() - began
        self._run_began = began
        self._renewing = asyncio.create_task(self._keep(), name=f"lease-{self.job}-renew")
        return fence

    def _grace(self, poll: float) -> float:
        """What a copy waiting in the store needs to claim a released term before us: its
        longest pause between claims (1.5 polls) and two claims' time, as long as ours took."""
        return 1.5 * poll + 2 * self._claim_took

    async def _let_go(self) -> None:
        """Stop renewing the section's term and release it (best effort)."""
        renewing, self._renewing = self._renewing, None
        await stopped(renewing)
        with contextlib.suppress(PyMongoError):
            await self.release()

    async def _keep(self) -> None:
        """Renew every ttl/3 until cancelled or lost."""
        while self.fence is not None:
            await asyncio.sleep(self._pause())
            if self.fence is not None:
                await self._step()

    async def _step(self) -> None:
        """One claim or renewal; a renewal may take no longer than what is left of our term."""
        try:
            if self.fence is None:
                await self.claim()
            else:
                left = max(0.01, self._valid_until - time.monotonic())
                async with asyncio.timeout(left):
                    await self.renew()
        except (PyMongoError, TimeoutError) as exc:
            log.debug("lease not renewed this time", job=self.job, error=type(exc).__name__)
        if self.fence is not None and not self.holding():
            self._lose("not renewed within its ttl")

    def _pause(self) -> float:
        """Until the next renewal (ttl/3), or the end of our term if that comes first."""
        if self.fence is None:
            return self.ttl / 3
        return max(0.0, min(self.ttl / 3, self._valid_until - time.monotonic()))

    async def hold(
        self,
        on_gain: Callable[[int], Awaitable[None]] | None = None,
        on_loss: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Claim, renew every ttl/3, claim again after a loss; forever (release on cancel)."""
        try:
            while True:
                had = self.fence
                await self._step()
                if had is None and self.fence is not None and on_gain is not None:
                    await on_gain(self.fence)
                elif had is not None and self.fence is None and on_loss is not None:
                    await on_loss()
                await asyncio.sleep(self._pause())
        finally:
            if self.fence is not None:
                if on_loss is not None:
                    await on_loss()
                with contextlib.suppress(PyMongoError):
                    await self.release()


async def singleton(lease: Lease, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `work` (a periodic job's loop) only while `lease` is held here: started on a gain,
    cancelled on a loss, so across N copies one runs it at a time."""
    running: asyncio.Task[None] | None = None

    async def gain(_: int) -> None:
        nonlocal running
        running = asyncio.create_task(work(), name=f"lease-{lease.job}")

    async def loss() -> None:
        nonlocal running
        # Until it has ended (`stopped`): a loop still running would keep this copy from ever
        # claiming the lease again, and the job would stop everywhere.
        await stopped(running)
        running = None

    await lease.hold(gain, loss)


class Sections(AggregateLocks):
    """One writer per aggregate at a time across the copies of a service: `AggregateLocks` whose
    `hold(key)` also holds the aggregates of the given kinds (`<kind>:<id>`, `lock_key`) in the
    store, so that a service's writers and its outbox relay take it unchanged. Other kinds stay
    locks of this process (what the store arbitrates by itself, such as a list's positions).

    Inside this copy the aggregate's in-process lock comes first, so that copies wait for each
    other in the store, never their own requests. Then the copy inserts `<key>` into the
    `sections` collection (its holder, a token of this entry, and `expires_at` = now + ttl on
    its clock): the duplicate-key error tells the others that someone is inside, and they try
    again after `poll` (5 ms), doubling up to 100 ms.

    The way out leaves the entry for `linger` (0.2 s) before deleting it (by its token, the
    entries of that moment together in one request): a hold of the same aggregate in this copy
    meanwhile takes the entry over at no cost, as long as it was inserted less than `reuse`
    (ttl / 3) ago, so an aggregate busy here without a pause lets the others in at least that
    often. A write and its relay's publication, the few writes of a case's first minute, cost
    two store requests together instead of two each; another copy wanting the aggregate waits
    up to `linger` longer. An entry of this copy's own met on the way in, when this copy's lock
    is held and nobody here is inside, is a leftover of ours (a delete that failed): deleted by
    its token, then entered anew. `close()` deletes what lingers (a clean stop).

    With `every`, the entries whose linger is over are deleted together at most that often (a
    service whose sections other copies seldom wait for: notify's cases, held once per event):
    one request for all of them, and a longer chance of being taken over, for a wait of up to
    `linger` + `every` at another copy.

    A copy that dies inside, or within `linger` of its way out, leaves its document behind.
    Once its `expires_at` plus `skew` has passed on a waiter's clock, the waiter deletes that
    document (by its token, so a newer entry is never touched) and inserts its own. A section
    is short (a read, a decision, a write), far under the ttl; there is no fence, so a copy
    paused inside for longer than the ttl could still write after another copy entered (the
    limit that `Lease` states for a write paused between its check and itself).
    """

    def __init__(
        self,
        collection: AsyncCollection[Document],
        holder: str,
        kinds: Sequence[str],
        *,
        ttl: float = 30.0,
        skew: float = 1.0,
        poll: float = 0.005,
        linger: float = 0.2,
        reuse: float | None = None,
        every: float = 0.0,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.sections = collection
        # The lingering entries are deleted together at most this often (0: each as soon as
        # its linger is over): an entry may then linger up to `linger` + `every`.
        self.every = every
        self._swept_at = 0.0
        self.holder = holder
        self.kinds = frozenset(kinds)
        self.ttl = ttl
        self.skew = skew
        self.poll = poll
        self.linger = linger
        self.reuse = ttl / 3 if reuse is None else reuse
        self.clock = clock
        # Entries left on the way out, by key: (token, entered at, left at; monotonic).
        self._lingering: dict[str, tuple[str, float, float]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        super().__init__()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Be the only writer of aggregate `key` among the copies for the block."""
        async with super().hold(key):
            if key.partition(":")[0] not in self.kinds:
                yield
                return
            left = self._lingering.pop(key, None)
            if left is not None and time.monotonic() - left[1] < self.reuse:
                token, entered = left[0], left[1]
            else:
                token, entered = await self._enter(key), time.monotonic()
            try:
                yield
            except BaseException:
                with contextlib.suppress(PyMongoError):
                    await self.sections.delete_one({"_id": key, "token": token})
                raise
            self._lingering[key] = (token, entered, time.monotonic())
            if self.linger <= 0:
                await self._sweep(everything=True)
            elif self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep_soon(), name="sections-sweep")

    async def _sweep_soon(self) -> None:
        """Delete the lingering entries once their `linger` is over, until none is left."""
        while self._lingering:
            oldest = min(left for _, _, left in self._lingering.values())
            due = max(oldest + self.linger, self._swept_at + self.every)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self._swept_at = time.monotonic()
            try:
                await self._sweep()
            except PyMongoError as exc:
                log.debug("sections not deleted this time", error=type(exc).__name__)
                await asyncio.sleep(self.linger)

    async def _sweep(self, *, everything: bool = False) -> None:
        """Delete the entries whose linger is over (or all), each by its token, in one request;
        taken out of the lingering first, so a hold meanwhile enters anew."""
        until = time.monotonic() - self.linger
        done = {
            key: token
            for key, (token, _, left) in self._lingering.items()
            if everything or left <= until
        }
        for key in done:
            del self._lingering[key]
        if done:
            try:
                await self.sections.delete_many(
                    {"$or": [{"_id": key, "token": token} for key, token in done.items()]}
                )
            except PyMongoError:
                # Kept to sweep again (unless held anew meanwhile); never taken over as they are
                # (entered at 0): a hold meets them as leftovers of ours.
                for key, token in done.items():
                    self._lingering.setdefault(key, (token, 0.0, 0.0))
                raise

    async def close(self) -> None:
        """Delete every lingering entry now (a clean stop: the other copies need not wait)."""
        await stopped(self._sweeper)
        with contextlib.suppress(PyMongoError):
            await self._sweep(everything=True)

    async def _enter(self, key: str) -> str:
        """Insert this entry's document once nobody else is inside; its token."""
        wait = self.poll
        while True:
            token = uuid.uuid4().hex
            at = self.clock()
            try:
                await self.sections.insert_one(
                    {
                        "_id": key,
                        "holder": self.holder,
                        "token": token,
                        "expires_at": at + timedelta(seconds=self.ttl),
                    }
                )
                return token
            except DuplicateKeyError:
                pass
            except PyMongoError:
                # Perhaps written before the answer was lost: leave nothing behind to wait for.
                with contextlib.suppress(PyMongoError):
                    await self.sections.delete_one({"_id": key, "token": token})
                raise
            inside = await self.sections.find_one({"_id": key})
            if inside is None:
                continue  # left meanwhile
            if inside["holder"] == self.holder:
                # Nobody here is inside (this copy's lock is held): a leftover of ours.
                await self.sections.delete_one({"_id": key, "token": inside["token"]})
                continue
            if inside["expires_at"] + timedelta(seconds=self.skew) < self.clock():
                log.warning("section taken over", key=key, holder=inside["holder"])
                await self.sections.delete_one({"_id": key, "token": inside["token"]})
                continue
            await asyncio.sleep(wait * random.uniform(0.5, 1.5))  # noqa: S311
            wait = min(wait * 2, 0.1)
