"""docker-compose.yml, the Dockerfiles and the observability configs agree with the code.

No Docker and no network: the files are parsed and compared with the settings sources, the
workspace metadata and each other, so a renamed variable, a moved port or a forgotten scrape
target fails here instead of in a container.
"""

import ast
import base64
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from avis.shared.topics import TOPICS, dlq

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
OBSERVABILITY = ROOT / "deploy" / "observability"
SHARED_SETTINGS = ROOT / "shared" / "src" / "avis" / "shared" / "settings.py"

PORTS = {"intake": 8001, "review": 8002, "reports": 8003, "notify": 8004, "web": 8000}
DOCKERFILE = ROOT / "Dockerfile"  # one for every service, named by the SERVICE build argument
LOOPBACK = "127.0.0.1"

# What compose may set on a container that runs our code. Every name here is checked against the
# settings sources below, so the list cannot claim a variable the code does not read.
# Shared variables, declared in CommonSettings as `shared_env("NAME")` -> `AVIS_NAME`:
SHARED_VARS = frozenset(
    {
        "ENV",
        "KAFKA_BOOTSTRAP",
        "MONGO_URL",
        "SEALING_KEYS",
        "JWT_SECRET",
        "JWT_JWKS",
        "JWT_AUDIENCE",
        "OTEL_EXPORTER",
        "OTEL_ENDPOINT",
        "LOG_FORMAT",
        "LOG_LEVEL",
    }
)
# Fields read under the service prefix (`AVIS_<NAME>_<FIELD>`), inherited from CommonSettings:
PREFIXED_FIELDS = frozenset({"http_host", "http_port"})
# Unprefixed variables that one service alone reads, declared in its own settings.py:
SERVICE_ONLY_VARS = {"notify": frozenset({"SMTP_URL"}), "web": frozenset({"ENV"})}
# Fields one service alone reads under its prefix (`AVIS_<NAME>_<FIELD>`), in its settings.py:
SERVICE_FIELDS = {"web": frozenset({"intake_url", "review_url", "reports_url", "notify_url"})}
# Compose services that run our images -> the service whose settings they read; `topics` runs
# `avis-topics`, which reads CommonSettings only.
READERS: dict[str, str | None] = {name: name for name in PORTS} | {"topics": None}


# ---- helpers ------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = _load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict), "docker-compose.yml is not a mapping"
    assert isinstance(doc.get("services"), dict), "docker-compose.yml has no services"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def collector_config() -> dict[str, Any]:
    doc = _load_yaml(OBSERVABILITY / "otel-collector.yaml")
    assert isinstance(doc, dict), "otel-collector.yaml is not a mapping"
    return doc


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    doc = _load_yaml(OBSERVABILITY / "prometheus.yml")
    assert isinstance(doc, dict), "prometheus.yml is not a mapping"
    return doc


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two compose syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _ports(service: dict[str, Any]) -> list[tuple[str | None, int | None, int]]:
    """(host ip, published port, container port) for each published port of a service."""
    out: list[tuple[str | None, int | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append(
                (entry.get("host_ip"), int(published) if published else None, int(entry["target"]))
            )
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0] or None, int(parts[1]) if parts[1] else None, int(parts[2])))
        elif len(parts) == 2:
            out.append((None, int(parts[0]), int(parts[1])))
        else:
            out.append((None, None, int(parts[0])))
    return out


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition (the short list syntax means `service_started`)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _dockerfile_of(service: dict[str, Any]) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return ROOT / build / "Dockerfile"
    return ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif node is not None:
        yield str(node)


def _service_mounting(services: dict[str, dict[str, Any]], relative: str) -> str:
    """The compose service that bind-mounts `relative` (a path from the repository root)."""
    found = [
        name
        for name, svc in services.items()
        for volume in svc.get("volumes") or []
        if isinstance(volume, str) and volume.split(":")[0] in (f"./{relative}", relative)
    ]
    assert len(found) == 1, f"expected one service mounting {relative}, found {found}"
    return found[0]


# ---- settings sources: what the code reads ----------------------------------------------------


