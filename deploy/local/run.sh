#!/usr/bin/env bash
# `make run`: Kafka, FerretDB, the SMTP sink, Zipkin, the metrics store (VictoriaMetrics, with
# vmalert and the alert receiver), the OpenID provider (Hydra), the key server (PyKMIP), the lag
# exporter, the four services and the web pages, until Ctrl-C.
#
# One `make run` per state directory: a second one refuses at once and touches nothing. It says
# once when everything answers; on Ctrl-C it stops only what it started itself (infrastructure
# already up, e.g. from `make infra-start`, stays), says so in one line and exits with status 0.
# Every port moves with its AVIS_*_PORT variable and the state with AVIS_STATE_DIR.
set -euo pipefail
started_at="$(date +%s.%N)"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export AVIS_STATE_DIR="${AVIS_STATE_DIR:-$root/.local/run}"
infra="deploy/local/infra.sh"
py="${AVIS_PYTHON:-.venv/bin/python}"
lock="$AVIS_STATE_DIR/run.pid"

say() { printf '[run] %s\n' "$*" >&2; }
# Where another shell finds this run's state folder (`make infra-status`), whatever AVIS_STATE_DIR it has.
runs="$root/.local/runs"
refuse() { say "$*"; exit 1; }
# shellcheck source=procs.sh
source "$root/deploy/local/procs.sh"
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

mkdir -p "$runs"
echo "$AVIS_STATE_DIR" > "$runs/$$"

