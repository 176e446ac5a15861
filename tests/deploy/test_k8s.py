"""Offline checks of the Kubernetes manifests (deploy/k8s), no cluster needed: every overlay
renders with kustomize; every object validates against its schema, Kubernetes' own (strict:
an unknown field fails) or its operator's CRD (a custom kind with no CRD fails unless listed in
deploy/k8s/checks/schema-exceptions.yaml); the policy checker finds nothing beyond
deploy/k8s/checks/policy-exceptions.yaml. Each check is also shown failing on a broken manifest.
The tools come from deploy/k8s/tools.sh (`make install`)."""

import base64
import copy
import importlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from avis.shared.events import EVENT_TYPES, ce_types_of
from avis.shared.topics import dlq, topic_specs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("development", "production")
SERVICES = {"intake": 8001, "review": 8002, "reports": 8003, "notify": 8004}
# The oldest release the README asks for (its "Run on Kubernetes"); every built-in kind used
# (apps/v1, v1, policy/v1, networking.k8s.io/v1) is stable in it and after.
KUBERNETES_VERSION = "1.32"

Doc = dict[str, Any]
CrdKey = tuple[str, str]  # (apiVersion, kind)


@pytest.fixture(scope="module")
def tools() -> Path:
    """The folder of the cached tools (fetched on first use, as `make install` does)."""
    out = subprocess.run(
        [str(K8S / "tools.sh")], check=True, capture_output=True, text=True, timeout=900
    )
    return Path(out.stdout.strip().splitlines()[-1])


def render(tools: Path, overlay: Path) -> list[Doc]:
    """The objects `kustomize build` makes of an overlay."""
    out = subprocess.run(
        [str(tools / "bin" / "kustomize"), "build", str(overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [d for d in yaml.load_all(out.stdout, Loader=yaml.CSafeLoader) if d]


@pytest.fixture(scope="module")
def rendered(tools: Path) -> dict[str, list[Doc]]:
    return {name: render(tools, K8S / "overlays" / name) for name in OVERLAYS}


def strict(schema: Any) -> Any:
    """A CRD's OpenAPI schema as JSON Schema that refuses unknown fields, as the API server's
    strict field validation does (pruning would drop them silently)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def crd_schemas(tools: Path) -> dict[CrdKey, Any]:
    """(apiVersion, kind) -> strict JSON Schema, for every served version of every CRD."""
    schemas: dict[CrdKey, Any] = {}
    for path in sorted((tools / "crds").glob("*.yaml")):
        # libyaml: the CRDs are 3 MB of YAML (Strimzi's Kafka alone 1.4 MB).
        for crd in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def read_exceptions(name: str) -> list[dict[str, str]]:
    """The entries of a file of deploy/k8s/checks; each must say why."""
    entries: list[dict[str, str]] = yaml.safe_load((K8S / "checks" / name).read_text())[
        "exceptions"
    ]
    for entry in entries:
        assert str(entry.get("reason", "")).strip(), f"{name}: {entry} gives no reason"
    return entries


def is_builtin(api_version: str) -> bool:
    """Whether Kubernetes itself serves this API group (core, apps, ..., *.k8s.io)."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def schema_errors(doc: Doc, crds: dict[CrdKey, Any], exempt: set[CrdKey]) -> list[str]:
    """What is wrong with one object against its schema (empty: valid)."""
    key = (doc["apiVersion"], doc["kind"])
    name = f"{doc['kind']}/{doc.get('metadata', {}).get('name')}"
    if is_builtin(doc["apiVersion"]):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [f"{name}: no Kubernetes schema for {key}"]
        except kubernetes_validate.ValidationError as error:
            return [f"{name}: {error.message} at {'/'.join(map(str, error.path))}"]
        return []
    if key in crds:
        validator = jsonschema.Draft7Validator(crds[key])
        return [
            f"{name}: {e.message} at {'/'.join(map(str, e.absolute_path))}"
            for e in validator.iter_errors(doc)
        ]
    if key in exempt:
        return []
    return [f"{name}: no CRD schema for {key} and no entry in checks/schema-exceptions.yaml"]


@pytest.fixture(scope="module")
def exempt() -> set[CrdKey]:
    return {(e["apiVersion"], e["kind"]) for e in read_exceptions("schema-exceptions.yaml")}


def of_kind(docs: list[Doc], kind: str) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] == kind)


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = (d for d in of_kind(docs, kind) if d["metadata"]["name"] == name)
    return doc


# ---- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_its_schema(
    rendered: dict[str, list[Doc]],
    crd_schemas: dict[CrdKey, Any],
    exempt: set[CrdKey],
    overlay: str,
) -> None:
    docs = rendered[overlay]
    assert {d["kind"] for d in docs} >= {
        "Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy",
        "ScaledObject", "TriggerAuthentication", "Kafka", "KafkaNodePool", "KafkaTopic",
        "KafkaUser",
        "MongoDBCommunity", "OpenTelemetryCollector",
    }  # fmt: skip
    errors = [e for d in docs for e in schema_errors(d, crd_schemas, exempt)]
    assert not errors, "\n".join(errors)