class _SettingsSource:
    """What one settings module declares: fields, `shared_env(...)` variables, env prefix."""

    def __init__(self, path: Path) -> None:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.fields: dict[str, bool] = {}  # field -> has its own validation alias
        self.shared: set[str] = set()  # NAME of every shared_env("NAME")
        self.literal_vars: set[str] = set()  # every "AVIS_..." string literal
        self.prefixes: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                        aliased = isinstance(stmt.value, ast.Call) and any(
                            kw.arg in ("validation_alias", "alias") for kw in stmt.value.keywords
                        )
                        self.fields[stmt.target.id] = aliased
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "shared_env" and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        self.shared.add(arg.value)
                for kw in node.keywords:
                    if kw.arg == "env_prefix" and isinstance(kw.value, ast.Constant):
                        self.prefixes.add(str(kw.value.value))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"AVIS_[A-Z0-9_]*[A-Z0-9]", node.value)
            ):
                self.literal_vars.add(node.value)


def _service_settings_path(name: str) -> Path:
    return ROOT / "services" / name / "src" / "avis" / name / "settings.py"


@pytest.fixture(scope="module")
def common() -> _SettingsSource:
    assert SHARED_SETTINGS.is_file(), f"{SHARED_SETTINGS.relative_to(ROOT)} is missing"
    return _SettingsSource(SHARED_SETTINGS)


def _service_settings(name: str) -> _SettingsSource:
    path = _service_settings_path(name)
    assert path.is_file(), (
        f"{path.relative_to(ROOT)} is missing: the {name} service must declare its settings "
        f"(pydantic-settings, env_prefix AVIS_{name.upper()}_) before compose can be checked"
    )
    return _SettingsSource(path)


def _allowed_vars(reader: str | None) -> set[str]:
    allowed = {f"AVIS_{var}" for var in SHARED_VARS}
    if reader is not None:
        allowed |= {f"AVIS_{reader.upper()}_{field.upper()}" for field in PREFIXED_FIELDS}
        allowed |= {f"AVIS_{var}" for var in SERVICE_ONLY_VARS.get(reader, ())}
        allowed |= {f"AVIS_{reader.upper()}_{f.upper()}" for f in SERVICE_FIELDS.get(reader, ())}
    return allowed


def test_shared_variables_are_declared_in_common_settings(common: _SettingsSource) -> None:
    missing = sorted(SHARED_VARS - common.shared)
    assert not missing, f"not declared as shared_env(...) in shared settings.py: {missing}"


@pytest.mark.parametrize("name", sorted(PORTS))
def test_service_settings_read_what_compose_may_set(name: str, common: _SettingsSource) -> None:
    own = _service_settings(name)
    assert f"AVIS_{name.upper()}_" in own.prefixes, (
        f"{name} settings do not set env_prefix='AVIS_{name.upper()}_' (found {own.prefixes})"
    )
    for field in PREFIXED_FIELDS:
        declared = {**common.fields, **own.fields}
        assert field in declared, f"{field} is declared neither in CommonSettings nor in {name}"
        # a field with its own alias is not read under the prefix
        assert not declared[field], f"{field} has an alias: AVIS_{name.upper()}_{field.upper()}"
    for field in SERVICE_FIELDS.get(name, ()):
        assert own.fields.get(field) is False, f"{name} settings do not read {field} unaliased"
    for var in SERVICE_ONLY_VARS.get(name, ()):
        assert var in own.shared or f"AVIS_{var}" in own.literal_vars, (
            f"compose sets AVIS_{var} for {name}, but "
            f"{_service_settings_path(name).relative_to(ROOT)} does not declare it "
            f'(expected a field with validation_alias=shared_env("{var}") or "AVIS_{var}")'
        )


# ---- compose --------------------------------------------------------------------------------


def test_compose_runs_the_four_services_and_the_topics_job(services: dict[str, Any]) -> None:
    missing = sorted(set(READERS) - set(services))
    assert not missing, f"compose lacks {missing}"


def test_every_build_points_at_an_existing_dockerfile(services: dict[str, Any]) -> None:
    built = {name: _dockerfile_of(svc) for name, svc in services.items() if "build" in svc}
    assert set(PORTS) <= set(built), f"services without build: {sorted(set(PORTS) - set(built))}"
    for name, dockerfile in built.items():
        assert dockerfile is not None
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        context = services[name]["build"].get("context", ".")
        # the Dockerfiles copy uv.lock and every member: only the root is a usable context
        assert (ROOT / context).resolve() == ROOT, f"{name}: build context must be the root"
    for name, port in PORTS.items():
        assert built[name] == DOCKERFILE, f"{name}: every service builds from the one Dockerfile"
        args = services[name]["build"].get("args") or {}
        assert args == {"SERVICE": name, "PORT": str(port)}, f"{name}: build args {args}"


