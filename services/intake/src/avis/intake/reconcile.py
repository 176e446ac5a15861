"""`avis-intake-reconcile`: after intake's store or the key service is restored from a copy,
make sure no erasure is undone (avis.intake.service.Reconciliation; docs/operations.md, "Backup
and restore"). It reads intake's settings as the service does (AVIS_MONGO_URL, its database,
AVIS_KMS_URL and intake's key-service certificate) and prints what it did."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from avis.intake.erasure import Reconciled, Reconciliation
from avis.intake.settings import Settings
from avis.intake.store import Store
from avis.shared.case_keys import CaseKeys
from avis.shared.mongo import connect


async def reconcile(settings: Settings) -> Reconciled:
    """Reconcile intake's database (as `settings` name it) with the key service."""
    keys = CaseKeys.from_settings(settings)
    if keys.keys is None:
        raise SystemExit("AVIS_KMS_URL is empty: there is no key service to reconcile with")
    client = connect(settings.mongo_url, timeout_ms=10_000)
    try:
        return await Reconciliation(Store(client[settings.database]), keys).run()
    finally:
        await client.close()
        keys.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Reconcile, then print the cases it erased again and those whose key it destroyed again."""
    parser = argparse.ArgumentParser(
        prog="avis-intake-reconcile", description=__doc__.split("\n\n")[0]
    )
    parser.parse_args(argv)
    settings = Settings()
    done = asyncio.run(reconcile(settings))
    print(f"{settings.database}: {done.cases} cases read")
    for case_id in done.erased:
        print(f"erased after the copy, its skeleton made again: {case_id}")
    for case_id in done.destroyed:
        print(f"erased, its key back in the key service and destroyed again: {case_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