def test_a_misspelt_field_of_a_deployment_fails(
    rendered: dict[str, list[Doc]], crd_schemas: dict[CrdKey, Any], exempt: set[CrdKey]
) -> None:
    broken = copy.deepcopy(named(rendered["production"], "Deployment", "intake"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    (error,) = schema_errors(broken, crd_schemas, exempt)
    assert "readinesProbe" in error


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t["spec"].update(partitons=6), "partitons"),
        (lambda t: t["spec"].update(partitions="six"), "'six' is not of type 'integer'"),
    ],
    ids=["misspelt", "wrong-type"],
)
def test_a_broken_custom_resource_fails(
    rendered: dict[str, list[Doc]],
    crd_schemas: dict[CrdKey, Any],
    exempt: set[CrdKey],
    change: Any,
    expected: str,
) -> None:
    broken = copy.deepcopy(named(rendered["production"], "KafkaTopic", "case-submitted"))
    change(broken)
    (error,) = schema_errors(broken, crd_schemas, exempt)
    assert expected in error


def test_a_custom_kind_without_a_schema_fails(
    crd_schemas: dict[CrdKey, Any], exempt: set[CrdKey]
) -> None:
    unknown = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"}
    (error,) = schema_errors({**unknown, "metadata": {"name": "x"}}, crd_schemas, exempt)
    assert "no CRD schema" in error
    with_wrong_version = {"apiVersion": "keda.sh/v1", "kind": "ScaledObject", "metadata": {}}
    assert schema_errors(with_wrong_version, crd_schemas, exempt) != []


# ---- policies -----------------------------------------------------------------------------------

# A container that runs as root and may gain privileges: the policy checker must refuse it.
ROOT_CONTAINER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: as-root, namespace: broken}
spec:
  selector: {matchLabels: {app: as-root}}
  template:
    metadata: {labels: {app: as-root}}
    spec:
      securityContext: {runAsUser: 0}
      containers:
        - name: as-root
          image: example/as-root:1.0
          securityContext: {runAsUser: 0, allowPrivilegeEscalation: true}
