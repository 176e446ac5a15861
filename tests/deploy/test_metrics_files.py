"""The metrics store's files: every dashboard (deploy/metrics/dashboards/*.json) and alert rule
(deploy/metrics/rules/*.yml) names only metrics some service or exporter exports, with labels
those metrics have; and the rules pass their own unit tests (vmalert-tool unittest).
"""

import importlib
import json
import re
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.support.basics import ROOT

METRICS = ROOT / "deploy/metrics"
# Every module that defines a metric: importing them registers their metrics.
MODULES = (
    "avis.shared.observability",
    "avis.shared.lag",
    "avis.intake.main",
    "avis.review.main",
    "avis.reports.main",
    "avis.notify.main",
)
TARGET_LABELS = {"job", "instance"}  # added by the store when it scrapes
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
FUNCTIONS_AND_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and",
                       "or", "unless", "bool", "offset", "inf", "nan"}  # fmt: skip
TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def exported() -> dict[str, set[str]]:
    """Each series name the platform exports and its label names."""
    for module in MODULES:
        importlib.import_module(module)
    names: dict[str, set[str]] = {}
    for metric in REGISTRY.collect():
        if not metric.name.startswith("avis_"):
            continue
        labels = set(_labels_of(metric.name)) | TARGET_LABELS
        for suffix in SUFFIXES.get(metric.type, ("",)):
            names[metric.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        names.setdefault(metric.name, labels)
    return names


def _labels_of(name: str) -> tuple[str, ...]:
    collector = REGISTRY._names_to_collectors.get(name)
    return tuple(getattr(collector, "_labelnames", ()))


@dataclass
class Used:
    """The metrics an expression selects, with the labels it matches on, and labels it groups by."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    grouped: set[str] = field(default_factory=set)


def used(expr: str) -> Used:
    """What `expr` (PromQL/MetricsQL) reads: selectors and their matchers, `by (...)` labels."""
    out = Used()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # no names inside strings
    text = re.sub(r"\[[^\]]*\]", "", text)  # nor inside range durations
    for grouping in re.finditer(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        out.grouped |= {g.strip() for g in grouping.group(1).split(",") if g.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    for match in TOKEN.finditer(text):
        name, rest = match.group(0), text[match.end() :].lstrip()
        before = text[: match.start()].rstrip()
        if rest.startswith("(") or name.lower() in FUNCTIONS_AND_WORDS:
            continue
        if before.endswith(("{", ",")) and _inside_braces(text, match.start()):
            continue  # a label name of a matcher: read with its selector below
        matchers: set[str] = set()
        if rest.startswith("{"):
            body = rest[1 : rest.index("}")]
            matchers = {m.group(1) for m in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body)}
        out.metrics.setdefault(name, set()).update(matchers)
    return out


def _inside_braces(text: str, at: int) -> bool:
    return text.rfind("{", 0, at) > text.rfind("}", 0, at)


def problems(expr: str, known: dict[str, set[str]]) -> list[str]:
    """What `expr` names that nothing exports: metrics, or labels of the metrics it reads."""
    found = used(expr)
    errors = []
    for name, labels in found.metrics.items():
        if name not in known:
            errors.append(f"metric {name} is exported by nothing")
            continue
        errors += [f"{name} has no label {label}" for label in sorted(labels - known[name])]
    have = set().union(*(known.get(n, set()) for n in found.metrics)) if found.metrics else set()
    errors += [f"no metric of it has the label {g}" for g in sorted(found.grouped - have - {"le"})]
    if "le" in found.grouped and not any(n.endswith("_bucket") for n in found.metrics):
        errors.append("grouped by le without a histogram")
    return errors


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expression) for every panel of every dashboard."""
    found = []
    for path in sorted((METRICS / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for row in board["rows"]:
            for panel in row["panels"]:
                found += [(f"{path.name}: {panel['title']}", e) for e in panel["expr"]]
    return found


def rule_exprs() -> list[tuple[str, str]]:
    """(where, expression) for every rule of every rule file."""
    found = []
    for path in sorted((METRICS / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            found += [(f"{path.name}: {r['alert']}", r["expr"]) for r in group["rules"]]
    return found


def test_there_are_four_dashboards_and_a_rule_per_fault() -> None:
    boards = {p.stem for p in (METRICS / "dashboards").glob("*.json")}
    assert boards == {"flow", "lateness", "delivery", "health"}
    alerts = {where.split(": ")[1] for where, _ in rule_exprs()}
    assert {"AvisDeadLetter", "AvisAssignmentOverdue", "AvisConsumerBehind", "AvisPartnerFailing",
            "AvisBrokerUnreachable", "AvisStoreUnreachable", "AvisErrorRate"} <= alerts  # fmt: skip


@pytest.mark.parametrize(("where", "expr"), dashboard_exprs() + rule_exprs())
def test_every_metric_named_is_exported_with_its_labels(where: str, expr: str) -> None:
    assert used(expr).metrics, f"{where}: reads no metric"
    assert problems(expr, exported()) == [], where


def test_the_check_fails_on_a_misspelt_metric_or_label() -> None:
    known = exported()
    assert problems("sum by (topic) (rate(avis_events_published_total[5m]))", known) == []
    assert problems("sum by (topic) (rate(avis_event_published_total[5m]))", known) == [
        "metric avis_event_published_total is exported by nothing",
        "no metric of it has the label topic",
    ]
    assert problems('avis_dlq_depth{topik="x"} > 0', known) == ["avis_dlq_depth has no label topik"]
    assert problems("sum by (partner) (avis_outbox_backlog)", known) == [
        "no metric of it has the label partner"
    ]


def test_every_rule_has_a_runbook_line() -> None:
    runbook = (ROOT / "docs/operations.md").read_text(encoding="utf-8")
    for where, _ in rule_exprs():
        alert = where.split(": ")[1]
        assert f"### {alert}" in runbook, f"docs/operations.md has no runbook for {alert}"


def test_rules_pass_their_unit_tests() -> None:
    tools = subprocess.run(
        [str(METRICS / "install.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    for tests in sorted((METRICS / "rules/tests").glob("*.yml")):
        tool = [f"{tools}/vmalert-tool", "unittest", "--disableAlertgroupLabel"]
        tool = [f"{tools}/vmalert-tool", "unittest", "--disableAlertgroupLabel"]
        run = subprocess.run(
            [*tool, f"--files={tests.name}"],
            cwd=tests.parent, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr


def test_rule_files_and_scrape_configuration_are_valid() -> None:
    tools = subprocess.run(
        [str(METRICS / "install.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    rules = subprocess.run(
        [f"{tools}/vmalert", f"-rule={METRICS}/rules/*.yml", "-dryRun", "-loggerLevel=ERROR"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stderr
    scrape = subprocess.run(
        [str(METRICS / "scrape.sh")], capture_output=True, text=True, check=True
    )
    config = yaml.safe_load(scrape.stdout)
    assert {job["job_name"] for job in config["scrape_configs"]} >= {
        "intake", "review", "reports", "notify", "lag"
    }  # fmt: skip
