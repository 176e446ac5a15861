"""The key service's cost per case, with connections kept open and reused (`ClientPool`, as the
services run) against a connection per operation (a pool that keeps none: each operation opens
its own, its TLS handshake included, as before connections were kept), in alternating rounds
whose order swaps each round.

Against the bench stack's key server (PyKMIP, deploy/kms, started by deploy/local/test.sh), a
round does each case's key work as the journey does: intake makes the case's key (create,
activate, get), then review, reports and notify each read it once (their caches emptied first:
a case is read once by each). Each of the four is one `KmipKeyService` with its own certificate,
for the whole round; C cases are worked at once. It prints, per mode and round, key operations
per second (4 a case), the CPU milliseconds per case of the bench process (the four clients)
and of the key server's process, and the connections opened; then the medians and the kept
mode's ratios to the fresh one, measured in the same run. Writes bench/results/keys-<time>.json.

Usage: make bench BENCH_ARGS="bench/bench_keys.py [--quick]"
       --rounds N   rounds of each mode (default 3, quick 2)
       --cases N    cases a round (default 120, quick 30)
       --at-once C  cases worked at once (default 4)
"""

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journey import write_results
from journey import STATE, load_average

from avis.shared.keys import KmipKeyService
from tests.support import kms
from tests.support.stack import cpu_seconds

# kept: the services' pool (4 connections kept at most); fresh: none kept.
MODES = {"fresh": 0, "kept": 4}
READERS = ("review", "reports", "notify")
STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def key_server_pid() -> int | None:
    """The key server's pid, as deploy/kms/install.sh recorded it (None if it is not running)."""
    try:
        pid = int((STATE / "kms.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def round_of(mode: str, index: int, cases: int, at_once: int) -> dict[str, Any]:
    """One round: `cases` cases' key work, C at once, with `mode`'s connections."""
    services = {
        who: KmipKeyService(kms.endpoint(who), connections=MODES[mode])
        for who in ("intake", *READERS)
    }
    gate = asyncio.Semaphore(at_once)

    async def one_case() -> None:
        async with gate:
            key_id = await services["intake"].create_key(f"bench-{uuid.uuid4().hex}")
            for who in READERS:
                services[who].forget(key_id)
                assert len(await services[who].key(key_id)) == 32

    server = key_server_pid()
    server_before = cpu_seconds(server) if server else 0.0
    cpu_before, began = own_cpu(), time.perf_counter()
    await asyncio.gather(*(one_case() for _ in range(cases)))
    wall = time.perf_counter() - began
    cpu = own_cpu() - cpu_before
    server_cpu = cpu_seconds(server) - server_before if server else None
    opened = sum(s.pool.opened for s in services.values())
    for s in services.values():
        s.close()
    return {
        "mode": mode,
        "round": index,
        "cases": cases,
        "seconds": round(wall, 2),
        "ops_per_s": round(4 * cases / wall, 1),
        "bench_cpu_ms_per_case": round(1000 * cpu / cases, 2),
        "server_cpu_ms_per_case": (
            round(1000 * server_cpu / cases, 2) if server_cpu is not None else None
        ),
        "connections": opened,
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The median of each figure over a mode's rounds."""
    keys = ("ops_per_s", "bench_cpu_ms_per_case", "server_cpu_ms_per_case", "connections")
    out = {}
    for mode in MODES:
        mine = [r for r in rounds if r["mode"] == mode]
        out[mode] = {
            k: round(statistics.median(r[k] for r in mine), 2)
            for k in keys
            if all(r[k] is not None for r in mine)
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--cases", type=int)
    parser.add_argument("--at-once", type=int, default=4)
    args, _ = parser.parse_known_args()  # make bench passes every file the same arguments
    rounds = args.rounds or (2 if args.quick else 3)
    cases = args.cases or (30 if args.quick else 120)
    if not os.environ.get("AVIS_KMS_URL"):
        print("keys: no key server on this stack (AVIS_KMS_URL is empty); nothing to measure")
        return
    server = key_server_pid()
    print(
        f"keys: {cases} cases a round ({4 * cases} key operations), {args.at_once} at once, "
        f"{rounds} rounds a mode; key server pid {server or 'unknown (its CPU not counted)'}"
    )
    for mode in MODES:  # a warm-up of each: imports, the server's first sessions
        await round_of(mode, -1, max(4, cases // 10), args.at_once)
    results = []
    for index in range(rounds):
        order = list(MODES) if index % 2 == 0 else list(reversed(MODES))
        for mode in order:
            figures = await round_of(mode, index, cases, args.at_once)
            results.append(figures)
            print(
                f"  {mode:5} round {index + 1}: {figures['ops_per_s']:7.1f} ops/s  "
                f"bench CPU {figures['bench_cpu_ms_per_case']} ms/case  "
                f"key server CPU {figures['server_cpu_ms_per_case']} ms/case  "
                f"{figures['connections']} connections  load {load_average()}"
            )
    medians = summary(results)
    fresh, kept = medians["fresh"], medians["kept"]
    ratios = {k: round(kept[k] / fresh[k], 2) for k in kept if fresh.get(k)}
    print("  medians:")
    for mode, figures in medians.items():
        print(f"    {mode:5} {figures}")
    print(f"  kept / fresh: {ratios}")
    write_results(
        "keys",
        STAMP,
        {
            "cases": cases,
            "at_once": args.at_once,
            "rounds": results,
            "medians": medians,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
