#!/usr/bin/env bash
# The tracing UI of the Docker-free stack: Zipkin's server (one self-contained jar from Maven
# Central, ~131 MB, Java 17), cached in $AVIS_CACHE/zipkin once. Prints the jar's path.
#
#   deploy/tracing/install.sh          fetch if missing, print the jar
#   deploy/tracing/install.sh start    start it on 127.0.0.1:$AVIS_ZIPKIN_PORT (pid in $STATE)
#   deploy/tracing/install.sh stop     stop what start started
#
# Zipkin keeps traces in memory (the newest 200,000 spans): restarting it empties it.
set -euo pipefail
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
VERSION="3.5.1"
DIR="$CACHE/zipkin/$VERSION"
JAR="$DIR/zipkin-server-$VERSION-exec.jar"
STATE="${AVIS_STATE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.local/run}"
PORT="${AVIS_ZIPKIN_PORT:-9411}"

log() { printf '[tracing] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=../local/procs.sh
source "$(dirname "$0")/../local/procs.sh"

install() {
  if [ -f "$JAR" ]; then echo "$JAR"; return; fi
  command -v mvn >/dev/null || die "mvn is required to fetch Zipkin"
  mkdir -p "$DIR"
  mvn -q -B dependency:copy -Dartifact="io.zipkin:zipkin-server:$VERSION:jar:exec" \
      -DoutputDirectory="$DIR.tmp" >&2
  mv "$DIR.tmp/zipkin-server-$VERSION-exec.jar" "$JAR"; rm -rf "$DIR.tmp"
  echo "$JAR"
}

start() {
  local jar pidfile="$STATE/zipkin.pid"
  jar="$(install)"
  mkdir -p "$STATE/zipkin"
  if pid_alive "$pidfile"; then return; fi
  if port_open "$PORT"; then die "port $PORT for zipkin is taken by another process"; fi
  MEM_MAX_SPANS=200000 nohup java -Xms64m -Xmx384m -XX:+UseSerialGC -jar "$jar" \
    --server.port="$PORT" --armeria.ports[0].ip=127.0.0.1 \
    --armeria.ports[0].port="$PORT" --armeria.ports[0].protocols[0]=http --logging.level.root=WARN \
    > "$STATE/zipkin/zipkin.log" 2>&1 &
  echo $! > "$pidfile"
  log "zipkin starting (pid $!) on http://127.0.0.1:$PORT"
}

stop() { stop_pid "$STATE/zipkin.pid" || true; }

case "${1:-install}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: install.sh [install|start|stop]" >&2; exit 2 ;;
esac
