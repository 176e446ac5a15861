"""What tracing costs: the journey's burst with tracing off, then on (every span kept, exported to
a local Zipkin), in alternating rounds so that neither side gains from going first or from a
quieter minute.

Each round starts the four services afresh (`journey.JourneyStack`, databases of their own),
files a few warm-up cases, then a burst of N cases (the journey's driver: filers, reviewers,
the partner's webhook, the patient's emails) and waits until each is through. Rounds go in pairs,
off-on, then on-off, and so on. Zipkin runs for the whole bench (idle in the off rounds), so both
sides share the machine with the same processes, and takes 20,000 made-up spans before the
first round, so that the first on round pays less of its JVM's warm-up.

Per round it prints cases/s to report-ready, the services' CPU ms per case (the four summed) and
Zipkin's, the spans each case cost (`avis_spans_ended_total`, summed over the services) and, in
the on rounds, what became of them: exported, failed, not exported (after a wait for the last
batch: still held, or dropped) and dropped (the SDK's "Queue full" warnings in the services'
logs: the batch processor's queue was full). Then every case of an on round is looked up in
Zipkin by the trace id its events carried: it is whole when its events carried one trace id
and Zipkin holds spans of all four services under it. At the end: the on/off ratio of cases/s
per pair, their median, and the median CPU per case of each side. Writes
bench/results/tracing-<time>.json.

Usage: make bench [BENCH_ARGS=--quick]   (or: python bench/bench_tracing.py [--quick])
       --pairs P     pairs of rounds (default 3; at least 3 for a verdict)
       --cases N     cases per burst (default 40, quick 15)
       --budget S    seconds for the whole bench (default 540, quick 360): no pair starts that
                     the time left cannot hold
       --profile     py-spy on notify during each burst: the share of its samples in the span
                     exporter's batches and in OpenTelemetry's own frames
"""

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journey import RESULTS, write_results
from journey import ZIPKIN_PORT, JourneyStack, Variant, load_average, zipkin
from pyspy import Profiler

from tests.support.stack import SERVICES, ServiceStack

STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
WHOLE = {f"avis-{s}" for s in SERVICES}


