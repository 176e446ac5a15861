"""The same burst with one, two and three copies of review, then of notify (the others at one).

Each configuration runs on freshly started services and databases of its own (the journey's
driver and stage measurement, bench/journey.py): a warm-up of a few cases (every copy joins its
consumer groups; the first configuration's warm-up also measures the rate that sizes the
burst), then the burst of N cases, the same N for every configuration. Per configuration it
prints cases/s to report-ready, `case-submitted>review-assigned`, `report-ready>email` and
`report-ready>webhook` p50/p99, the CPU ms per case of each process, and how busy review's
matcher section was (`bench/launch.py --sections`: the time its decisions waited for it and held
it, summed over review's copies). One configuration with every service at one copy stands for
both "review 1" and "notify 1". Writes bench/results/copies-<time>.json.

Usage: make bench [BENCH_ARGS=--quick]   (or: python bench/bench_copies.py [--quick])
       --seconds S   the burst's target length at the measured rate (default 25, quick 8)
       --budget S    seconds for the whole run (default 360, quick 270): a configuration that
                     would pass it is skipped, and the table says so
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journey import RESULTS, SERVICES, deadline_for, machine, size_for
from journey import JourneyStack, Variant, load_average

# (label, copies); interleaved, so a run short of time loses a third copy before a second.
CONFIGS: list[tuple[str, dict[str, int]]] = [
    ("one copy each", {}),
    ("review x2", {"review": 2}),
    ("notify x2", {"notify": 2}),
    ("review x3", {"review": 3}),
    ("notify x3", {"notify": 3}),
]
LATENCY = ("case-submitted>review-assigned", "report-ready>email", "report-ready>webhook")
STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


def sections(js: JourneyStack, directory: Path) -> dict[str, dict[str, float]]:
    """What each review copy's launcher has written so far (sections, wait_s, held_s)."""
    assert js.stack is not None
    out = {}
    for member in js.stack.of("review"):
        assert member.process is not None
        path = directory / f"review-{member.process.pid}.json"
        try:
            out[member.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            out[member.name] = {"sections": 0, "wait_s": 0.0, "held_s": 0.0}
    return out


def section_figures(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], wall: float, n: int
) -> dict[str, Any]:
    """The matcher's section over one round: per copy and summed, per case and as a share of
    the round's wall time (the section admits one decision at a time across copies, so the sum
    held is at most the wall time, and cases/(seconds held) is the rate it caps review at)."""
    per_copy = {
        name: {k: round(after[name][k] - before.get(name, {}).get(k, 0.0), 3) for k in after[name]}
        for name in after
    }
    count = sum(c["sections"] for c in per_copy.values())
    held = sum(c["held_s"] for c in per_copy.values())
    wait = sum(c["wait_s"] for c in per_copy.values())
    return {
        "per_copy": per_copy,
        "sections": int(count),
        "sections_per_case": round(count / n, 2) if n else None,
        "held_ms_per_case": round(1000 * held / n, 1) if n else None,
        "wait_ms_per_section": round(1000 * wait / count, 1) if count else None,
        "held_ms_per_section": round(1000 * held / count, 1) if count else None,
        "busy_share": round(held / wall, 3) if wall else None,
        "ceiling_cases_per_s": round(n / held, 1) if held else None,
    }


