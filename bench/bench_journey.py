"""The whole journey under a burst, against the limit of this machine, in one run.

  journey   N cases filed over HTTP, every reviewer played (accept + answer at once): cases/s
            to report-ready and to the last notification, p50/p95/p99/max of each stage, CPU
            seconds and peak memory of every process (services, broker, store, SMTP sink)
  bare      the same Kafka hops and store writes with the raw clients (bench/bare_pipeline.py):
            the journey's throughput as a ratio of it
  layers    the journey again without the access trail and with a null keyring (bench-only
            launcher flags), without the key server (every case under the services' keyring,
            as before per-case keys), over Kafka without SASL (a listener only the bench's
            broker opens), with tracing on (to a local Zipkin), with the relay batch and
            consumer workers tuned: a ratio each
  sizes     three sizes of N derived from the first run's rate, each time-boxed
(Copies of a service are bench/bench_copies.py's: one, two and three of review, then of notify.)
It prints a table and the change against bench/baseline.json, writes bench/results/
journey-<time>.json and a chart (journey-<time>.png, also journey-latest.png).

Usage: make bench [BENCH_ARGS=--quick]   (or: python bench/bench_journey.py --quick)
       --profile   one more round after the main one, with py-spy on every service (collapsed
                   stacks in results): the busiest's top frames, each one's CPU per case by layer
       --write-baseline   make this run the committed baseline
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from journey import (
    BOOTSTRAP,
    MONGO_URL,
    PLAINTEXT_BOOTSTRAP,
    ROOT,
    STAGES,
    TUNED,
    JourneyStack,
    Variant,
    infra_pids,
    load_average,
    zipkin,
    zipkin_span_count,
)
from pyspy import Profiler

from tests.support.stack import cpu_seconds

RESULTS = ROOT / "bench/results"
BASELINE = ROOT / "bench/baseline.json"
# The services whose usage is summed as "the platform" (copies included).
SERVICES = ("intake", "review", "reports", "notify")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }


def write_results(kind: str, stamp: str, figures: dict[str, Any]) -> Path:
    """Write a bench's figures to bench/results/<kind>-<stamp>.json, after the machine and its
    load average now, and say where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{kind}-{stamp}.json"
    kept = {"machine": machine(), "load_average": load_average(), **figures}
    out.write_text(json.dumps(kept, indent=2) + "\n")
    print(f"  written to {out}")
    return out


def size_for(rate: float, seconds: float, floor: int) -> int:
    return max(floor, math.ceil(rate * seconds))


def deadline_for(n: int, rate: float, slack: float = 2.0) -> float:
    """The time box of a round: `slack` times what the measured rate predicts, plus start-up."""
    return slack * n / max(rate, 0.05) + 30.0


def busiest(figures: dict[str, Any]) -> str:
    procs = figures["processes"]
    return max((s for s in procs if s.split("-")[0] in SERVICES), key=lambda s: procs[s]["cpu_s"])


async def run_variant(
    variant: Variant, rounds: list[tuple[str, int, float]]
) -> dict[str, dict[str, Any]]:
    """Start the services as `variant` says and run each (label, n, deadline) round on them."""
    out: dict[str, dict[str, Any]] = {}
    print(f"[journey] {variant.name}: starting the services", flush=True)
    async with JourneyStack(variant).running() as js:
        for label, n, deadline in rounds:
            figures = await js.round(n, deadline)
            if variant.tracing:
                figures["zipkin_services"] = zipkin_span_count()
            out[label] = figures
            report(f"{variant.name}/{label}", figures)
    return out


async def bare(n: int) -> dict[str, Any]:
    """The bare pipeline of the same work, when it is on this branch."""
    try:
        import bare_pipeline  # type: ignore[import-not-found]
    except ImportError:
        return {"missing": "bench/bare_pipeline.py is not on this branch yet"}
    started_load = load_average()
    infra_before = {name: cpu_seconds(pid) for name, pid in infra_pids().items()}
    figures: dict[str, Any] = await bare_pipeline.run(n, bootstrap=BOOTSTRAP, mongo_url=MONGO_URL)
    figures["load_average"] = {"before": started_load, "after": load_average()}
    # The broker's and the store's CPU during the run too (the journey's `processes` has them).
    figures["infra_cpu_seconds"] = {
        name: round(cpu_seconds(pid) - infra_before[name], 2)
        for name, pid in infra_pids().items()
        if name in infra_before
    }
    return figures


STAMP = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")


