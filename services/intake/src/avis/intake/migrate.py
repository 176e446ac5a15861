"""Cases filed before per-case keys, brought under keys of their own: `avis-case-keys`.

A case stored before per-case keys has no `key_ref`: its values are in clear (from versions
before sealing) or sealed under intake's keyring (AVIS_SEALING_KEYS), and erasing it destroys
no key. This migration gives each such case its key in the key service, records it on the case,
seals the case's content, its records' details and every piece of their bytes under it (bound
as intake binds them), then publishes `avis.case.keyed.v1` through the case's outbox: review,
reports and notify seal their own copies of the case under the same key when they read it.

It is run once by an operator beside the running services, as one more copy of intake (its case
locks are held among all the copies, its outbox is published by its own relay, or adopted by a
copy of intake once this one is gone). It can be stopped at any point and run again:

- the key is made under the case's name in the key service, and a rerun finds it there before
  making one (`CaseKeys.made`): a stop between making and recording it leaves no second key;
- a value already under the case's key is left as it is; a case keyed but not all sealed yet
  carries `keying` until its last write, which also carries its event, so a rerun finishes it;
- a checkpoint (`migrations`, `_id` `case-keys`) names the last case finished, in `_id` order,
  and a rerun starts after it.

Its cost: one read of the `cases` collection (its ids and key fields only; FerretDB reads the
whole collection for the range and the order), then per case to migrate a find and a make in
the key service (the key server looks through its keys for the name), a few writes by `_id`
for the case and each record, one read and one write per piece of a record's bytes, and one
write of the checkpoint per case.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from avis.intake import rules
from avis.intake.main import parts
from avis.intake.service import details_of, opened
from avis.intake.settings import Settings
from avis.intake.store import Case, Store
from avis.shared.case_keys import CaseKeys
from avis.shared.clock import now
from avis.shared.emit import Emitter
from avis.shared.events import CaseKeyed
from avis.shared.mongo import AggregateLocks
from avis.shared.outbox import HINTS

MIGRATION = "case-keys"
log = structlog.get_logger("avis.intake.migrate")


class NoKeyService(RuntimeError):
    """The migration needs the key service (AVIS_KMS_URL) to make the cases' keys."""


@dataclass
class Progress:
    """What one run did: cases keyed, cases that needed nothing, and whether it finished."""

    keyed: int = 0
    skipped: int = 0
    finished: bool = False


class CaseKeying:
    """The migration's use case: each case without its own key brought under one."""

    def __init__(
        self, *, store: Store, locks: AggregateLocks, emitter: Emitter, keys: CaseKeys
    ) -> None:
        if keys.keys is None:
            raise NoKeyService(
                "AVIS_KMS_URL is empty: the cases' keys are made in the key service; name it"
            )
        self.store = store
        self.locks = locks
        self.emitter = emitter
        self.keys = keys

    async def run(self, *, limit: int | None = None) -> Progress:
        """Walk the cases after the checkpoint, in `_id` order, keying those that need it;
        stop after `limit` cases keyed (None: all)."""
        checkpoint = await self.store.checkpoint(MIGRATION)
        progress = Progress()
        for row in await self.store.case_keys_after(checkpoint.after):
            if limit is not None and progress.keyed >= limit:
                return progress
            needs = rules.needs_keying(
                key_ref=row.key_ref, keying=row.keying, erased=row.erased_at is not None
            )
            if needs and await self.key(row.id):
                progress.keyed += 1
                checkpoint.keyed += 1
            else:
                progress.skipped += 1
                checkpoint.skipped += 1
            checkpoint.after = row.id
            await self.store.save_checkpoint(checkpoint)
        checkpoint.finished_at = now()
        await self.store.save_checkpoint(checkpoint)
        progress.finished = True
        return progress

    async def key(self, case_id: str) -> bool:
        """Bring one case under its own key (under its lock); False if it needed nothing."""
        async with self.locks.hold(self.emitter.lock(case_id)):
            case = await self.store.case(case_id)
            if case is None or not rules.needs_keying(
                key_ref=case.key_ref, keying=case.keying, erased=case.erased_at is not None
            ):
                return False
            key_ref = case.key_ref
            if key_ref is None:
                key_ref = await self.keys.made(case_id)
                assert key_ref is not None  # a key service is required (__init__)
                await self.store.begin_keying(case_id, key_ref)
            await self._seal(case, key_ref)
            at = now()
            keyed = CaseKeyed(case_id=case_id, key_ref=key_ref, keyed_at=at)
            event = self.emitter.event("intake.case.key", keyed, trace=case.traceparent)
            await self.emitter.write(
                lambda events: self.store.keyed(case_id, events=events), [event], aggregate=case_id
            )
        log.info("case keyed", case_id=case_id)
        return True

    async def _seal(self, case: Case, key_ref: str) -> None:
        """Seal what the case and its records hold under the case key where it is not yet."""
        ring = await self.keys.ring(key_ref)
        if case.content is None or case.content.kid != ring.primary_kid:
            content = ring.seal_json(opened(ring, case), rules.case_aad(case.id))
            await self.store.seal_content(case.id, content)
        for record in await self.store.records_of(case):
            if record.details is None or record.details.kid != ring.primary_kid:
                details = ring.seal_json(details_of(ring, record), rules.record_aad(record.id))
                await self.store.seal_details(record.id, details)
            await self.store.reseal_pieces(record, ring)


async def migrate(settings: Settings, *, limit: int | None = None, wait: float = 60.0) -> Progress:
    """Run the migration as one more copy of intake: connected as intake is, its events
    published by its own relay before it stops (else by a copy of intake once it is gone)."""
    made = parts(settings)
    runtime = made.runtime
    keying = CaseKeying(store=made.store, locks=runtime.locks, emitter=made.emitter, keys=made.keys)
    await runtime.start()
    try:
        await _until(lambda: runtime.store_initialised and runtime.kafka_started, wait)
        progress = await keying.run(limit=limit)
        hints = runtime.db[HINTS]

        async def published() -> bool:
            return await hints.find_one({"writer": runtime.holder}) is None

        await _until(published, wait)
        return progress
    finally:
        await runtime.stop()


async def _until(done: Callable[[], bool | Awaitable[bool]], seconds: float) -> None:
    """Wait until `done()` (sync or async) is true, at most `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = done()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.2)


def main(argv: Sequence[str] | None = None) -> int:
    """Bring every case filed before per-case keys under a key of its own (resumable)."""
    parser = argparse.ArgumentParser(prog="avis-case-keys", description=main.__doc__)
    parser.add_argument(
        "--limit", type=int, default=None, help="stop after keying this many (a rerun goes on)"
    )
    args = parser.parse_args(argv)
    try:
        progress = asyncio.run(migrate(Settings(), limit=args.limit))
    except (NoKeyService, ValueError) as exc:  # no key service, or a setting refused
        print(f"avis-case-keys: {exc}", file=sys.stderr)
        return 2
    state = "finished" if progress.finished else "stopped (run it again to go on)"
    print(f"cases keyed: {progress.keyed}, needing nothing: {progress.skipped}; {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
