"""The metrics store beside a test stack, started as `make run` starts it: VictoriaMetrics, vmalert
and the alert receiver by deploy/metrics/install.sh, and the lag exporter (`python -m
avis.shared.lag`), on loopback ports derived from the test broker's (TEST_PORT_PREFIX), scraping a
ServiceStack's services every second; and what the checks read of it: the dashboards' queries,
instant queries over the HTTP API, the alerts the receiver got.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from avis.shared.topics import CASE_SUBMITTED, REPORT_READY, REVIEW_ASSIGNED, REVIEW_COMPLETED
from tests.support.basics import (
    BOOTSTRAP,
    JWT_SECRET,
    MONGO_URL,
    ROOT,
    SEALING_KEYS,
    kafka_passwords,
    skip_history,
    unique,
)
from tests.support.kms import kms_env
from tests.support.stack import ServiceStack

METRICS = ROOT / "deploy/metrics"


def port_prefix() -> str:
    """The test stack's port prefix (TEST_PORT_PREFIX): the broker listens on <prefix>9092."""
    port = BOOTSTRAP.rsplit(":", 1)[1]
    return port[:-4] if len(port) > 4 else ""


def ports() -> dict[str, int]:
    """The metrics parts' ports for this test stack: <prefix>8428 and so on."""
    p = port_prefix()
    return {
        "METRICS": int(f"{p}8428"),
        "VMALERT": int(f"{p}8880"),
        "ALERTS": int(f"{p}8429"),
        "LAG": int(f"{p}8005"),
    }


def dashboards() -> list[dict[str, Any]]:
    """Every dashboard file, parsed."""
    paths = sorted((METRICS / "dashboards").glob("*.json"))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def panels() -> list[tuple[str, str, list[str]]]:
    """(dashboard, panel, expressions) for every panel of every dashboard."""
    return [
        (board["title"].split(":")[0], panel["title"], list(panel["expr"]))
        for board in dashboards()
        for row in board["rows"]
        for panel in row["panels"]
    ]


