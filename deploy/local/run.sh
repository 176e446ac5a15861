#!/usr/bin/env bash
# `make run`: Kafka, FerretDB, the SMTP sink and the four services, until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export AVIS_STATE_DIR="${AVIS_STATE_DIR:-$root/.local/run}"
infra="deploy/local/infra.sh"
py="${AVIS_PYTHON:-.venv/bin/python}"
trap '"$infra" stop' EXIT
# --- tracing UI (deploy/tracing/install.sh): Zipkin on 127.0.0.1:${AVIS_ZIPKIN_PORT:-9411} ---
trap '"$root/deploy/tracing/install.sh" stop; "$infra" stop' EXIT
"$root/deploy/tracing/install.sh" start
export AVIS_OTEL_EXPORTER="${AVIS_OTEL_EXPORTER:-zipkin}"
export AVIS_OTEL_ENDPOINT="${AVIS_OTEL_ENDPOINT:-http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}}"
# --- end tracing UI ---
"$infra" start
"$infra" wait
"$py" -m avis.shared.topics
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
cat <<TXT

Avis is starting. Everything listens on 127.0.0.1:
  intake   http://127.0.0.1:8001   (docs: /docs, events: /asyncapi.json)
  review   http://127.0.0.1:8002
  reports  http://127.0.0.1:8003
  notify   http://127.0.0.1:8004
  traces   http://127.0.0.1:${AVIS_ZIPKIN_PORT:-9411}/zipkin/   (search a case: tag avis.case_reference=AV-...)
  Kafka    $AVIS_KAFKA_BOOTSTRAP    FerretDB $AVIS_MONGO_URL    SMTP sink $AVIS_SMTP_URL
  state    $AVIS_STATE_DIR (mail kept in smtp/mail, broker log in kafka/logs)
  a token  .venv/bin/avis-token --sub patient-1 --role patient   (with AVIS_JWT_SECRET from $AVIS_STATE_DIR/dev.env)
Ctrl-C stops everything.

TXT
.venv/bin/honcho -f deploy/local/Procfile -d "$root" start
