"""The HTTP door side by side: intake served on asyncio's own loop with h11, and on uvloop with
httptools (`AVIS_HTTP_STACK`), in alternating rounds so that neither gains from going first or
from a warmer machine.

Each round starts intake alone as a process, over the test broker and store, with a database of
its own, and lets C clients work for S seconds as patients do: each creates a draft (a JSON
write) and reads it back twice (a read of health data, with its access-trail entry). It prints,
per stack and round, the requests answered per second, the intake process's CPU milliseconds per
request, and p50/p99 latency; then the median of each over the rounds, and uvloop's ratio to
asyncio measured in the same run. Every request must succeed: a failed one is counted and shown.
Writes bench/results/door-<time>.json.

Usage: make bench [BENCH_ARGS=--quick]   (or: python bench/bench_door.py [--quick])
       --rounds N    rounds of each stack (default 3, quick 2)
       --seconds S   length of a round (default 15, quick 8)
       --clients C   clients at once (default 16)
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journey import write_results
from journey import bench_env, pct

from tests.support.samples import case_body
from tests.support.stack import ServiceStack, cpu_seconds

STACKS = ("asyncio", "uvloop")
STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def env(stack: str) -> dict[str, str]:
    return bench_env() | {"AVIS_OTEL_EXPORTER": "none", "AVIS_HTTP_STACK": stack}


async def round_of(stack: str, index: int, seconds: float, clients: int) -> dict[str, Any]:
    """One round: intake on `stack`, C clients for S seconds; its figures."""
    latencies: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="avis-door-") as logs:
        services = ServiceStack(
            env(stack),
            Path(logs),
            {"intake": f"bench_door_{STAMP}_{stack}_{index}"},
            instances={"intake": 1},
            services=("intake",),
        )
        async with services.running():
            (member,) = services.of("intake")
            assert member.process is not None

            async def client(n: int, until: float) -> None:
                async with services.client("intake", f"door-{n}", "patient") as http:
                    while time.monotonic() < until:
                        for call in ("create", "read", "read"):
                            began = time.monotonic()
                            try:
                                if call == "create":
                                    answer = await http.post("/v1/cases", json=case_body())
                                    case_id = answer.json().get("case_id")
                                else:
                                    answer = await http.get(f"/v1/cases/{case_id}")
                            except httpx.HTTPError as exc:
                                failures.append(f"{call}: {type(exc).__name__}")
                                break
                            if answer.status_code >= 400:
                                failures.append(f"{call}: {answer.status_code}")
                                break
                            latencies.append(time.monotonic() - began)

            # A short warm-up (connections, first imports), then the measured window.
            await asyncio.gather(*(client(n, time.monotonic() + 2.0) for n in range(clients)))
            latencies.clear()
            cpu_before, began = cpu_seconds(member.process.pid), time.monotonic()
            until = began + seconds
            await asyncio.gather(*(client(n, until) for n in range(clients)))
            wall = time.monotonic() - began
            cpu = cpu_seconds(member.process.pid) - cpu_before
    n = len(latencies)
    return {
        "stack": stack,
        "round": index,
        "requests": n,
        "failures": failures,
        "per_second": round(n / wall, 1),
        "cpu_ms_per_request": round(1000 * cpu / n, 2) if n else None,
        "p50_ms": round(1000 * pct(latencies, 50), 1) if n else None,
        "p99_ms": round(1000 * pct(latencies, 99), 1) if n else None,
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The median of each figure over a stack's rounds."""
    out = {}
    for stack in STACKS:
        mine = [r for r in rounds if r["stack"] == stack]
        out[stack] = {
            key: round(statistics.median(r[key] for r in mine), 2)
            for key in ("per_second", "cpu_ms_per_request", "p50_ms", "p99_ms")
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (8.0 if args.quick else 15.0)
    print(f"door: intake, {args.clients} clients, {seconds:g} s a round, {rounds} rounds a stack")
    results = []
    for index in range(rounds):
        # Alternate, and swap who goes first each round.
        order = STACKS if index % 2 == 0 else tuple(reversed(STACKS))
        for stack in order:
            figures = await round_of(stack, index, seconds, args.clients)
            results.append(figures)
            failed = f"  FAILED {len(figures['failures'])}" if figures["failures"] else ""
            print(
                f"  {stack:8} round {index + 1}: {figures['per_second']:7.1f} req/s  "
                f"{figures['cpu_ms_per_request']} CPU ms/req  p50 {figures['p50_ms']} ms  "
                f"p99 {figures['p99_ms']} ms{failed}"
            )
    medians = summary(results)
    base, fast = medians["asyncio"], medians["uvloop"]
    ratios = {
        "per_second": round(fast["per_second"] / base["per_second"], 2),
        "cpu_ms_per_request": round(fast["cpu_ms_per_request"] / base["cpu_ms_per_request"], 2),
    }
    print("  medians:")
    for stack, figures in medians.items():
        print(f"    {stack:8} {figures}")
    print(
        f"  uvloop+httptools / asyncio+h11: {ratios['per_second']} x the requests per second, "
        f"{ratios['cpu_ms_per_request']} x the CPU per request"
    )
    failures = sum(len(r["failures"]) for r in results)
    if failures:
        print(f"  {failures} requests failed: {results[0]['failures'][:3]}")
    write_results(
        "door",
        STAMP,
        {
            "clients": args.clients,
            "seconds": seconds,
            "rounds": results,
            "medians": medians,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