def test_avis_variables_are_ones_the_code_reads(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        avis_vars = {k for k in _environment(svc) if k.startswith("AVIS_")}
        if not avis_vars:
            continue
        assert name in READERS, f"{name} sets {sorted(avis_vars)} but runs none of our services"
        unknown = sorted(avis_vars - _allowed_vars(READERS[name]))
        assert not unknown, f"{name} sets variables its code does not read: {unknown}"


@pytest.mark.parametrize(("name", "port"), sorted(PORTS.items()))
def test_service_listens_and_is_published_on_its_port(
    services: dict[str, Any], name: str, port: int
) -> None:
    svc = services[name]
    env = _environment(svc)
    prefix = f"AVIS_{name.upper()}_"
    assert env.get(f"{prefix}HTTP_HOST") == "0.0.0.0", f"{name} must listen on 0.0.0.0"
    assert env.get(f"{prefix}HTTP_PORT") == str(port), f"{name} must listen on {port}"
    assert _ports(svc) == [(LOOPBACK, port, port)], f"{name} must publish {LOOPBACK}:{port}"
    for var in ("KAFKA_BOOTSTRAP", "MONGO_URL", "SEALING_KEYS", "JWT_SECRET", "OTEL_ENDPOINT"):
        assert env.get(f"AVIS_{var}"), f"{name} lacks AVIS_{var}"
    assert env["AVIS_OTEL_EXPORTER"] == "otlp", f"{name} must export OTLP"


def test_every_published_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for host_ip, published, target in _ports(svc):
            assert host_ip == LOOPBACK, f"{name} publishes {target} on {host_ip or 'all addresses'}"
            assert published is not None, f"{name} publishes {target} on a random port"


def test_no_host_port_is_published_twice(services: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, svc in services.items():
        for _, published, _ in _ports(svc):
            if published is None:
                continue
            assert published not in seen, f"{name} and {seen[published]} both publish {published}"
            seen[published] = name


def test_services_wait_for_infrastructure_and_topics(services: dict[str, Any]) -> None:
    kafka = _service_mounting_volume(services, "/var/lib/kafka/data")
    mongo = next(n for n, s in services.items() if "--replSet" in _strings_of(s.get("command")))
    for name in PORTS:
        deps = _depends_on(services[name])
        assert deps.get(kafka) == "service_healthy", f"{name} must wait for {kafka} healthy"
        assert deps.get(mongo) == "service_healthy", f"{name} must wait for {mongo} healthy"
        assert deps.get("topics") == "service_completed_successfully", f"{name}: topics first"
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
    assert _depends_on(services["topics"]).get(kafka) == "service_healthy"


def _strings_of(node: Any) -> list[str]:
    return list(_strings(node))


def _service_mounting_volume(services: dict[str, Any], target: str) -> str:
    found = [
        name
        for name, svc in services.items()
        for volume in svc.get("volumes") or []
        if isinstance(volume, str) and volume.split(":")[1:2] == [target]
    ]
    assert len(found) == 1, f"expected one service with a volume on {target}, found {found}"
    return found[0]


@pytest.mark.parametrize(("name", "port"), sorted(PORTS.items()))
def test_service_healthcheck_asks_healthz_on_its_port(
    services: dict[str, Any], name: str, port: int
) -> None:
    check = services[name].get("healthcheck") or {}
    assert not check.get("disable"), f"{name} has its health check disabled"
    test = " ".join(_strings(check.get("test")))
    assert f"127.0.0.1:{port}/healthz" in test, f"{name} health check must ask :{port}/healthz"


def test_mongo_is_a_single_node_replica_set_the_services_name(services: dict[str, Any]) -> None:
    mongo = next(n for n, s in services.items() if "--replSet" in _strings_of(s.get("command")))
    command = _strings_of(services[mongo]["command"])
    replset = command[command.index("--replSet") + 1]
    assert "--bind_ip_all" in command
    check = " ".join(_strings(services[mongo]["healthcheck"]["test"]))
    assert "rs.initiate" in check, "the mongo health check must initiate the replica set"
    assert f"'{mongo}:27017'" in check, "the replica set member must be the compose host name"
    for name in PORTS:
        url = urlsplit(_environment(services[name])["AVIS_MONGO_URL"])
        assert url.hostname == mongo, f"{name} must reach MongoDB at {mongo}"
        assert f"replicaSet={replset}" in url.query, f"{name} must name replica set {replset}"


def test_kafka_listeners_and_no_auto_create(services: dict[str, Any]) -> None:
    kafka = _service_mounting_volume(services, "/var/lib/kafka/data")
    env = _environment(services[kafka])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft combined mode"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from avis-topics"
    advertised = dict(
        item.split("://", 1)[::-1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    listeners = {
        name: address.rsplit(":", 1)[1]
        for name, address in (item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    }
    assert f"{kafka}:9092" in advertised, "containers must find the broker at kafka:9092"
    assert f"{LOOPBACK}:9092" in advertised, "the host listener must be advertised on loopback"
    host_listener = advertised[f"{LOOPBACK}:9092"]
    assert (LOOPBACK, 9092, int(listeners[host_listener])) in _ports(services[kafka])
    for name in READERS:
        assert _environment(services[name])["AVIS_KAFKA_BOOTSTRAP"] == f"{kafka}:9092"


def test_topics_job_creates_the_topics_from_the_shared_package(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    topics = services["topics"]
    command = topics.get("command")
    argv = shlex.split(command) if isinstance(command, str) else list(command or [])
    assert argv[:1] == ["avis-topics"], f"the topics job must run avis-topics, not {argv}"
    assert _dockerfile_of(topics) == DOCKERFILE
    assert topics["build"]["args"]["SERVICE"] == "intake", "avis-topics ships in every image"
    scripts = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("avis-topics") == "avis.shared.topics:main"
    assert topics.get("restart", "no") == "no", "a one-shot job must not restart"
    # Topic names written anywhere in compose (if any) are exactly the platform's topics.
    known = set(TOPICS) | {dlq(t) for t in TOPICS}
    mentioned = {
        token
        for text in _strings(compose)
        for token in re.findall(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+(?:\.dlq)?", text)
        if token.endswith(".dlq") or token.split("-")[0] in {t.split("-")[0] for t in TOPICS}
    }
    unknown = sorted(mentioned - known)
    assert not unknown, f"compose names topics the platform does not have: {unknown}"


def test_notify_mails_the_mail_catcher(services: dict[str, Any]) -> None:
    url = urlsplit(_environment(services["notify"]).get("AVIS_SMTP_URL", ""))
    assert url.scheme == "smtp", "notify needs AVIS_SMTP_URL=smtp://host:port"
    assert url.hostname in services, f"AVIS_SMTP_URL names no compose service: {url.hostname}"
    catcher = services[url.hostname]
    exposed = {target for _, _, target in _ports(catcher)} | set(
        map(int, catcher.get("expose", []))
    )
    assert url.port in exposed, f"{url.hostname} does not serve SMTP on {url.port}"
    assert _depends_on(services["notify"]).get(url.hostname), "notify must start after it"


def test_dev_secrets_are_usable_defaults() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    keys = re.search(r"\$\{AVIS_SEALING_KEYS:-([^}]+)\}", text)
    assert keys, "AVIS_SEALING_KEYS must be overridable with a development default"
    for entry in keys.group(1).split(","):
        kid, _, key = entry.partition(":")
        assert kid, f"sealing key without id: {entry}"
        assert len(base64.b64decode(key, validate=True)) == 32, f"key {kid} is not 32 bytes"
    secret = re.search(r"\$\{AVIS_JWT_SECRET:-([^}]+)\}", text)
    assert secret, "AVIS_JWT_SECRET must be overridable with a development default"
    assert len(secret.group(1)) >= 32, "an HS256 secret shorter than 32 bytes is refused"
    assert re.search(r"production must override", text, re.IGNORECASE)


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


# ---- observability --------------------------------------------------------------------------


def _collector_http_port(collector_config: dict[str, Any]) -> int:
    http = collector_config["receivers"]["otlp"]["protocols"]["http"]
    return int(http.get("endpoint", "0.0.0.0:4318").rsplit(":", 1)[1])


def test_services_send_otlp_to_the_collector(
    services: dict[str, Any], collector_config: dict[str, Any]
) -> None:
    collector = _service_mounting(services, "deploy/observability/otel-collector.yaml")
    port = _collector_http_port(collector_config)
    for name in PORTS:
        url = urlsplit(_environment(services[name])["AVIS_OTEL_ENDPOINT"])
        assert (url.scheme, url.hostname, url.port) == ("http", collector, port), (
            f"{name}: AVIS_OTEL_ENDPOINT must be http://{collector}:{port} (OTLP/HTTP)"
        )
        assert _depends_on(services[name]).get(collector), f"{name} must start after {collector}"


def test_collector_sends_traces_to_jaeger_and_metrics_to_prometheus(
    services: dict[str, Any], collector_config: dict[str, Any]
) -> None:
    pipelines = collector_config["service"]["pipelines"]
    exporters = collector_config["exporters"]
    assert "otlp" in pipelines["traces"]["receivers"]
    assert "otlp" in pipelines["metrics"]["receivers"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector_config[kind], f"undefined {kind[:-1]} {component}"
    trace_hosts = {
        urlsplit("//" + exporters[e]["endpoint"].split("://")[-1]).hostname
        for e in pipelines["traces"]["exporters"]
    }
    jaeger = next(n for n, s in services.items() if "jaeger" in str(s.get("image", "")))
    assert jaeger in trace_hosts, f"traces must go to {jaeger}"
    prometheus_exporters = [
        e for e in pipelines["metrics"]["exporters"] if e.split("/")[0] == "prometheus"
    ]
    assert prometheus_exporters, "metrics must be offered to Prometheus"


def _scrape_targets(prometheus_config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (job, metrics path)."""
    targets: dict[str, tuple[str, str]] = {}
    for job in prometheus_config["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = (job["job_name"], path)
    return targets


def test_prometheus_scrapes_each_service_where_compose_runs_it(
    services: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    targets = _scrape_targets(prometheus_config)
    for name in PORTS:
        port = _environment(services[name])[f"AVIS_{name.upper()}_HTTP_PORT"]
        target = f"{name}:{port}"
        assert target in targets, f"prometheus does not scrape {target}"
        assert targets[target][1] == "/metrics", f"{target} is scraped on {targets[target][1]}"
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host == "localhost" or host in services, f"scrape target {target} is no service"


def test_prometheus_scrapes_the_collector(
    services: dict[str, Any], prometheus_config: dict[str, Any], collector_config: dict[str, Any]
) -> None:
    collector = _service_mounting(services, "deploy/observability/otel-collector.yaml")
    targets = _scrape_targets(prometheus_config)
    exported = [
        int(spec["endpoint"].rsplit(":", 1)[1])
        for name, spec in collector_config["exporters"].items()
        if name.split("/")[0] == "prometheus"
    ]
    for port in exported:
        assert f"{collector}:{port}" in targets, f"collector exports on {port}, not scraped"
    readers = collector_config["service"]["telemetry"]["metrics"]["readers"]
    own = int(readers[0]["pull"]["exporter"]["prometheus"]["port"])
    assert f"{collector}:{own}" in targets, "the collector's own metrics are not scraped"


def test_prometheus_config_is_the_one_mounted(services: dict[str, Any]) -> None:
    prometheus = _service_mounting(services, "deploy/observability/prometheus.yml")
    mounted = next(v for v in services[prometheus]["volumes"] if "prometheus.yml" in str(v))
    path = mounted.split(":")[1]
    assert f"--config.file={path}" in _strings_of(services[prometheus].get("command"))


def test_grafana_datasources_point_at_prometheus_and_jaeger(services: dict[str, Any]) -> None:
    provisioning = "deploy/observability/grafana/provisioning"
    _service_mounting(services, provisioning)
    doc = _load_yaml(ROOT / provisioning / "datasources" / "datasources.yaml")
    by_type = {ds["type"]: urlsplit(ds["url"]) for ds in doc["datasources"]}
    assert set(by_type) >= {"prometheus", "jaeger"}
    prometheus = _service_mounting(services, "deploy/observability/prometheus.yml")
    assert (by_type["prometheus"].hostname, by_type["prometheus"].port) == (prometheus, 9090)
    jaeger = by_type["jaeger"]
    assert jaeger.hostname in services, f"no compose service {jaeger.hostname}"
    assert jaeger.port in {t for _, _, t in _ports(services[jaeger.hostname])}, "Jaeger UI port"


# ---- Dockerfiles ----------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def _stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Build stage name -> its instructions; global ARG defaults are substituted in FROM."""
    args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instruction, rest in _instructions(path):
        if instruction == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest).split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else str(len(stages))
            current = stages.setdefault(name, [("FROM", words[0])])
        elif current is None:
            if instruction == "ARG" and "=" in rest:
                key, _, value = rest.partition("=")
                args[key] = value
        else:
            current.append((instruction, rest))
    return stages


def _makefile_uv_version() -> str:
    found = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, "the Makefile pins no UV_VERSION"
    return found.group(1)


def _workspace_members() -> list[str]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members: list[str] = []
    for pattern in root["tool"]["uv"]["workspace"]["members"]:
        members += sorted(
            str(p.parent.relative_to(ROOT)) for p in ROOT.glob(f"{pattern}/pyproject.toml")
        )
    return members


def _substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize(("name", "port"), sorted(PORTS.items()))
def test_the_dockerfile_builds_and_runs_each_service(name: str, port: int) -> None:
    """The one Dockerfile, read with the build arguments compose gives this service."""
    assert DOCKERFILE.is_file(), "Dockerfile is missing"
    stages = _stages(DOCKERFILE)
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    build_args = {"SERVICE": name, "PORT": str(port)}
    for stage in stages.values():
        declared = {rest.split("=", 1)[0] for instruction, rest in stage if instruction == "ARG"}
        used = {arg for arg in build_args if any(f"${{{arg}}}" in r for _, r in stage)}
        assert used <= declared, f"stage uses {sorted(used - declared)} without ARG"
    runtime = [(i, _substitute(r, build_args)) for i, r in list(stages.values())[-1]]
    builder = [
        (instruction, _substitute(rest, build_args))
        for stage in list(stages.values())[:-1]
        for instruction, rest in stage
    ]
    final = dict(runtime)  # last value of each instruction in the runtime stage

    assert runtime[0] == ("FROM", "python:3.11-slim"), "runtime must be python:3.11-slim"
    runs = [rest for instruction, rest in builder if instruction == "RUN"]
    assert any(f"uv=={_makefile_uv_version()}" in r for r in runs), "pin uv as the Makefile"
    sync = [r for r in runs if "uv sync" in r and "--no-install-workspace" not in r]
    assert sync, f"{name}: no uv sync installing the service"
    for flag in ("--locked", "--no-dev", "--no-editable", f"--package avis-{name}"):
        assert flag in sync[-1], f"{name}: uv sync lacks {flag}"
    copied = " ".join(rest for instruction, rest in builder if instruction == "COPY")
    for member in [".", *_workspace_members()]:
        file = "pyproject.toml" if member == "." else f"{member}/pyproject.toml"
        assert file in copied.split(), f"--locked needs {file} in the build"
    assert "uv.lock" in copied.split(), "the build needs uv.lock"
    assert f"services/{name}/" in copied.split(), f"{name}: its sources are not copied"

    assert final.get("EXPOSE", "").split() == [str(port)], f"{name}: EXPOSE {port}"
    user = final.get("USER", "root").split(":")[0]
    assert user not in ("root", "0"), "the runtime must not run as root"
    health = final.get("HEALTHCHECK", "")
    assert "urllib" in health, "HEALTHCHECK must use python's urllib"
    assert "/healthz" in health, "HEALTHCHECK must ask /healthz"
    assert "HTTP_PORT" in health and "AVIS_SERVICE_PORT" in health, "HEALTHCHECK's port"
    env = final.get("ENV", "")
    assert f"AVIS_SERVICE={name}" in env.split() and f"AVIS_SERVICE_PORT={port}" in env.split()
    assert f"AVIS_{name.upper()}_HTTP_HOST=0.0.0.0" in env, f"{name}: listen on all addresses"

    cmd = final.get("CMD", "")
    assert cmd.startswith("["), "CMD must be in exec form"
    argv = yaml.safe_load(cmd)
    # The shell only resolves the name; `exec` hands the process over, so signals reach uvicorn.
    assert argv[:2] == ["sh", "-c"] and argv[2].startswith("exec "), f"CMD is {argv}"
    assert shlex.split(argv[2].replace("$AVIS_SERVICE", name)) == ["exec", f"avis-{name}"]
    project = tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())
    script = project["project"]["scripts"].get(f"avis-{name}")
    assert script == f"avis.{name}.main:run", f"{name}: console script avis-{name} is {script}"


def test_dockerignore_keeps_local_state_out() -> None:
    path = ROOT / ".dockerignore"
    assert path.is_file(), ".dockerignore is missing"
    patterns = {line.strip() for line in path.read_text().splitlines()} - {""}
    for needed in (".git", ".local"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    assert {".venv", "**/.venv"} & patterns, ".dockerignore must exclude .venv"
    for kept in ("uv.lock", "pyproject.toml", "shared", "services"):
        assert kept not in patterns, f".dockerignore must not exclude {kept}"
