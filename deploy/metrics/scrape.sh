#!/usr/bin/env bash
# The metrics store's scrape configuration for the Docker-free stack, from the same AVIS_*_PORT
# variables as `make run` (so a stack on moved ports is scraped where it is). Prints it.
set -euo pipefail
interval="${AVIS_SCRAPE_INTERVAL:-10s}"
# The services label their own series with `service`; the job is named after them too.
job() {  # job name, port
  printf '  - job_name: %s\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' "$1" "$2"
}
printf 'global:\n  scrape_interval: %s\n  scrape_timeout: 5s\nscrape_configs:\n' "$interval"
job intake "${AVIS_INTAKE_HTTP_PORT:-8001}"
job review "${AVIS_REVIEW_HTTP_PORT:-8002}"
job reports "${AVIS_REPORTS_HTTP_PORT:-8003}"
job notify "${AVIS_NOTIFY_HTTP_PORT:-8004}"
# consumer lag per group and partition, the broker's and the store's reachability (avis.shared.lag)
job lag "${AVIS_LAG_PORT:-8005}"
# FerretDB's own metrics (its debug listener; started so by infra.sh when this port is set)
if [ -n "${AVIS_FERRETDB_METRICS_PORT:-}" ]; then
  printf '  - job_name: ferretdb\n    metrics_path: /debug/metrics\n    static_configs:\n      - targets: ["127.0.0.1:%s"]\n' "$AVIS_FERRETDB_METRICS_PORT"
fi
job vmalert "${AVIS_VMALERT_PORT:-8880}"
job victoriametrics "${AVIS_METRICS_PORT:-8428}"