def quick_rules(folder: Path, *, window: str = "1m", hold: str = "4s") -> Path:
    """Copies of the rule files with short windows, for a test: every group evaluated each
    second, every `for:` `hold`, every range over 5 minutes `window`; the expressions otherwise
    the same. Returns the glob vmalert reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (METRICS / "rules").glob("*.yml"):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^(\s+interval:).*$", r"\1 1s", text)
        text = re.sub(r"(?m)^(\s+for:).*$", rf"\1 {hold}", text)
        text = re.sub(r"\[(?:1[0-9]|[2-9][0-9])m\]|\[\d+h\]", f"[{window}]", text)
        (folder / path.name).write_text(text, encoding="utf-8")
    return folder / "*.yml"


@dataclass
class MetricsStore:
    """The running store, vmalert and alert receiver, and the lag exporter."""

    url: str
    vmalert_url: str
    alerts_url: str
    lag: subprocess.Popen[bytes]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant query's series (each: its labels and value), as vmui asks for them."""
        params = {"query": expr, "step": "15s", **({"time": str(at)} if at else {})}
        answer = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=30)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def values(self, expr: str) -> dict[str, float]:
        """Each series of the query, named by its labels, and its value now."""
        return {
            json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in self.query(expr)
        }

    def total(self, expr: str) -> float:
        """The sum of the query's values now (0 without a series)."""
        return sum(self.values(expr).values())

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert the receiver got so far (firing and resolved), oldest first."""
        answer = httpx.get(f"{self.alerts_url}/api/v2/alerts", timeout=10)
        answer.raise_for_status()
        return list(answer.json())

    def fired(self, name: str) -> list[dict[str, Any]]:
        """The alerts named `name` the receiver got."""
        return [a for a in self.alerts() if a.get("labels", {}).get("alertname") == name]

    def scraped(self) -> set[str]:
        """The jobs whose last scrape succeeded."""
        return {s["metric"]["job"] for s in self.query("up == 1")}


@contextlib.contextmanager
def metrics_store(
    services: Mapping[str, str], state: Path, *, rules: Path | None = None
) -> Iterator[MetricsStore]:
    """The store scraping `services` (name -> base URL) and the lag exporter every second, with
    vmalert and the receiver; stopped on the way out. `rules`: the rule files vmalert reads."""
    at = ports()
    env = dict(os.environ) | {
        "AVIS_STATE_DIR": str(state),
        "AVIS_PYTHON": sys.executable,
        "AVIS_SCRAPE_INTERVAL": "1s",
        "AVIS_VMALERT_INTERVAL": "1s",
        **{f"AVIS_{name}_PORT": str(port) for name, port in at.items()},
        **{f"AVIS_{s.upper()}_HTTP_PORT": url.rsplit(":", 1)[1] for s, url in services.items()},
    }
    env.pop("AVIS_FERRETDB_METRICS_PORT", None)  # the test store serves no debug listener
    if rules is not None:
        env["AVIS_VMALERT_RULES"] = str(rules)
    state.mkdir(parents=True, exist_ok=True)
    lag_log = (state / "lag.log").open("wb")
    lag = subprocess.Popen(
        [sys.executable, "-m", "avis.shared.lag", "--bootstrap", BOOTSTRAP, "--mongo-url",
         MONGO_URL, "--port", str(at["LAG"]), "--every", "1"],
        env=env, stdout=lag_log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    install = str(METRICS / "install.sh")
    try:
        subprocess.run([install, "start"], env=env, check=True, cwd=ROOT, timeout=120)
        store = MetricsStore(
            url=f"http://127.0.0.1:{at['METRICS']}",
            vmalert_url=f"http://127.0.0.1:{at['VMALERT']}",
            alerts_url=f"http://127.0.0.1:{at['ALERTS']}",
            lag=lag,
        )
        _wait_healthy([store.url, store.vmalert_url], timeout=30)
        yield store
    finally:
        subprocess.run([install, "stop"], env=env, check=False, cwd=ROOT, timeout=60)
        lag.terminate()
        try:
            lag.wait(timeout=10)
        except subprocess.TimeoutExpired:
            lag.kill()
            lag.wait()
        lag_log.close()


def _wait_healthy(urls: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy in {timeout} s")
            time.sleep(0.2)


# What each service's group reads: the services start past the topics' history (this stack's
# events only).
GROUP_TOPICS = {
    "intake": [REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
    "review": [CASE_SUBMITTED, REPORT_READY],
    "reports": [CASE_SUBMITTED, REVIEW_COMPLETED],
    "notify": [CASE_SUBMITTED, REVIEW_ASSIGNED, REVIEW_COMPLETED, REPORT_READY],
}


def service_env(**extra: str) -> dict[str, str]:
    """The four services' settings on the test stack, quick to act (relay, retries, sends);
    `extra` adds or overrides AVIS_* settings."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "AVIS_KAFKA_BOOTSTRAP": BOOTSTRAP,
        **kafka_passwords(),
        "AVIS_MONGO_URL": MONGO_URL,
        "AVIS_SMTP_URL": os.environ.get("AVIS_SMTP_URL", "smtp://127.0.0.1:11025"),
        "AVIS_SEALING_KEYS": SEALING_KEYS,
        **kms_env(),
        "AVIS_JWT_SECRET": JWT_SECRET,
        "AVIS_ENV": "development",
        "AVIS_RATE_LIMIT_WRITES": "100000/minute",
        "AVIS_LOG_FORMAT": "json",
        "AVIS_RELAY_POLL_SECONDS": "0.3",
        "AVIS_RETRY_BACKOFF_MAX_SECONDS": "1",
        "AVIS_NOTIFY_SENDER_TICK_SECONDS": "0.3",
        "AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK": "true",
        **extra,
    }


@contextlib.asynccontextmanager
async def observed_stack(
    state: Path, *, env: Mapping[str, str], rules: Path | None = None
) -> AsyncIterator[tuple[ServiceStack, MetricsStore]]:
    """The four services as processes (databases of their own), scraped by the metrics store."""
    for service, topics in GROUP_TOPICS.items():
        await skip_history(f"avis-{service}", topics)
    databases = {s: unique(f"obs_{s}").replace("-", "_") for s in GROUP_TOPICS}
    stack = ServiceStack(env, state / "logs", databases)
    try:
        async with stack.running():
            with metrics_store(stack.urls, state / "metrics", rules=rules) as store:
                yield stack, store
    finally:
        print(stack.tails(800))
        with MongoClient(MONGO_URL) as mongo:
            for database in databases.values():
                mongo.drop_database(database)
