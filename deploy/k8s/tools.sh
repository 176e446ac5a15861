#!/usr/bin/env bash
# The tools of the offline Kubernetes checks (tests/deploy/test_k8s.py), cached in $AVIS_CACHE/k8s
# once, each in a folder named by its version. Prints the folder that holds them:
#
#   <dir>/bin/kustomize            kustomize, built from the Go module proxy
#   <dir>/crds/*.yaml              the CustomResourceDefinitions of the operators we rely on
#   <dir>/checkov/bin/checkov      the policy checker, in a virtual environment of its own
#
# The CRDs come from the registries this project reaches (no download site):
#   KEDA, the OpenTelemetry operator, the MongoDB community operator: their Go modules ship
#   config/crd/bases/*.yaml, fetched with `go mod download`;
#   Strimzi: its Java API model (io.strimzi:api on Maven Central) carries no CRD yaml, so the
#   CRDs are generated from it by Strimzi's own generator (io.strimzi:crd-generator), as
#   Strimzi's build does. Both are pinned in strimzi-crds/pom.xml.
# checkov pins many libraries of its own, so it lives in its own environment, not in uv.lock.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
KUSTOMIZE_VERSION="v5.8.0"
KEDA_VERSION="v2.18.0"
OTEL_OPERATOR_VERSION="v0.129.1"
MONGODB_OPERATOR_VERSION="v0.13.0"
STRIMZI_VERSION="$(sed -n 's:.*<strimzi.version>\(.*\)</strimzi.version>.*:\1:p' "$here/strimzi-crds/pom.xml")"
CHECKOV_VERSION="3.3.30"
UV_VERSION="0.13.8"
DIR="$CACHE/k8s"
CRDS="$DIR/crds/keda-$KEDA_VERSION.otel-$OTEL_OPERATOR_VERSION.mongodb-$MONGODB_OPERATOR_VERSION.strimzi-$STRIMZI_VERSION"
OUT="$DIR/kustomize-$KUSTOMIZE_VERSION.checkov-$CHECKOV_VERSION.$(basename "$CRDS")"

log() { printf '[k8s-tools] %s\n' "$*" >&2; }

kustomize() {
  local bin="$DIR/kustomize-$KUSTOMIZE_VERSION/kustomize"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || { echo "go is required to build kustomize" >&2; exit 1; }
    log "building kustomize $KUSTOMIZE_VERSION"
    mkdir -p "$(dirname "$bin")"
    GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$(dirname "$bin").tmp" \
      go install -trimpath "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2
    mv "$(dirname "$bin").tmp/kustomize" "$bin"; rm -rf "$(dirname "$bin").tmp"
  fi
  echo "$bin"
}

# The folder of a Go module's source, fetched through the module proxy.
go_module() {
  local dir status=0; dir="$(mktemp -d)"
  (cd "$dir" && GOFLAGS=-mod=mod go mod download -json "$1" \
     | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["Dir"])') \
    || status=$?
  rmdir "$dir"; return "$status"
}

crds() {
  if [ -f "$CRDS/.complete" ]; then echo "$CRDS"; return; fi
  command -v go >/dev/null || { echo "go is required to fetch the operators' CRDs" >&2; exit 1; }
  command -v mvn >/dev/null || { echo "mvn is required to fetch Strimzi's API model" >&2; exit 1; }
  log "fetching the CRDs of KEDA, OpenTelemetry, MongoDB and Strimzi"
  rm -rf "$CRDS.tmp"; mkdir -p "$CRDS.tmp"
  local src
  src="$(go_module "github.com/kedacore/keda/v2@$KEDA_VERSION")"
  cp "$src"/config/crd/bases/keda.sh_*.yaml "$CRDS.tmp/"
  src="$(go_module "github.com/open-telemetry/opentelemetry-operator@$OTEL_OPERATOR_VERSION")"
  cp "$src"/config/crd/bases/opentelemetry.io_*.yaml "$CRDS.tmp/"
  src="$(go_module "github.com/mongodb/mongodb-kubernetes-operator@$MONGODB_OPERATOR_VERSION")"
  cp "$src"/config/crd/bases/mongodbcommunity.mongodb.com_*.yaml "$CRDS.tmp/"
  local libs="$DIR/strimzi-$STRIMZI_VERSION-libs"
  if [ ! -f "$libs/.complete" ]; then
    rm -rf "$libs"
    # A Maven repository of its own: make install runs this beside the Kafka and Zipkin fetches,
    # and two Mavens writing one repository at once can leave a broken file in it.
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="$DIR/m2" -f "$here/strimzi-crds/pom.xml" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" >&2
    touch "$libs/.complete"
  fi
  local model="io.strimzi.api.kafka.model"
  java -cp "$libs/*" io.strimzi.crdgenerator.CrdGenerator --yaml \
    "$model.kafka.Kafka=$CRDS.tmp/kafka.strimzi.io_kafkas.yaml" \
    "$model.nodepool.KafkaNodePool=$CRDS.tmp/kafka.strimzi.io_kafkanodepools.yaml" \
    "$model.topic.KafkaTopic=$CRDS.tmp/kafka.strimzi.io_kafkatopics.yaml" \
    "$model.user.KafkaUser=$CRDS.tmp/kafka.strimzi.io_kafkausers.yaml" > "$CRDS.log" 2>&1 \
    || { cat "$CRDS.log" >&2; exit 1; }
  rm -f "$CRDS.log"
  chmod -R u+w "$CRDS.tmp"
  rm -rf "$CRDS"; mv "$CRDS.tmp" "$CRDS"; touch "$CRDS/.complete"
  echo "$CRDS"
}

checkov() {
  local venv="$DIR/checkov-$CHECKOV_VERSION"
  if [ ! -f "$venv/.complete" ]; then
    local uv="$CACHE/uv-$UV_VERSION/bin/uv"
    [ -x "$uv" ] || { echo "uv $UV_VERSION is required (make install)" >&2; exit 1; }
    log "installing checkov $CHECKOV_VERSION"
    # Built where it will live (a virtual environment's scripts name its folder); the marker
    # says it is whole.
    rm -rf "$venv"
    "$uv" venv -q --python python3 "$venv" >&2
    VIRTUAL_ENV="$venv" "$uv" pip install -q "checkov==$CHECKOV_VERSION" >&2
    touch "$venv/.complete"
  fi
  echo "$venv"
}

if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
k="$(kustomize)"; c="$(crds)"; v="$(checkov)"
rm -rf "$OUT"; mkdir -p "$OUT/bin"
ln -s "$k" "$OUT/bin/kustomize"; ln -s "$c" "$OUT/crds"; ln -s "$v" "$OUT/checkov"
touch "$OUT/.complete"
echo "$OUT"
