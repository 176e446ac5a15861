"""The one trail writer of intake, review and reports: people only, the coordinator's reason
sealed and never folded, appends under the trail's lock unless the caller holds the case's."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from avis.shared.access_log import TrailWriter, trail_aad
from avis.shared.audit import AuditEntry, AuditRecord, chained
from avis.shared.mongo import AggregateLocks
from avis.shared.sealing import Keyring, generate_key
from avis.shared.security import Principal

CASE = "6f1e1b7a-3a52-4d0e-9b1a-2c3d4e5f6a70"
WINDOW = timedelta(minutes=15)


class Locks(AggregateLocks):
    """The process's locks, saying which are held."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        async with super().hold(key):
            self.held.add(key)
            try:
                yield
            finally:
                self.held.discard(key)


class Trail:
    """An in-memory append: what it was given, and whether the trail's lock was held."""

    def __init__(self, locks: Locks) -> None:
        self.locks = locks
        self.appended: list[tuple[AuditRecord, timedelta | None, bool]] = []

    async def append(
        self, case_id: str, record: AuditRecord, at: datetime, fold: timedelta | None
    ) -> AuditEntry | None:
        self.appended.append((record, fold, f"trail:{case_id}" in self.locks.held))
        return chained(case_id, len(self.appended), "0" * 64, record, at)


def writer() -> tuple[TrailWriter, Trail, Keyring]:
    locks, keyring = Locks(), Keyring.parse(f"k1:{generate_key()}")
    trail = Trail(locks)
    fold = {"case.read": WINDOW}.get
    return TrailWriter(append=trail.append, locks=locks, keyring=keyring, fold=fold), trail, keyring


async def test_a_read_folds_and_a_read_for_a_reason_does_not() -> None:
    w, trail, keyring = writer()
    coordinator = Principal(sub="c-1", role="coordinator")
    await w.record(coordinator, CASE, "case.read")
    await w.record(coordinator, CASE, "case.read", reason="checking the records")
    (plain, _, _), (given, fold, held) = trail.appended
    assert trail.appended[0][1] == WINDOW and fold is None and held
    assert plain.reason is None and given.reason is not None
    assert keyring.open(given.reason, trail_aad(CASE)) == b"checking the records"
    assert given.purpose == "break-glass"


async def test_machines_leave_no_entry_and_a_locked_caller_takes_no_lock() -> None:
    w, trail, _ = writer()
    await w.record(Principal(sub="svc", role="service"), CASE, "case.read")
    assert trail.appended == []
    await w.record(Principal(sub="p-1", role="patient"), CASE, "case.submit", locked=True)
    await w.record(Principal(sub="p-2", role="patient"), CASE, "case.read", refused=404)
    (written, _, held_then), (refused, _, held_now) = trail.appended
    assert not held_then and held_now
    assert (written.outcome, refused.outcome) == ("allowed", "refused")