async def profiled_round(js: JourneyStack, n: int, deadline: float) -> dict[str, Any]:
    """`n` more cases with py-spy on every service: the busiest one's top frames, and each
    one's busy samples by layer."""
    assert js.stack is not None
    profilers: dict[str, Profiler] = {}
    for member in js.stack.members:
        assert member.process is not None
        path = RESULTS / f"journey-profile-{member.name}-{STAMP}.txt"
        profilers[member.name] = Profiler(member.process.pid, path)
    figures: dict[str, Any] = await js.round(n, deadline)
    figures["profiles"] = {name: p.stop() for name, p in profilers.items()}
    figures["profile"] = figures["profiles"][busiest(figures)]
    report("default/profiled", figures)
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    target = args.seconds or (12.0 if quick else 45.0)
    # Of the cap of a whole `make bench`: infra start and the other benches (bench_copies.py
    # takes 6 min).
    budget = args.budget or 13 * 60
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "quick": quick}
    results["machine"] = machine()
    results["target_seconds"] = target
    results["budget_seconds"] = budget
    began = time.monotonic()

    def left() -> float:
        return budget - (time.monotonic() - began)

    # 1. Calibrate, then the main run of ~`target` seconds, on the same services.
    print("[journey] default: starting the services", flush=True)
    async with JourneyStack(Variant("default")).running() as js:
        calibration = await js.round(10 if quick else 30, 180.0)
        rate = calibration["cases_per_s_report_ready"] or 0.5
        n = size_for(rate, target, 10)
        main_run = await js.round(n, deadline_for(n, rate))
        report("default/main", main_run)
        if args.profile:
            # A round of its own after the main one: py-spy pauses each process it samples and
            # so slows the journey; the main run's figures stay clean of it.
            results["profiled"] = await profiled_round(js, n, deadline_for(n, rate))
    results["calibration"] = calibration
    results["rate_calibration"] = rate
    results["journey"] = main_run
    deadline = deadline_for(n, rate)
    # What one more run on fresh services costs, at most: the longest so far.
    longest = time.monotonic() - began

    # 2. The bare pipeline, same N.
    print(f"[journey] bare pipeline: n={n}", flush=True)
    results["bare"] = await bare(n)

    # 3. What each layer costs: same N each. Skipped (and said so) when the next run would take
    # the whole bench past its time budget.
    later: dict[str, dict[str, Any]] = {}
    variants = [
        Variant("no-trail", no_trail=True),
        Variant("sasl-off", sasl_off=True),
        Variant("tracing-on", tracing=True),
        Variant("null-keyring", null_keyring=True),
        Variant("service-keyring", service_keyring=True),
        Variant("tuned", tuned=True),
    ]
    if args.layers:
        variants = [v for v in variants if v.name in args.layers]
    for variant in variants:
        if variant.sasl_off and not PLAINTEXT_BOOTSTRAP:
            why = "the broker has no listener without identities (make bench opens one)"
            print(f"[journey] {variant.name}: skipped, {why}", flush=True)
            results.setdefault("failed", {})[variant.name] = why
            continue
        if longest > left():
            print(f"[journey] {variant.name}: skipped, over the {budget:.0f} s budget", flush=True)
            results.setdefault("skipped", []).append(variant.name)
            continue
        t0 = time.monotonic()
        try:
            with zipkin() if variant.tracing else contextlib.nullcontext():
                later[variant.name] = (await run_variant(variant, [("main", n, deadline)]))["main"]
        except RuntimeError as exc:  # a service that did not start: the other runs still count
            first = str(exc).splitlines()[0]
            print(f"[journey] {variant.name}: failed: {first}", flush=True)
            results.setdefault("failed", {})[variant.name] = str(exc)[:2000]
            continue
        longest = max(longest, time.monotonic() - t0)
    results["layers"] = later

    # 4. How cost grows: a smaller and a larger N on fresh default services, the larger one
    # time-boxed to what is left of the budget.
    small, large = size_for(rate, target / 4, 5), size_for(rate, target * 2, 20)
    results["sizes_n"] = {"small": small, "main": n, "large": large}
    results["sizes"] = {"main": main_run}
    if left() > 60:
        rounds = [("small", small, deadline_for(small, rate))]
        rounds.append(("large", large, max(30.0, min(deadline_for(large, rate), left() - 60))))
        sized = await run_variant(Variant("sizes"), rounds)
        results["sizes"] = {"small": sized["small"], "main": main_run, "large": sized["large"]}
    else:
        results.setdefault("skipped", []).append("sizes")
    results["tuned_values"] = TUNED
    results["wall_seconds"] = round(time.monotonic() - began, 1)
    results["machine"]["load_average_end"] = load_average()
    return results