started=()
kept=()
tracing=0
metrics=0
oidc=0
kratos=0
kms=0
# Stop what this run started; the parts' own "stopped" lines give way to the one summary.
cleanup() {
  # The key server takes about 2 s to stop: beside the others.
  local kms_stop=""
  if [ "$kms" = 1 ]; then "$root/deploy/kms/install.sh" stop & kms_stop=$!; kms=0; fi
  if [ "$tracing" = 1 ]; then "$root/deploy/tracing/install.sh" stop || true; tracing=0; fi
  if [ "$metrics" = 1 ]; then "$root/deploy/metrics/install.sh" stop || true; metrics=0; fi
  if [ "$oidc" = 1 ]; then "$root/deploy/oidc/install.sh" stop || true; oidc=0; fi
  if [ "$kratos" = 1 ]; then "$root/deploy/oidc/kratos.sh" stop || true; kratos=0; fi
  if [ ${#started[@]} -gt 0 ]; then
    "$infra" stop "${started[@]}" 2>&1 | grep -v ' stopped$' >&2 || true
  fi
  if [ -n "$kms_stop" ]; then wait "$kms_stop" || true; fi
  rm -f "$lock" "$runs/$$"
}
trap cleanup EXIT

# FerretDB's own metrics, for the metrics store (infra.sh starts its debug listener there).
export AVIS_FERRETDB_METRICS_PORT="${AVIS_FERRETDB_METRICS_PORT:-8089}"
export AVIS_LAG_PORT="${AVIS_LAG_PORT:-8005}"
for port in "${AVIS_WEB_HTTP_PORT:-8000}" "${AVIS_INTAKE_HTTP_PORT:-8001}" \
  "${AVIS_REVIEW_HTTP_PORT:-8002}" "${AVIS_REPORTS_HTTP_PORT:-8003}" "${AVIS_NOTIFY_HTTP_PORT:-8004}" \
  "$AVIS_LAG_PORT"; do
  if port_open "$port"; then
    refuse "port $port, where a service would listen, is taken by another process (another checkout's \`make run\`?). Nothing was started."
  fi
done
for s in kafka ferretdb smtp; do
  if [ "$("$infra" status "$s")" = "$s: down" ]; then
    started+=("$s")
    "$infra" start "$s"
  else
    kept+=("$s")
    say "$s is already up (\`make infra-start\`?): used as is, and left up on exit"
  fi
done
# --- tracing UI (deploy/tracing/install.sh): Zipkin on 127.0.0.1:${AVIS_ZIPKIN_PORT:-9411} ---
"$root/deploy/tracing/install.sh" start && tracing=1
export AVIS_OTEL_EXPORTER="${AVIS_OTEL_EXPORTER:-zipkin}"
export AVIS_OTEL_ENDPOINT="${AVIS_OTEL_ENDPOINT:-http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}}"
# --- end tracing UI ---
# --- metrics store (deploy/metrics/install.sh): VictoriaMetrics, vmalert, the alert receiver ---
"$root/deploy/metrics/install.sh" start && metrics=1
# --- end metrics store ---
# --- OpenID provider (deploy/oidc/install.sh): Hydra on 127.0.0.1:${AVIS_OIDC_PORT:-4444} ---
"$root/deploy/oidc/install.sh" start && oidc=1
# People's identities and passwords: Kratos on 127.0.0.1:${AVIS_KRATOS_PORT:-4433}. Its
# migration, start and seeding (a few seconds on a new state folder: the passwords' hashes, the
# professionals' TOTP enrolment) run beside the broker's start.
kratos=1
{ "$root/deploy/oidc/kratos.sh" start && "$root/deploy/oidc/kratos.sh" wait; } & kratos_up=$!
# --- end OpenID provider ---
# --- key server (deploy/kms/install.sh): PyKMIP on 127.0.0.1:${AVIS_KMS_PORT:-5696} ---
"$root/deploy/kms/install.sh" start && kms=1
# It answers a key's creation, reading and destruction; its wait (mostly Python importing
# PyKMIP, about 3 s) runs beside the broker's start and Hydra's.
"$root/deploy/kms/install.sh" wait & kms_wait=$!
# --- end key server ---
"$infra" wait
# Hydra answers; the development partners' clients are seeded (once per state folder).
"$root/deploy/oidc/install.sh" wait
# Kratos answers; the development people are seeded (once per state folder).
wait "$kratos_up"
wait "$kms_wait"
set -a
# shellcheck disable=SC1090
source <(deploy/local/dev-env.sh "$AVIS_STATE_DIR" "$py")
# The broker's passwords (infra.sh made them with its storage): each service connects as its
# own Kafka user, the topics, ACLs and lag tools as the administrator.
# shellcheck disable=SC1091
source "$AVIS_STATE_DIR/kafka/users.env"
# The key service and each service's own certificate there (not used by the services yet).
# shellcheck disable=SC1090
source <("$root/deploy/kms/install.sh" env)
AVIS_KAFKA_BOOTSTRAP="127.0.0.1:${AVIS_KAFKA_PORT:-9092}"
AVIS_MONGO_URL="mongodb://127.0.0.1:${AVIS_MONGO_PORT:-27017}"
AVIS_SMTP_URL="smtp://127.0.0.1:${AVIS_SMTP_PORT:-1025}"
# Coloured console lines on a terminal; plain JSON lines when written to a file or a pipe.
if [ -t 1 ]; then AVIS_LOG_FORMAT="${AVIS_LOG_FORMAT:-console}"; else AVIS_LOG_FORMAT="${AVIS_LOG_FORMAT:-json}"; fi
# Development: the services take the HS256 tokens of `avis-token` (signed with dev.env's
# secret), which production refuses. The walkthroughs mint 8-hour tokens, so a person can follow
# them in one sitting; production keeps tokens to an hour.
AVIS_ENV=development
AVIS_JWT_MAX_LIFETIME_SECONDS="${AVIS_JWT_MAX_LIFETIME_SECONDS:-28800}"
# Beside them, the OpenID provider's access tokens (a partner's machine, by client credentials),
# checked against its keys; its tokens say typ JWT, so their client_id claim marks them.
AVIS_JWT_ISSUER="http://127.0.0.1:${AVIS_OIDC_PORT:-4444}/"
AVIS_JWT_JWKS="${AVIS_JWT_ISSUER}.well-known/jwks.json"
AVIS_JWT_ACCESS_TOKEN_MARK=client_id
# web's token hook: the key Hydra presents, which client is which partner's machine, and which
# clients are services' machines (role service).
# shellcheck disable=SC1091
source "$AVIS_STATE_DIR/oidc/hook.env"
AVIS_WEB_PARTNER_CLIENTS="$("$root/deploy/oidc/install.sh" partners)"
AVIS_WEB_SERVICE_CLIENTS="$("$root/deploy/oidc/install.sh" services)"
# the development stack starts with the seeded reviewer directory (empty directories only)
AVIS_REVIEW_SEED_REVIEWERS="${AVIS_REVIEW_SEED_REVIEWERS:-true}"
# Development only (notify refuses it in production): webhooks to a receiver on this machine
# over http:// (walkthrough part 5).
AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK="${AVIS_NOTIFY_WEBHOOK_ALLOW_HTTP_LOOPBACK:-true}"
# Development: the web pages sign people in as seeded identities with development tokens.
AVIS_ENV="${AVIS_ENV:-development}"
# People sign in at the OpenID provider (Hydra), their passwords and codes checked by Kratos:
# the seeded people of $AVIS_STATE_DIR/kratos/people.json. AVIS_WEB_SIGNIN=development keeps the
# choice of seeded identities instead.
AVIS_WEB_SIGNIN="${AVIS_WEB_SIGNIN:-oidc}"
AVIS_WEB_PUBLIC_URL="http://127.0.0.1:${AVIS_WEB_HTTP_PORT:-8000}"
AVIS_WEB_OIDC_ISSUER="$AVIS_JWT_ISSUER"
AVIS_WEB_OIDC_ADMIN_URL="http://127.0.0.1:${AVIS_OIDC_ADMIN_PORT:-4445}"
AVIS_WEB_IDENTITY_URL="http://127.0.0.1:${AVIS_KRATOS_PORT:-4433}"
AVIS_WEB_IDENTITY_ADMIN_URL="http://127.0.0.1:${AVIS_KRATOS_ADMIN_PORT:-4434}"
AVIS_WEB_INTAKE_URL="http://127.0.0.1:${AVIS_INTAKE_HTTP_PORT:-8001}"
AVIS_WEB_REVIEW_URL="http://127.0.0.1:${AVIS_REVIEW_HTTP_PORT:-8002}"
AVIS_WEB_REPORTS_URL="http://127.0.0.1:${AVIS_REPORTS_HTTP_PORT:-8003}"
AVIS_WEB_NOTIFY_URL="http://127.0.0.1:${AVIS_NOTIFY_HTTP_PORT:-8004}"
set +a
"$py" -m avis.shared.topics
"$py" deploy/kafka/acls.py
ports=(web "${AVIS_WEB_HTTP_PORT:-8000}" intake "${AVIS_INTAKE_HTTP_PORT:-8001}"
       review "${AVIS_REVIEW_HTTP_PORT:-8002}" reports "${AVIS_REPORTS_HTTP_PORT:-8003}" notify "${AVIS_NOTIFY_HTTP_PORT:-8004}")
ready=()
for ((i = 0; i < ${#ports[@]}; i += 2)); do
  ready+=(--ready "${ports[i]}=http://127.0.0.1:${ports[i + 1]}/readyz")
done
if [ "$tracing" = 1 ]; then ready+=(--ready "traces=http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}/health"); fi
if [ "$oidc" = 1 ]; then ready+=(--ready "oidc=http://127.0.0.1:${AVIS_OIDC_PORT:-4444}/health/ready"); fi
if [ "$kratos" = 1 ]; then ready+=(--ready "identities=http://127.0.0.1:${AVIS_KRATOS_PORT:-4433}/health/ready"); fi
ready+=(--ready "lag=http://127.0.0.1:$AVIS_LAG_PORT/metrics")
if [ "$metrics" = 1 ]; then
  ready+=(--ready "metrics=http://127.0.0.1:${AVIS_METRICS_PORT:-8428}/health"
          --ready "alerts=http://127.0.0.1:${AVIS_VMALERT_PORT:-8880}/health")
fi
cat <<TXT

Avis is starting (pid $$). Everything listens on 127.0.0.1:
  web      http://127.0.0.1:${AVIS_WEB_HTTP_PORT:-8000}   (the pages: sign in as patient-1@avis.local, ...; passwords and codes' secrets in $AVIS_STATE_DIR/kratos/people.json)
  intake   http://127.0.0.1:${AVIS_INTAKE_HTTP_PORT:-8001}   (docs: /docs, events: /asyncapi.json)
  review   http://127.0.0.1:${AVIS_REVIEW_HTTP_PORT:-8002}
  reports  http://127.0.0.1:${AVIS_REPORTS_HTTP_PORT:-8003}
  notify   http://127.0.0.1:${AVIS_NOTIFY_HTTP_PORT:-8004}   (webhooks to http://127.0.0.1 allowed: development)
  traces   http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}/zipkin/   (search a case: tag avis.case_reference=AV-...)
  metrics  http://127.0.0.1:${AVIS_METRICS_PORT:-8428}/vmui/#/dashboards   (flow, lateness, delivery, health)
  alerts   http://127.0.0.1:${AVIS_VMALERT_PORT:-8880}/vmalert/groups   (sent to the receiver: $AVIS_STATE_DIR/metrics/alerts.jsonl)
  lag      http://127.0.0.1:$AVIS_LAG_PORT/metrics   (consumer lag per group and partition)
  oidc     ${AVIS_JWT_ISSUER}.well-known/openid-configuration   (Hydra; admin on :${AVIS_OIDC_ADMIN_PORT:-4445})
           a partner's machine: client credentials, clients in $AVIS_STATE_DIR/oidc/partners.json
           a service's machine (avis-operations): client credentials, in $AVIS_STATE_DIR/oidc/services.json
  people   http://127.0.0.1:${AVIS_KRATOS_PORT:-4433}/   (Kratos; admin on :${AVIS_KRATOS_ADMIN_PORT:-4434}; passwords and TOTP secrets in $AVIS_STATE_DIR/kratos/people.json)
  keys     $AVIS_KMS_URL   (PyKMIP; CA and each service's certificate in $AVIS_STATE_DIR/kms)
  Kafka    $AVIS_KAFKA_BOOTSTRAP    FerretDB $AVIS_MONGO_URL    SMTP sink $AVIS_SMTP_URL
  state    $AVIS_STATE_DIR (mail kept in smtp/mail, broker log in kafka/logs)
  a token  .venv/bin/avis-token --sub patient-1 --role patient   (with AVIS_JWT_SECRET from $AVIS_STATE_DIR/dev.env)
A line "[run] ready" follows when every service answers. Ctrl-C stops everything.

TXT
stop_file="$AVIS_STATE_DIR/stop-began"
rm -f "$stop_file"
status=0
"$py" deploy/local/supervise.py deploy/local/Procfile "${ready[@]}" \
  --started "$started_at" --stop-file "$stop_file" || status=$?
parts=(web intake review reports notify)
if [ "$tracing" = 1 ]; then parts+=(Zipkin); fi
if [ "$metrics" = 1 ]; then parts+=(VictoriaMetrics vmalert "the alert receiver"); fi
if [ "$oidc" = 1 ]; then parts+=(Hydra); fi
if [ "$kratos" = 1 ]; then parts+=(Kratos); fi
if [ "$kms" = 1 ]; then parts+=(PyKMIP); fi
for s in "${started[@]}"; do
  case "$s" in kafka) parts+=(Kafka) ;; ferretdb) parts+=(FerretDB) ;; smtp) parts+=("the SMTP sink") ;; esac
done
cleanup
trap - EXIT
took=""
if [ -f "$stop_file" ]; then
  took=" in $(awk -v a="$(cat "$stop_file")" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
  rm -f "$stop_file"
fi
summary="$(printf '%s, ' "${parts[@]}")"
summary="${summary%, }"
if [ ${#kept[@]} -gt 0 ]; then summary+="; left up as found: ${kept[*]}"; fi
if [ "$status" = 0 ]; then
  say "stopped${took}: $summary"
else
  say "stopped${took} after a failure (status $status): $summary"
fi
exit "$status"
