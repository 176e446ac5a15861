#!/usr/bin/env bash
# `make run`: Kafka, FerretDB, the SMTP sink and the four services, until Ctrl-C.
#
# One `make run` per state directory: a second one refuses at once and touches nothing. On exit it
# stops only what it started itself (infrastructure already up, e.g. from `make infra-start`, stays).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export AVIS_STATE_DIR="${AVIS_STATE_DIR:-$root/.local/run}"
infra="deploy/local/infra.sh"
py="${AVIS_PYTHON:-.venv/bin/python}"
lock="$AVIS_STATE_DIR/run.pid"

say() { printf '[run] %s\n' "$*" >&2; }
refuse() { say "$*"; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The pid recorded in the lock, if that process is still a `make run`.
holder() {
  local pid
  pid="$(cat "$lock" 2>/dev/null)" || return 1
  [ -n "$pid" ] && ps -p "$pid" -o args= 2>/dev/null | grep -q 'deploy/local/run.sh' && echo "$pid"
}
# Create the lock atomically: of two runs starting together, one wins.
claim() { (set -o noclobber; echo "$$" > "$lock") 2>/dev/null; }

mkdir -p "$AVIS_STATE_DIR"
if ! claim; then
  if other="$(holder)"; then
    refuse "Avis is already running here, pid $other; see \`make infra-status\`. Nothing was started or stopped."
  fi
  rm -f "$lock"  # left by a run that did not exit cleanly
  claim || refuse "another \`make run\` is starting here; see \`make infra-status\`."
fi

started=()
tracing=0
cleanup() {
  if [ "$tracing" = 1 ]; then "$root/deploy/tracing/install.sh" stop || true; fi
  if [ ${#started[@]} -gt 0 ]; then "$infra" stop "${started[@]}" || true; fi
  rm -f "$lock"
}
trap cleanup EXIT

for port in "${AVIS_INTAKE_HTTP_PORT:-8001}" "${AVIS_REVIEW_HTTP_PORT:-8002}" \
  "${AVIS_REPORTS_HTTP_PORT:-8003}" "${AVIS_NOTIFY_HTTP_PORT:-8004}"; do
  if port_open "$port"; then
    refuse "port $port, where a service would listen, is taken by another process (another checkout's \`make run\`?). Nothing was started."
  fi
done
for s in kafka ferretdb smtp; do
  if [ "$("$infra" status "$s")" = "$s: down" ]; then
    started+=("$s")
    "$infra" start "$s"
  else
    say "$s is already up (\`make infra-start\`?): used as is, and left up on exit"
  fi
done
# --- tracing UI (deploy/tracing/install.sh): Zipkin on 127.0.0.1:${AVIS_ZIPKIN_PORT:-9411} ---
"$root/deploy/tracing/install.sh" start && tracing=1
export AVIS_OTEL_EXPORTER="${AVIS_OTEL_EXPORTER:-zipkin}"
export AVIS_OTEL_ENDPOINT="${AVIS_OTEL_ENDPOINT:-http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}}"
# --- end tracing UI ---
"$infra" wait
set -a
# shellcheck disable=SC1090
source <(deploy/local/dev-env.sh "$AVIS_STATE_DIR" "$py")
AVIS_KAFKA_BOOTSTRAP="127.0.0.1:${AVIS_KAFKA_PORT:-9092}"
AVIS_MONGO_URL="mongodb://127.0.0.1:${AVIS_MONGO_PORT:-27017}"
AVIS_SMTP_URL="smtp://127.0.0.1:${AVIS_SMTP_PORT:-1025}"
AVIS_LOG_FORMAT="${AVIS_LOG_FORMAT:-console}"
# the development stack starts with the seeded reviewer directory (empty directories only)
AVIS_REVIEW_SEED_REVIEWERS="${AVIS_REVIEW_SEED_REVIEWERS:-true}"
set +a
"$py" -m avis.shared.topics
cat <<TXT

Avis is starting (pid $$). Everything listens on 127.0.0.1:
  intake   http://127.0.0.1:${AVIS_INTAKE_HTTP_PORT:-8001}   (docs: /docs, events: /asyncapi.json)
  review   http://127.0.0.1:${AVIS_REVIEW_HTTP_PORT:-8002}
  reports  http://127.0.0.1:${AVIS_REPORTS_HTTP_PORT:-8003}
  notify   http://127.0.0.1:${AVIS_NOTIFY_HTTP_PORT:-8004}
  traces   http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}/zipkin/   (search a case: tag avis.case_reference=AV-...)
  Kafka    $AVIS_KAFKA_BOOTSTRAP    FerretDB $AVIS_MONGO_URL    SMTP sink $AVIS_SMTP_URL
  state    $AVIS_STATE_DIR (mail kept in smtp/mail, broker log in kafka/logs)
  a token  .venv/bin/avis-token --sub patient-1 --role patient   (with AVIS_JWT_SECRET from $AVIS_STATE_DIR/dev.env)
Ctrl-C stops everything.

TXT
.venv/bin/honcho -f deploy/local/Procfile -d "$root" start