def report(label: str, figures: dict[str, Any]) -> None:
    print(
        f"[journey] {label}: n={figures['cases']} ready={figures['report_ready']} "
        f"{figures['cases_per_s_report_ready']} cases/s in {figures['seconds']} s, "
        f"load {figures['load_average']['after']}",
        flush=True,
    )


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures: what the baseline keeps and the table compares."""
    j = results["journey"]
    base_rate = j["cases_per_s_report_ready"]
    s: dict[str, Any] = {
        "journey_cases_per_s_report_ready": base_rate,
        "journey_cases_per_s_notified": j["cases_per_s_notified"],
    }
    for name, _, _ in STAGES:
        s[f"p99_ms {name}"] = j["stages"][name]["p99_ms"]
    requests = j.get("store_requests_per_case", {})
    for service, counts in requests.items():
        s[f"store requests/case {service}"] = counts.get("total")
    if requests:
        s["store requests/case all"] = round(sum(c["total"] for c in requests.values()), 1)
    b = results["bare"]
    # Like with like: report-ready to report-ready, complete (notified) to complete.
    bare_ready = b.get("report_ready_per_s") or b.get("cases_per_s")
    s["ratio journey/bare report-ready"] = ratio(base_rate, bare_ready) if bare_ready else None
    bare_all = b.get("cases_per_s")
    notified = j["cases_per_s_notified"]
    s["ratio journey/bare notified"] = ratio(notified, bare_all) if bare_all else None
    for name, figures in results["layers"].items():
        s[f"ratio {name}/default"] = ratio(figures["cases_per_s_report_ready"], base_rate)
    for label, figures in results["sizes"].items():
        s[f"size {label} cases/s"] = figures["cases_per_s_report_ready"]
        s[f"size {label} p99_ms submit>report-ready"] = figures["stages"]["submit>report-ready"][
            "p99_ms"
        ]
    return s


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def table(results: dict[str, Any]) -> str:
    lines = []
    m = results["machine"]
    lines.append(
        f"machine: {m['nproc']} cpus, {m['cpu']}; load average at start {m['load_average']}, "
        f"at end {m.get('load_average_end')}"
    )
    j = results["journey"]
    lines.append(
        f"journey: {j['cases']} cases, {j['report_ready']} to report-ready, {j['notified']} "
        f"notified, {j['seconds']} s (errors {j['error_count']}, timed out {j['timed_out']})"
    )
    lines.append(
        f"  cases/s to report-ready {j['cases_per_s_report_ready']}, to last notification "
        f"{j['cases_per_s_notified']}"
    )
    lines.append(f"  {'stage':34} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for name, st in j["stages"].items():
        lines.append(
            f"  {name:34} {st['n']:>5} {st['p50_ms']:>9} {st['p95_ms']:>9} {st['p99_ms']:>9} "
            f"{st['max_ms']:>9}"
        )
    lines.append("  store requests per case (by kind; data reads and writes apart):")
    for service, counts in j.get("store_requests_per_case", {}).items():
        kinds = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total")
        lines.append(f"    {service:8} {counts['total']:>6}  ({kinds})")
    lines.append(f"  {'process':14} {'cpu s':>8} {'peak MiB':>9}")
    for name, p in j["processes"].items():
        lines.append(f"  {name:14} {p['cpu_s']:>8} {p['peak_mib']:>9}")
    b = results["bare"]
    if "missing" in b:
        lines.append(f"bare pipeline: {b['missing']}")
    else:
        s = results["summary"]
        lines.append(
            f"bare pipeline: {b.get('cases_per_s')} cases/s complete, "
            f"{b.get('report_ready_per_s')} to report-ready, in {b.get('seconds')} s "
            f"(load {b['load_average']['after']}); journey/bare: report-ready "
            f"{s['ratio journey/bare report-ready']}, notified {s['ratio journey/bare notified']}"
        )
        cpu = {**b.get("cpu_seconds", {}), **b.get("infra_cpu_seconds", {})}
        lines.append("  bare cpu s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    head = f"  {'run':18} {'n':>5} {'cases/s':>8} {'ratio':>6} {'p99 ms e2e':>11}"
    lines.append(f"{head} {'load':>18}")

    def row(label: str, f: dict[str, Any]) -> None:
        lines.append(
            f"  {label:18} {f['cases']:>5} {f['cases_per_s_report_ready']:>8} "
            f"{ratio(f['cases_per_s_report_ready'], j['cases_per_s_report_ready']):>6} "
            f"{f['stages']['submit>report-ready']['p99_ms']:>11} "
            f"{f['load_average']['after']!s:>18}"
        )

    row("default", j)
    for name, f in results["layers"].items():
        row(name, f)
    if "tracing-on" in results["layers"]:
        seen = results["layers"]["tracing-on"].get("zipkin_services")
        lines.append(f"  tracing-on: Zipkin lists {seen} services with spans (4 expected)")
    if results.get("skipped"):
        lines.append(f"  skipped (time budget): {', '.join(results['skipped'])}")
    for name, why in results.get("failed", {}).items():
        lines.append(f"  {name}: failed, {why.splitlines()[0]} (log in the results file)")
    for label, f in results["sizes"].items():
        row(f"size {label}", f)
    if "profiled" in results:
        j = results["profiled"]
        p = j["profile"]
        lines.append(
            f"profiled round (py-spy on every service): {j['report_ready']} cases, "
            f"{j['cases_per_s_report_ready']} cases/s"
        )
        lines.append(f"profile: {p.get('file')} ({p.get('samples')} samples)")
        lines.append("  our code, inclusive:")
        lines += [f"    {line}" for line in p.get("inclusive", [])[:10]]
        lines.append("  any code, self (idle threads and the event loop's wait included):")
        lines += [f"    {line}" for line in p.get("self", [])[:10]]
        lines.append("where each service's CPU goes: its CPU ms/case split as its busy samples are")
        for name, sampled in j.get("profiles", {}).items():
            per_case = 1000 * j["processes"][name]["cpu_s"] / max(j["report_ready"], 1)
            split = ", ".join(
                f"{layer} {share * per_case:.1f}"
                for layer, share in sampled["busy_by_layer"].items()
            )
            lines.append(
                f"  {name:8} {per_case:6.1f} ms ({sampled['busy_samples']} samples): {split}"
            )
    return "\n".join(lines)


def against_baseline(current: dict[str, Any]) -> str:
    if not BASELINE.exists():
        return "no bench/baseline.json yet"
    base = json.loads(BASELINE.read_text()).get("journey", {})
    if not base:
        return "bench/baseline.json has no journey figures yet"
    lines = [f"change against bench/baseline.json (machine {base.get('machine', {})}):"]
    for key, now in current.items():
        was = base.get("summary", {}).get(key)
        if isinstance(now, int | float) and isinstance(was, int | float) and was:
            change = 100 * (now - was) / was
            lines.append(f"  {key:46} {fmt(was):>9} -> {fmt(now):>9}  {change:+6.1f}%")
        else:
            lines.append(f"  {key:46} {fmt(was):>9} -> {fmt(now):>9}")
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    """Latency per stage (box plot, log scale) and throughput over time of the main run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    j = results["journey"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    names = [n for n, _, _ in STAGES if j["samples"][n]]
    data = [[max(x, 1e-3) for x in j["samples"][n]] for n in names]
    left.boxplot(
        data, orientation="horizontal", whis=(1, 99), showfliers=True, flierprops={"markersize": 2}
    )
    left.set_yticks(range(1, len(names) + 1), names, fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("seconds (log); box p25-p75, whiskers p1-p99")
    left.set_title(f"latency per stage, {j['cases']} cases")
    left.invert_yaxis()
    bucket = 5.0
    for key, label in (("ready_at", "report-ready"), ("notified_at", "notified")):
        times = j[key]
        if not times:
            continue
        edges = [i * bucket for i in range(int(max(times) // bucket) + 2)]
        counts = [sum(1 for t in times if a <= t < a + bucket) / bucket for a in edges[:-1]]
        right.step(edges[:-1], counts, where="post", label=label)
    right.set_xlabel("seconds since the first submission")
    right.set_ylabel(f"cases/s ({bucket:.0f} s buckets)")
    m = results["machine"]
    right.set_title(f"throughput over time ({m['nproc']} cpus, load {m['load_average']})")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs: a first look")
    parser.add_argument("--seconds", type=float, default=0, help="main run's target length")
    parser.add_argument("--profile", action="store_true", help="py-spy every service")
    parser.add_argument("--write-baseline", action="store_true", help="keep as bench/baseline.json")
    parser.add_argument("--budget", type=float, default=0, help="seconds for the whole run")
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--layers", nargs="+", default=[], help="run only these layers' variants (e.g. tuned)"
    )
    args, _ = parser.parse_known_args()
    results = asyncio.run(main(args))
    results["label"] = args.label
    results["summary"] = summary(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = table(results)
    print(text)
    print(against_baseline(results["summary"]))
    (RESULTS / f"journey-{STAMP}.json").write_text(json.dumps(results, indent=1) + "\n")
    try:
        chart(results, RESULTS / f"journey-{STAMP}.png")
        chart(results, RESULTS / "journey-latest.png")
        print(f"chart: bench/results/journey-{STAMP}.png (and journey-latest.png)")
    except ImportError as exc:
        print(f"no chart: {exc}")
    if args.write_baseline:
        kept = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
        kept["journey"] = {
            "recorded": results["started"],
            "quick": results["quick"],
            "machine": results["machine"],
            "summary": results["summary"],
        }
        BASELINE.write_text(json.dumps(kept, indent=2) + "\n")
        print("bench/baseline.json updated")


if __name__ == "__main__":
    cli()
