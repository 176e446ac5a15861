#!/usr/bin/env bash
# The metrics store of the Docker-free stack: VictoriaMetrics (Apache-2.0) built from the Go module
# proxy into $AVIS_CACHE/victoriametrics once: the single-node server (`victoria-metrics`, with its
# web UI vmui, which reads the dashboards of deploy/metrics/dashboards), `vmalert` (evaluates
# deploy/metrics/rules against it) and `vmalert-tool` (the rules' unit tests, `make test`).
#
#   deploy/metrics/install.sh          build if missing, print the folder of the three binaries
#   deploy/metrics/install.sh server   the same for the two that `make run` starts (vmalert-tool
#                                      is built by `make install-test`, from the same build cache)
#   deploy/metrics/install.sh start    start the store, vmalert and the alert receiver (pids in $STATE)
#   deploy/metrics/install.sh stop     stop what start started
#
# Ports: AVIS_METRICS_PORT (store and vmui, 8428), AVIS_VMALERT_PORT (8880), AVIS_ALERTS_PORT
# (the receiver, 9093 being Kafka's controller here: 8429). The store scrapes what
# deploy/metrics/scrape.sh writes from the AVIS_*_PORT variables of the same shell (every
# AVIS_SCRAPE_INTERVAL, 10s). vmalert reads AVIS_VMALERT_RULES (deploy/metrics/rules/*.yml; the
# tests give it copies with short windows) and evaluates 5 s back, as the store answers queries
# (-search.latencyOffset).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
VERSION="${VICTORIAMETRICS_VERSION:-v1.151.0}"
DIR="$CACHE/victoriametrics/$VERSION"
SERVERS=(victoria-metrics vmalert)
STATE="${AVIS_STATE_DIR:-$root/.local/run}"
PORT="${AVIS_METRICS_PORT:-8428}"
VMALERT_PORT="${AVIS_VMALERT_PORT:-8880}"
ALERTS_PORT="${AVIS_ALERTS_PORT:-8429}"
PYTHON="${AVIS_PYTHON:-python3}"

log() { printf '[metrics] %s\n' "$*" >&2; }
# install APP...: build the APPs missing from $DIR (each moved in once all of them are built),
# print $DIR.
install() {
  local missing=() a
  for a in "$@"; do [ -x "$DIR/$a" ] || missing+=("$a"); done
  if [ ${#missing[@]} -eq 0 ]; then echo "$DIR"; return; fi
  command -v go >/dev/null || { log "go is required to build VictoriaMetrics"; exit 1; }
  local src pkgs=()
  export GOFLAGS=-mod=mod
  src="$(cd "$(mktemp -d)" && go mod download -json "github.com/VictoriaMetrics/VictoriaMetrics@$VERSION" \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  for a in "${missing[@]}"; do pkgs+=("./app/$a"); done
  rm -rf "$DIR.tmp"; mkdir -p "$DIR.tmp" "$DIR"
  log "building VictoriaMetrics $VERSION (${missing[*]}) into $DIR, once"
  # -p 2: the machine is shared; the build is about as fast and leaves room for the other installs.
  # -dwarf=false: no debug information compiled (the link drops it anyway: -w).
  (cd "$src" && CGO_ENABLED=0 go build -p "${AVIS_GO_BUILD_JOBS:-2}" -trimpath -gcflags=all=-dwarf=false \
     -ldflags "-s -w -X github.com/VictoriaMetrics/VictoriaMetrics/lib/buildinfo.Version=avis-$VERSION" \
     -o "$DIR.tmp/" "${pkgs[@]}")
  for a in "${missing[@]}"; do mv "$DIR.tmp/$a" "$DIR/$a"; done
  rm -rf "$DIR.tmp"
  echo "$DIR"
}

# shellcheck source=../local/procs.sh
source "$here/../local/procs.sh"
alive() { pid_alive "$STATE/$1.pid"; }
free() { if port_open "$2"; then log "port $2 for $1 is taken by another process"; exit 1; fi; }

start() {
  local bin data="$STATE/metrics"
  bin="$(install "${SERVERS[@]}")"
  mkdir -p "$data"
  "$here/scrape.sh" > "$data/scrape.yml"
  if ! alive victoriametrics; then
    free victoriametrics "$PORT"
    nohup "$bin/victoria-metrics" -httpListenAddr="127.0.0.1:$PORT" -storageDataPath="$data/data" \
      -retentionPeriod=7d -promscrape.config="$data/scrape.yml" -promscrape.config.strictParse=true \
      -vmui.customDashboardsPath="$here/dashboards" -search.latencyOffset=5s \
      -vmalert.proxyURL="http://127.0.0.1:$VMALERT_PORT" \
      -loggerLevel=WARN > "$data/victoria-metrics.log" 2>&1 &
    echo $! > "$STATE/victoriametrics.pid"
  fi
  if ! alive alert-receiver; then
    free alert-receiver "$ALERTS_PORT"
    nohup "$PYTHON" "$here/alert_receiver.py" --port "$ALERTS_PORT" --file "$data/alerts.jsonl" \
      > "$data/alert-receiver.log" 2>&1 &
    echo $! > "$STATE/alert-receiver.pid"
  fi
  if ! alive vmalert; then
    free vmalert "$VMALERT_PORT"
    nohup "$bin/vmalert" -httpListenAddr="127.0.0.1:$VMALERT_PORT" -rule="${AVIS_VMALERT_RULES:-$here/rules/*.yml}" \
      -datasource.url="http://127.0.0.1:$PORT" -remoteWrite.url="http://127.0.0.1:$PORT" \
      -remoteRead.url="http://127.0.0.1:$PORT" -notifier.url="http://127.0.0.1:$ALERTS_PORT" \
      -evaluationInterval="${AVIS_VMALERT_INTERVAL:-15s}" -rule.evalDelay=5s \
      -external.url="http://127.0.0.1:$PORT" -loggerLevel=WARN > "$data/vmalert.log" 2>&1 &
    echo $! > "$STATE/vmalert.pid"
  fi
  log "VictoriaMetrics on http://127.0.0.1:$PORT/vmui, vmalert on :$VMALERT_PORT, alerts to :$ALERTS_PORT"
}

stop() {
  local s
  for s in vmalert alert-receiver victoriametrics; do stop_pid "$STATE/$s.pid" || true; done
}

case "${1:-install}" in
  install) install "${SERVERS[@]}" vmalert-tool ;;
  server) install "${SERVERS[@]}" ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: install.sh [install|server|start|stop]" >&2; exit 2 ;;
esac