"""


@pytest.fixture(scope="module")
def policy_findings(
    tools: Path, rendered: dict[str, list[Doc]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, set[str]]:
    """Failed checks not excused, per folder (each overlay, and `broken`), from one run of
    checkov (about 20 s)."""
    root = tmp_path_factory.mktemp("rendered")
    for overlay, docs in rendered.items():
        (root / overlay).mkdir()
        (root / overlay / "all.yaml").write_text(yaml.safe_dump_all(docs))
    (root / "broken").mkdir()
    (root / "broken" / "deployment.yaml").write_text(ROOT_CONTAINER)
    command = [str(tools / "checkov" / "bin" / "checkov"), "-d", str(root)]
    command += ["--framework", "kubernetes", "--output", "json", "--quiet", "--compact"]
    command += ["--skip-download"]  # no network: no guidelines or policies from a server
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    excused = {
        (e["check"], overlay)
        for e in read_exceptions("policy-exceptions.yaml")
        for overlay in e.get("overlays", OVERLAYS)
    }
    findings: dict[str, set[str]] = {"development": set(), "production": set(), "broken": set()}
    for failed in report["results"]["failed_checks"]:
        folder = Path(failed["file_path"]).parts[1]
        if (failed["check_id"], folder) not in excused:
            findings[folder].add(f"{failed['check_id']} {failed['resource']}")
    return findings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_policy_checker_finds_nothing_unexplained(
    policy_findings: dict[str, set[str]], overlay: str
) -> None:
    assert not policy_findings[overlay], "\n".join(sorted(policy_findings[overlay]))


def test_the_policy_checker_refuses_a_root_container(policy_findings: dict[str, set[str]]) -> None:
    checks = {finding.split()[0] for finding in policy_findings["broken"]}
    # CKV_K8S_20: privilege escalation; CKV_K8S_23: root containers; CKV_K8S_40: low user id.
    assert {"CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_40"} <= checks


# ---- the manifests say what the code says --------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topics_are_the_platforms(rendered: dict[str, list[Doc]], overlay: str) -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(rendered[overlay], "KafkaTopic")}
    replicas = {t["replicas"] for t in topics.values()}
    assert len(replicas) == 1
    (replication,) = replicas
    want = {s.name: s for s in topic_specs(replication)}
    assert set(topics) == set(want)
    for name, spec in topics.items():
        assert spec["partitions"] == want[name].partitions
        assert {k: str(v) for k, v in spec["config"].items()} == want[name].config


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_scales_on_its_own_consumer_group(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    for service in SERVICES:
        (trigger,) = named(docs, "ScaledObject", service)["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        # avis.shared.kafka names the group of a service `avis-<service>`.
        assert trigger["metadata"]["consumerGroup"] == f"avis-{service}"
        assert named(docs, "ScaledObject", service)["spec"]["scaleTargetRef"]["name"] == service


def the_broker(docs: list[Doc]) -> tuple[Doc, Doc]:
    """The Kafka cluster and the listener the services' bootstrap address (avis-common) names."""
    (kafka,) = of_kind(docs, "Kafka")
    host, _, port = named(docs, "ConfigMap", "avis-common")["data"][
        "AVIS_KAFKA_BOOTSTRAP"
    ].rpartition(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    (listener,) = (li for li in kafka["spec"]["kafka"]["listeners"] if li["port"] == int(port))
    return kafka, listener


def trigger_auth_params(docs: list[Doc], auth: Doc) -> dict[str, Any]:
    """What a TriggerAuthentication gives KEDA's scaler: a ConfigMap's value as is, a Secret's
    key as ("secret", name, key) (no Secret value is in the manifests)."""
    params: dict[str, Any] = {}
    for ref in auth["spec"].get("configMapTargetRef", []):
        params[ref["parameter"]] = named(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
    for ref in auth["spec"].get("secretTargetRef", []):
        params[ref["parameter"]] = ("secret", ref["name"], ref["key"])
    return params


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_reads_the_lag_as_the_services_kafka_user(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    kafka, listener = the_broker(docs)
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    bootstrap = named(docs, "ConfigMap", "avis-common")["data"]["AVIS_KAFKA_BOOTSTRAP"]
    for service in SERVICES:
        (trigger,) = named(docs, "ScaledObject", service)["spec"]["triggers"]
        # The same listener as the service, SCRAM-SHA-512 over TLS (KEDA's kafka scaler).
        assert trigger["metadata"]["bootstrapServers"] == bootstrap
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        ref = trigger["authenticationRef"]
        assert ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication"
        params = trigger_auth_params(docs, named(docs, "TriggerAuthentication", ref["name"]))
        # The service's own KafkaUser, whose ACLs describe its group and topics; the password
        # Strimzi's user operator writes for it; the cluster CA its cluster operator writes.
        user = named(docs, "KafkaUser", service)["metadata"]["name"]
        assert params == {
            "username": user,
            "password": ("secret", user, "password"),
            "ca": ("secret", f"{kafka['metadata']['name']}-cluster-ca-cert", "ca.crt"),
        }, service


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_as_its_kafka_user(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    kafka, listener = the_broker(docs)
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    ca_file = PurePosixPath(named(docs, "ConfigMap", "avis-common")["data"]["AVIS_KAFKA_CA_FILE"])
    for service in SERVICES:
        user = named(docs, "KafkaUser", service)
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        name = user["metadata"]["name"]
        # The user name the service takes: its own name unless its ConfigMap says otherwise.
        variable = f"AVIS_{service.upper()}_KAFKA"
        assert (
            named(docs, "ConfigMap", service)["data"].get(f"{variable}_USERNAME", service) == name
        )
        pod = named(docs, "Deployment", service)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert {"configMapRef": {"name": "avis-common"}} in container["envFrom"]
        assert {"configMapRef": {"name": service}} in container["envFrom"]
        env = {e["name"]: e for e in container["env"]}
        # The Secret Strimzi's user operator writes for the KafkaUser; not optional.
        assert env[f"{variable}_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": name, "key": "password"}
        }, service
        # The cluster CA, read-only, where AVIS_KAFKA_CA_FILE says.
        (mount,) = (
            m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == ca_file.parent
        )
        assert mount.get("readOnly") is True
        (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert"
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]


def anonymous_access(docs: list[Doc]) -> list[str]:
    """What lets a client use the broker without an identity, or an identity past its ACLs: a
    listener without authentication, no authorization, the anonymous principal as super user."""
    problems = []
    for kafka in of_kind(docs, "Kafka"):
        name, spec = kafka["metadata"]["name"], kafka["spec"]["kafka"]
        for listener in spec["listeners"]:
            if not listener.get("authentication"):
                problems.append(f"Kafka/{name}: listener {listener['name']} asks for no identity")
        if not spec.get("authorization"):
            problems.append(f"Kafka/{name}: no authorization, the KafkaUsers' ACLs do not apply")
        for user in spec.get("authorization", {}).get("superUsers", []):
            if user.removeprefix("User:").upper() == "ANONYMOUS":
                problems.append(f"Kafka/{name}: the anonymous principal is a super user")
    return problems


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_broker_lets_in_no_one_anonymous(rendered: dict[str, list[Doc]], overlay: str) -> None:
    assert not anonymous_access(rendered[overlay])


def test_an_anonymous_way_into_the_broker_fails(rendered: dict[str, list[Doc]]) -> None:
    (kafka,) = copy.deepcopy(list(of_kind(rendered["production"], "Kafka")))
    spec = kafka["spec"]["kafka"]
    spec["listeners"].append({"name": "plain", "port": 9092, "type": "internal", "tls": False})
    spec["authorization"]["superUsers"] = ["ANONYMOUS"]
    problems = anonymous_access([kafka])
    assert len(problems) == 2
    assert "listener plain asks for no identity" in problems[0]
    del spec["authorization"]
    assert any("no authorization" in p for p in anonymous_access([kafka]))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_services_reach_the_broker_on_its_listener_only(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    kafka, listener = the_broker(docs)
    cluster = kafka["metadata"]["name"]
    ports = {
        port["port"]
        for policy in of_kind(docs, "NetworkPolicy")
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if peer.get("podSelector", {}).get("matchLabels", {}).get("strimzi.io/cluster") == cluster
        for port in rule["ports"]
    }
    assert ports == {listener["port"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_is_probed_and_locked_down(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    for service, port in SERVICES.items():
        deployment = named(rendered[overlay], "Deployment", service)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"limits", "requests"} <= set(container["resources"])
        assert named(rendered[overlay], "PodDisruptionBudget", service)


def wiring(service: str) -> tuple[set[str], set[str]]:
    """The topics a service publishes and those it subscribes to, from its own composition root
    (the app is built, nothing is connected)."""
    settings = importlib.import_module(f"avis.{service}.settings").Settings(
        sealing_keys=f"k1:{base64.b64encode(bytes(32)).decode()}", jwt_secret="x" * 64
    )
    runtime = importlib.import_module(f"avis.{service}.main").create_app(settings).state.runtime
    sends = {EVENT_TYPES[t][0] for t in ce_types_of(runtime.sends)}
    return sends, set(runtime.receives)


def test_each_kafka_user_may_do_what_its_service_does_and_no_more(
    rendered: dict[str, list[Doc]],
) -> None:
    for service in SERVICES:
        sends, receives = wiring(service)
        granted: dict[tuple[str, str], set[str]] = {}
        for acl in named(rendered["production"], "KafkaUser", service)["spec"]["authorization"][
            "acls"
        ]:
            assert acl["resource"]["patternType"] == "literal"
            key = (acl["resource"]["type"], acl["resource"]["name"])
            granted.setdefault(key, set()).update(acl["operations"])
        writes = {
            name for (kind, name), ops in granted.items() if kind == "topic" and "Write" in ops
        }
        reads = {name for (kind, name), ops in granted.items() if kind == "topic" and "Read" in ops}
        # It writes what it owns and the dead letters of what it reads.
        assert writes == sends | {dlq(t) for t in receives}, service
        assert reads == receives, service
        assert granted[("group", f"avis-{service}")] == {"Read", "Describe"}
        assert granted[("group", "avis-dlq-replay")] == {"Describe"}
        assert {k for k in granted if k[0] == "group"} == {
            ("group", f"avis-{service}"),
            ("group", "avis-dlq-replay"),
        }


def secrets_read(node: Any) -> Iterator[str]:
    """The names of the Secrets objects read: in env (`secretKeyRef`), as volumes (`secret`),
    through the MongoDB operator (`passwordSecretRef`) and KEDA (`secretTargetRef`)."""
    if isinstance(node, list):
        for item in node:
            yield from secrets_read(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretKeyRef", "passwordSecretRef"):
                yield value["name"]
            elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                yield value["secretName"]
            elif key == "secretTargetRef":
                yield from (ref["name"] for ref in value)
            yield from secrets_read(value)


def referenced_secrets(docs: list[Doc]) -> set[str]:
    """The Secrets the manifests name and that something outside must create: not those the
    operators write from the manifests' own resources (the MongoDB operator each user's
    connection string; Strimzi's user operator each KafkaUser's password, in a Secret of the
    user's name; its cluster operator the cluster CA, `<cluster>-cluster-ca-cert`)."""
    written_by_operators = {
        s["connectionStringSecretName"]
        for m in of_kind(docs, "MongoDBCommunity")
        for s in m["spec"]["users"]
    }
    written_by_operators |= {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
    written_by_operators |= {
        f"{k['metadata']['name']}-cluster-ca-cert" for k in of_kind(docs, "Kafka")
    }
    return set(secrets_read(docs)) - written_by_operators


def test_a_secret_no_operator_writes_must_be_created_outside(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = copy.deepcopy(rendered["development"])
    before = referenced_secrets(docs)
    assert {"avis-platform", "avis-notify-smtp"} <= before
    # Read by every Deployment, written by Strimzi's operators.
    assert not before & {*SERVICES, "avis-cluster-ca-cert"}
    pod = named(docs, "Deployment", "intake")["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "x", "secret": {"secretName": "avis-extra-volume"}})
    auth = named(docs, "TriggerAuthentication", "intake-kafka")["spec"]
    auth["secretTargetRef"].append({"parameter": "cert", "name": "avis-extra-cert", "key": "c"})
    assert referenced_secrets(docs) == before | {"avis-extra-volume", "avis-extra-cert"}


def test_the_readme_tells_how_to_run_it(rendered: dict[str, list[Doc]]) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run on Kubernetes", 1)[1].split("\n## ", 1)[0]
    assert "kubectl apply -k deploy/k8s/overlays/development" in section
    namespace = named(rendered["development"], "Namespace", "avis-dev")["metadata"]["name"]
    assert f"-n {namespace}" in section
    for secret in referenced_secrets(rendered["development"]):
        assert f"`{secret}`" in section, f"the README does not say how to create {secret}"