async def span_counts(stack: ServiceStack) -> dict[str, float]:
    """Spans ended, exported and refused by the exporter so far, summed over the services."""
    counts = {"ended": 0.0, "exported": 0.0, "failed": 0.0}
    async with httpx.AsyncClient(timeout=10.0) as http:
        for member in stack.members:
            text = (await http.get(f"{member.url}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "avis_spans_ended_total":
                        counts["ended"] += sample.value
                    elif sample.name == "avis_spans_exported_total":
                        key = "exported" if sample.labels["outcome"] == "success" else "failed"
                        counts[key] += sample.value
    return counts


async def flushed(stack: ServiceStack, wait_s: float) -> dict[str, float]:
    """The span counts once every span ended has been exported, or after `wait_s` (the batch
    processor sends what it holds at least every AVIS_OTEL_DELAY_MS)."""
    deadline = time.monotonic() + wait_s
    while True:
        counts = await span_counts(stack)
        if counts["ended"] <= counts["exported"] + counts["failed"] or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(1.0)


def queue_full(logs: Path) -> int:
    """Spans the batch processors dropped: the SDK logs a warning for each ("Queue full")."""
    return sum(f.read_text(errors="replace").count("Queue full") for f in logs.glob("*.log"))


async def whole_traces(js: JourneyStack, case_ids: list[str], wait_s: float) -> dict[str, Any]:
    """Each case's trace in Zipkin: whole when its events carried one trace id and Zipkin holds
    spans of all four services under it. Waits up to `wait_s` for the exporters' batches."""
    pending = {c: js.probe.traces.get(c, set()) for c in case_ids}
    split = [c for c, ids in pending.items() if len(ids) != 1]
    todo = {c: next(iter(ids)) for c, ids in pending.items() if len(ids) == 1}
    spans: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ZIPKIN_PORT}", timeout=10) as http:
        while todo:
            for case_id, trace_id in list(todo.items()):
                answer = await http.get(f"/api/v2/trace/{trace_id}")
                found = answer.json() if answer.status_code == 200 else []
                services = {s.get("localEndpoint", {}).get("serviceName", "") for s in found}
                missing[case_id] = sorted(WHOLE - services)
                spans[case_id] = len(found)
                if not missing[case_id]:
                    del todo[case_id]
            if not todo or time.monotonic() > deadline:
                break
            await asyncio.sleep(2.0)
    return {
        "cases": len(case_ids),
        "whole": len(case_ids) - len(split) - len(todo),
        "several_trace_ids": len(split),
        "broken": {c: missing.get(c) for c in list(todo)[:5]},
        "broken_count": len(todo),
        "zipkin_spans_per_case": round(statistics.mean(spans.values()), 1) if spans else 0,
        "zipkin_spans_min_max": [min(spans.values()), max(spans.values())] if spans else [],
    }


def otel_share(path: Path) -> dict[str, float]:
    """Of py-spy's samples (idle threads and the event loop's wait included: py-spy cannot tell
    them apart here), the share in the batch processor's exports (encoding and sending; not its
    wait between batches) and the share whose innermost frame is OpenTelemetry's own code (making
    and ending spans, in every thread)."""
    total = export = otel = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        if "BatchProcessor._export" in stack:
            export += int(count)
        if "opentelemetry/" in stack.rsplit(";", 1)[-1]:
            otel += int(count)
    return {
        "samples": total,
        "exporter_pct": round(100 * export / max(total, 1), 1),
        "opentelemetry_own_pct": round(100 * otel / max(total, 1), 1),
    }


def warm_zipkin(batches: int = 40, size: int = 500) -> float:
    """Post made-up spans to Zipkin, so its JVM has begun compiling its intake path before the
    first on round (without them that round cost Zipkin 14 to 23 CPU ms a case, the later ones
    2 to 13); the seconds it took."""
    began = time.monotonic()
    now_us = int(time.time() * 1e6)
    with httpx.Client(base_url=f"http://127.0.0.1:{ZIPKIN_PORT}", timeout=30) as http:
        for b in range(batches):
            spans = [
                {
                    "traceId": f"{b + 1:016x}{i + 1:016x}",
                    "id": f"{i + 1:016x}",
                    "name": "warm-up",
                    "timestamp": now_us,
                    "duration": 1000,
                    "localEndpoint": {"serviceName": "bench-warm-up"},
                    "tags": {"n": str(i)},
                }
                for i in range(size)
            ]
            http.post("/api/v2/spans", json=spans).raise_for_status()
    return time.monotonic() - began


async def one_round(
    tracing: bool,
    index: int,
    n: int,
    warmup: int,
    deadline_s: float,
    flush_s: float,
    profile: str = "",
) -> dict[str, Any]:
    """Fresh services, `warmup` cases, then the measured burst of `n`; the round's figures.
    With `profile` (a service), py-spy samples its first copy during the burst."""
    variant = Variant(f"tracing-{'on' if tracing else 'off'}", tracing=tracing)
    started = time.monotonic()
    sampled: dict[str, Any] = {}
    async with JourneyStack(variant).running() as js:
        assert js.stack is not None
        await js.round(warmup, 120.0)
        before_ids = set(js.cases)
        spans_before = await span_counts(js.stack)
        profiler = None
        if profile:
            member = js.stack.of(profile)[0]
            assert member.process is not None
            path = RESULTS / f"tracing-profile-{profile}-{variant.name}-{index}-{STAMP}.txt"
            profiler = Profiler(member.process.pid, path)
        figures = await js.round(n, deadline_s)
        if profiler is not None:
            sampled = profiler.stop(top=10) | otel_share(profiler.path)
        spans_after = await span_counts(js.stack)
        case_ids = [c for c in js.cases if c not in before_ids]
        spans_flushed = await flushed(js.stack, flush_s if tracing else 0.0)
        traces = await whole_traces(js, case_ids, flush_s) if tracing else None
        dropped = queue_full(js.stack.logs)
    procs = figures["processes"]
    services_cpu = sum(v["cpu_s"] for k, v in procs.items() if k.split("-")[0] in SERVICES)
    through = figures["report_ready"] or 1
    ended = spans_after["ended"] - spans_before["ended"]
    return {
        "tracing": "on" if tracing else "off",
        "round": index,
        "cases": n,
        "report_ready": figures["report_ready"],
        "timed_out": figures["timed_out"],
        "errors": figures["error_count"],
        "cases_per_s": figures["cases_per_s_report_ready"],
        "cases_per_s_notified": figures["cases_per_s_notified"],
        "p99_submit_report_ready_ms": figures["stages"]["submit>report-ready"]["p99_ms"],
        "cpu_ms_per_case": {
            "services": round(1000 * services_cpu / through, 1),
            **{k: round(1000 * v["cpu_s"] / through, 1) for k, v in procs.items()},
        },
        "spans_per_case": round(ended / through, 1),
        # Since the services started (warm-up and the wait for Zipkin included): after the wait,
        # ended - exported - failed is what the processors dropped or still hold.
        "spans": {
            "ended": spans_flushed["ended"],
            "exported": spans_flushed["exported"],
            "failed": spans_flushed["failed"],
            "not_exported": spans_flushed["ended"]
            - spans_flushed["exported"]
            - spans_flushed["failed"],
            "dropped": dropped,
        }
        if tracing
        else {"ended": spans_flushed["ended"]},
        "traces": traces,
        "profile": sampled,
        "round_seconds": round(time.monotonic() - started, 1),
        "load_average": figures["load_average"],
    }


def line(r: dict[str, Any]) -> str:
    cpu = r["cpu_ms_per_case"]
    text = (
        f"  tracing {r['tracing']:3} round {r['round'] + 1}: {r['cases_per_s']:6.3f} cases/s  "
        f"services {cpu['services']} CPU ms/case (zipkin {cpu.get('zipkin', '-')})  "
        f"{r['spans_per_case']} spans/case  {r['report_ready']}/{r['cases']} through  "
        f"load {r['load_average']['after'][0]}"
    )
    if r["profile"]:
        p = r["profile"]
        text += (
            f"\n      py-spy on {p.get('file')}: {p.get('samples')} samples, "
            f"{p.get('exporter_pct')}% in the span exporter's batches, "
            f"{p.get('opentelemetry_own_pct')}% in OpenTelemetry's own frames"
        )
    if r["timed_out"] or r["errors"]:
        text += f"  TIMED OUT {r['timed_out']} errors {r['errors']}"
    if r["traces"] is not None:
        t, s = r["traces"], r["spans"]
        text += (
            f"\n      traces whole {t['whole']}/{t['cases']} ({t['zipkin_spans_per_case']} spans "
            f"each in Zipkin, {t['zipkin_spans_min_max']}), spans ended {s['ended']:.0f} "
            f"exported {s['exported']:.0f} "
            f"failed {s['failed']:.0f} not exported {s['not_exported']:.0f} "
            f"dropped {s['dropped']}"
        )
        if t["broken_count"] or t["several_trace_ids"]:
            text += f"\n      BROKEN {t['broken_count']} {t['broken']}"
            text += f" split {t['several_trace_ids']}"
    return text


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per pair, on/off cases/s and CPU per case; their medians."""
    pairs = []
    for index in sorted({r["round"] for r in rounds}):
        mine = {r["tracing"]: r for r in rounds if r["round"] == index}
        if set(mine) != {"on", "off"}:
            continue
        on, off = mine["on"], mine["off"]
        pairs.append(
            {
                "pair": index + 1,
                "order": "off-on" if index % 2 == 0 else "on-off",
                "cases_per_s_on_off": round(on["cases_per_s"] / max(off["cases_per_s"], 1e-9), 3),
                "cpu_on_off": round(
                    on["cpu_ms_per_case"]["services"]
                    / max(off["cpu_ms_per_case"]["services"], 1e-9),
                    3,
                ),
            }
        )
    side = {
        t: {
            "cases_per_s": statistics.median(r["cases_per_s"] for r in rounds if r["tracing"] == t),
            "services_cpu_ms_per_case": statistics.median(
                r["cpu_ms_per_case"]["services"] for r in rounds if r["tracing"] == t
            ),
        }
        for t in ("off", "on")
        if any(r["tracing"] == t for r in rounds)
    }
    on_rounds = [r for r in rounds if r["tracing"] == "on"]
    return {
        "pairs": pairs,
        "median_cases_per_s_on_off": statistics.median(p["cases_per_s_on_off"] for p in pairs)
        if pairs
        else None,
        "median_cpu_on_off": statistics.median(p["cpu_on_off"] for p in pairs) if pairs else None,
        "sides": side,
        "traces_whole": sum(r["traces"]["whole"] for r in on_rounds),
        "traces_checked": sum(r["traces"]["cases"] for r in on_rounds),
        "spans_not_exported": sum(r["spans"]["not_exported"] for r in on_rounds),
        "spans_dropped": sum(r["spans"]["dropped"] for r in on_rounds),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--cases", type=int, default=0)
    parser.add_argument("--budget", type=float, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument("--profile", action="store_true", help="py-spy on notify in each round")
    # `make bench` hands every bench the same arguments: the others' are not ours.
    args, _ = parser.parse_known_args()
    n = args.cases or (15 if args.quick else 40)
    warmup = 3 if args.quick else 5
    budget = args.budget or (360.0 if args.quick else 540.0)
    began = time.monotonic()
    print(
        f"tracing: {args.pairs} pairs of rounds (off/on alternating), {n} cases a burst after "
        f"{warmup} warm-up, budget {budget:.0f} s, load {load_average()}",
        flush=True,
    )
    rounds: list[dict[str, Any]] = []
    skipped = 0
    longest = 0.0
    with zipkin():
        print(f"  Zipkin warmed up in {warm_zipkin():.1f} s", flush=True)
        for index in range(args.pairs):
            left = budget - (time.monotonic() - began)
            # A pair takes two rounds; the first pair's rounds say how long one is.
            if index and left < 2 * longest:
                skipped = args.pairs - index
                print(f"  {skipped} pairs skipped: {left:.0f} s left of the budget", flush=True)
                break
            order = (False, True) if index % 2 == 0 else (True, False)
            for tracing in order:
                deadline = max(60.0, min(30.0 + 4.0 * n, left / 2 - 60.0))
                figures = await one_round(
                    tracing, index, n, warmup, deadline, 20.0, "notify" if args.profile else ""
                )
                longest = max(longest, figures["round_seconds"])
                rounds.append(figures)
                print(line(figures), flush=True)
    result = summary(rounds)
    for p in result["pairs"]:
        print(
            f"  pair {p['pair']} ({p['order']}): on/off {p['cases_per_s_on_off']} x the cases/s, "
            f"{p['cpu_on_off']} x the services' CPU per case"
        )
    print(
        f"  median on/off: {result['median_cases_per_s_on_off']} x the cases/s, "
        f"{result['median_cpu_on_off']} x the CPU per case over {len(result['pairs'])} pairs; "
        f"traces whole {result['traces_whole']}/{result['traces_checked']}, spans not exported "
        f"{result['spans_not_exported']:.0f}, dropped {result['spans_dropped']}; "
        f"load {load_average()}, {time.monotonic() - began:.0f} s"
    )
    write_results(
        "tracing",
        STAMP,
        {
            "label": args.label,
            "cases": n,
            "warmup": warmup,
            "skipped_pairs": skipped,
            "rounds": rounds,
            "summary": result,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