def cpu_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per case of each process, and of the four services summed."""
    n = figures["report_ready"] or 1
    per = {k: round(1000 * p["cpu_s"] / n, 1) for k, p in figures["processes"].items()}
    services = sum(v for k, v in per.items() if k.split("-")[0] in SERVICES)
    infra = sum(v for k, v in per.items() if k in ("kafka", "ferretdb", "smtp", "kms"))
    return {"per_process": per, "services": round(services, 1), "all": round(services + infra, 1)}


async def configuration(
    label: str,
    copies: dict[str, int],
    sizes: tuple[int, int],
    burst: int | None,
    target: float,
    left: float,
) -> dict[str, Any]:
    """One configuration on fresh services: the warm-up, then the burst (sized from the warm-up's
    rate when `burst` is None; `sizes` = the warm-up's size, the burst's least). The burst is
    time-boxed to what `left` allows."""
    warm, floor = sizes
    with tempfile.TemporaryDirectory(prefix="avis-sections-") as directory:
        variant = Variant(label.replace(" ", "-"), copies=copies, sections=directory)
        print(f"[copies] {label}: starting the services", flush=True)
        started = time.monotonic()
        async with JourneyStack(variant).running() as js:
            ready = time.monotonic() - started
            warm_up = await js.round(warm, 120.0)
            rate = warm_up["cases_per_s_notified"] or 0.5
            n = burst or min(size_for(rate, target, floor), 400)
            deadline = max(30.0, min(deadline_for(n, rate), left - (time.monotonic() - started)))
            before, t0 = sections(js, Path(directory)), time.monotonic()
            figures = await js.round(n, deadline)
            wall = time.monotonic() - t0
            figures["matcher_section"] = section_figures(
                before, sections(js, Path(directory)), wall, figures["report_ready"]
            )
            stopping = time.monotonic()
    figures["overhead_s"] = {
        "start": round(ready, 1),
        "warm_up": warm_up["seconds"],
        "stop": round(time.monotonic() - stopping, 1),
    }
    figures["copies"] = copies
    figures["warm_up"] = {k: warm_up[k] for k in ("cases", "report_ready", "notified", "seconds")}
    figures["rate_warm_up"] = rate
    figures["cpu_ms_per_case"] = cpu_figures(figures)
    figures.pop("samples", None)  # the percentiles are kept; the raw samples are the journey's
    print(
        f"[copies] {label}: n={figures['cases']} ready={figures['report_ready']} "
        f"notified={figures['notified']} {figures['cases_per_s_report_ready']} cases/s in "
        f"{figures['seconds']} s (started in {ready:.0f} s, stopped in "
        f"{figures['overhead_s']['stop']:.0f} s), load {figures['load_average']['after']}",
        flush=True,
    )
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    target = args.seconds or (8.0 if quick else 25.0)
    budget = args.budget or (270.0 if quick else 360.0)
    warm, floor = (4, 12) if quick else (8, 25)
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "quick": quick}
    results["machine"] = machine()
    results["target_seconds"], results["budget_seconds"] = target, budget
    runs: dict[str, Any] = {}
    skipped: list[str] = []
    began = time.monotonic()
    longest, n = 0.0, None
    for label, copies in CONFIGS:
        left = budget - (time.monotonic() - began)
        if n is not None and longest > left:
            print(f"[copies] {label}: skipped, over the {budget:.0f} s budget", flush=True)
            skipped.append(label)
            continue
        t0 = time.monotonic()
        runs[label] = await configuration(label, copies, (warm, floor), n, target, left)
        n = n or runs[label]["cases"]
        longest = max(longest, time.monotonic() - t0)
    results["burst"] = n
    results["runs"] = runs
    results["skipped"] = skipped
    results["wall_seconds"] = round(time.monotonic() - began, 1)
    results["machine"]["load_average_end"] = load_average()
    return results


def rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(service scaled, copies, figures) in the table's order; the one-copy run in both."""
    runs = results["runs"]
    out = []
    for service in ("review", "notify"):
        for k in (1, 2, 3):
            label = "one copy each" if k == 1 else f"{service} x{k}"
            if label in runs:
                out.append((service, str(k), runs[label]))
    return out


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"machine: {m['nproc']} cpus, {m['cpu']}; load average at start {m['load_average']}, "
        f"at end {m.get('load_average_end')}",
        f"burst: {results['burst']} cases per configuration (8 filers; every reviewer answers at "
        f"once); {results['wall_seconds']} s in all",
    ]
    head = f"  {'copies of':9} {'n':>2} {'ready':>7} {'cases/s':>8}"
    for stage in ("cs>assigned", "rr>email", "rr>webhook"):
        head += f" {stage + ' p50/p99 ms':>24}"
    lines.append(head + f" {'load after':>18}")
    for service, k, f in rows(results):
        line = f"  {service:9} {k:>2} {f['report_ready']:>3}/{f['cases']:<3} "
        line += f"{f['cases_per_s_report_ready']:>8}"
        for stage in LATENCY:
            st = f["stages"][stage]
            line += f" {st['p50_ms']:>11.0f} / {st['p99_ms']:>10.0f}"
        timed_out = " timed out" if f["timed_out"] else ""
        lines.append(line + f" {f['load_average']['after']!s:>18}{timed_out}")
    lines.append(
        f"  {'copies of':9} {'n':>2} {'CPU ms/case: services':>22} {'all':>5} "
        f"{'per copy of the service':>26} {'matcher: held ms/case':>22} {'busy':>5} "
        f"{'wait ms/section':>15} {'ceiling/s':>9}"
    )
    for service, k, f in rows(results):
        cpu = f["cpu_ms_per_case"]
        copies = "/".join(
            f"{v:.0f}" for name, v in cpu["per_process"].items() if name.split("-")[0] == service
        )
        sec = f["matcher_section"]
        lines.append(
            f"  {service:9} {k:>2} {cpu['services']:>22} {cpu['all']:>5.0f} {copies:>26} "
            f"{sec['held_ms_per_case']!s:>22} {sec['busy_share']!s:>5} "
            f"{sec['wait_ms_per_section']!s:>15} {sec['ceiling_cases_per_s']!s:>9}"
        )
    if results["skipped"]:
        lines.append(f"  skipped (time budget): {', '.join(results['skipped'])}")
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a first look")
    parser.add_argument("--seconds", type=float, default=0, help="the burst's target length")
    parser.add_argument("--budget", type=float, default=0, help="seconds for the whole run")
    args, _ = parser.parse_known_args()
    results = asyncio.run(main(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(table(results))
    path = RESULTS / f"copies-{STAMP}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"figures: bench/results/{path.name}")


if __name__ == "__main__":
    cli()
