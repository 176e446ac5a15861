#!/usr/bin/env bash
# The key-management server of the Docker-free stack: PyKMIP's KMIP server (Apache-2.0), from the
# pykmip package that uv.lock already installs for the services' KMIP client; nothing to build.
#
#   deploy/kms/install.sh start   certificates (once), config, start it (pid in $STATE/kms.pid)
#   deploy/kms/install.sh wait    until it answers a KMIP request made with the admin certificate
#   deploy/kms/install.sh stop    stop what start started
#   deploy/kms/install.sh restart stop, start and wait (after a change of certificates)
#   deploy/kms/install.sh env     the services' settings for it (AVIS_KMS_URL, AVIS_KMS_CA_FILE,
#                                 AVIS_<SERVICE>_KMS_CERT_FILE and _KEY_FILE, from
#                                 AVIS_KMS_CERTS), to source
#   deploy/kms/install.sh backup FILE    a consistent copy of its database (SQLite's online
#                                 backup), while it runs; mode 600: it holds the keys
#   deploy/kms/install.sh restore FILE   stop it, put FILE back as its database, start it and
#                                 wait; destroyed keys come back: run the reconciliation after
#                                 it (docs/operations.md, "Backup and restore")
#
# It listens on 127.0.0.1:$AVIS_KMS_PORT (5696, KMIP's port) only, speaks TLS 1.2 and takes only
# clients whose certificate our private CA signed. Everything lives in $AVIS_STATE_DIR/kms (mode
# 700), made at its first start and never in the repository: the CA (ca.pem, ca.key), the
# server's certificate, one client certificate per service (intake, review, reports, notify, web)
# and admin's, each key mode 600 (certs.py); the server's config (server.conf), its log and its
# database (kms.sqlite, SQLite; the development server keeps key bytes there unwrapped).
# A client's identity at the server is its certificate's common name. Keys are created under the
# operation policy `avis-case-key` (policies/avis.json): any client of our CA may get or destroy
# them; only their creator may activate them.
# Rotation (docs/operations.md): AVIS_KMS_CERTS names the folder of the server's certificate and
# admin's (default $DATA), AVIS_KMS_TRUSTED_FILE the CAs whose clients it takes (default
# trusted.pem in that folder, a PEM bundle that certs.py writes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
STATE="${AVIS_STATE_DIR:-$root/.local/run}"
DATA="$STATE/kms"
PORT="${AVIS_KMS_PORT:-5696}"
CERTS="${AVIS_KMS_CERTS:-$DATA}"
TRUSTED="${AVIS_KMS_TRUSTED_FILE:-$CERTS/trusted.pem}"
WAIT_SECONDS="${AVIS_WAIT_SECONDS:-90}"
PYTHON="${AVIS_PYTHON:-$root/.venv/bin/python}"

log() { printf '[kms] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=../local/procs.sh
source "$root/deploy/local/procs.sh"
alive() { pid_alive "$STATE/kms.pid"; }

write_config() {
  ( umask 077; cat > "$DATA/server.conf.new" <<CONF
[server]
hostname=127.0.0.1
port=$PORT
certificate_path=$CERTS/server.pem
key_path=$CERTS/server.key
ca_path=$TRUSTED
auth_suite=TLS1.2
enable_tls_client_auth=True
policy_path=$here/policies
logging_level=${AVIS_KMS_LOG_LEVEL:-WARNING}
database_path=$DATA/kms.sqlite
CONF
  )
  mv "$DATA/server.conf.new" "$DATA/server.conf"
}

start() {
  # Its database holds the keys: whatever it and the scripts write is for this user alone.
  umask 077
  mkdir -p "$DATA" && chmod 700 "$DATA"
  if alive; then log "the key server is already running (pid $(cat "$STATE/kms.pid"))"; return; fi
  if port_open "$PORT"; then die "port $PORT for the key server is taken by another process"; fi
  "$PYTHON" "$here/certs.py" "$CERTS"
  write_config
  # Its own session: a Ctrl-C typed at `make run` reaches the services, not the key server,
  # which `stop` ends in order (it must not stop before the services that use it).
  # -W ignore: its imports warn about cipher modules its engine maps and we never use.
  setsid nohup "$PYTHON" -W ignore -m kmip.services.server.server -f "$DATA/server.conf" \
    -l "$DATA/server.log" > "$DATA/stdout.log" 2>&1 < /dev/null &
  echo $! > "$STATE/kms.pid"
  date +%s.%N > "$DATA/started"
  log "the key server (PyKMIP) starting (pid $!) on 127.0.0.1:$PORT"
}

wait_ready() {
  alive || die "the key server is not running; see $DATA/stdout.log and $DATA/server.log"
  # One KMIP request (Query) with the admin certificate, tried until it answers; no bare port
  # probe, which the server would log as a failed TLS handshake.
  "$PYTHON" -W ignore "$here/ready.py" --port "$PORT" --folder "$CERTS" --pid "$(cat "$STATE/kms.pid")" \
    --seconds "$WAIT_SECONDS" || die "the key server does not answer on $PORT; see $DATA/server.log"
  local took=""
  if [ -f "$DATA/started" ]; then
    took=", $(awk -v a="$(cat "$DATA/started")" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s after its start"
  fi
  log "the key server ready on 127.0.0.1:$PORT$took"
}

# SIGINT: its accept loop ends at once (SIGTERM waits for its 10 s accept timeout). Its session
# (setsid: pid = process group) also holds its policy monitor and a multiprocessing manager.
# It then waits up to 10 s for each client connection still open (the services keep theirs
# between requests, avis.shared.keys.ClientPool): stopped services and those idle 5 s hold
# none; otherwise stop_pid ends it after 20 s.
stop() { stop_pid "$STATE/kms.pid" INT group || true; }

env_lines() {
  echo "AVIS_KMS_URL=kmip://127.0.0.1:$PORT"
  echo "AVIS_KMS_CA_FILE=$CERTS/trusted.pem"
  local s upper
  for s in intake review reports notify web; do
    upper="$(echo "$s" | tr '[:lower:]' '[:upper:]')"
    echo "AVIS_${upper}_KMS_CERT_FILE=$CERTS/$s.pem"
    echo "AVIS_${upper}_KMS_KEY_FILE=$CERTS/$s.key"
  done
}

backup() {
  local to="${1:?usage: install.sh backup FILE}"
  [ -f "$DATA/kms.sqlite" ] || die "no key server database at $DATA/kms.sqlite"
  ( umask 077; "$PYTHON" -c 'import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); d = sqlite3.connect(sys.argv[2]); s.backup(d); d.close(); s.close()' "$DATA/kms.sqlite" "$to" )
  log "the key server's database copied to $to"
}

restore() {
  local from="${1:?usage: install.sh restore FILE}"
  [ -f "$from" ] || die "no copy at $from"
  stop
  ( umask 077; cp "$from" "$DATA/kms.sqlite.new" ) && mv "$DATA/kms.sqlite.new" "$DATA/kms.sqlite"
  start
  wait_ready
  log "the key server's database restored from $from: run the reconciliation now"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start; wait_ready ;;
  wait) wait_ready ;;
  env) env_lines ;;
  backup) backup "${2:-}" ;;
  restore) restore "${2:-}" ;;
  *) echo "usage: install.sh start|stop|restart|wait|env|backup FILE|restore FILE" >&2; exit 2 ;;
esac
