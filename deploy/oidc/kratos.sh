#!/usr/bin/env bash
# The identities and passwords of people's sign-in on the Docker-free stack: Ory Kratos
# (Apache-2.0), built from the Go module proxy into $AVIS_CACHE/kratos once, with its SQLite
# driver. A plain `go install` of it fails: its go.mod replaces github.com/ory/client-go by
# ./internal/client-go, a folder the module download leaves out. We build from a copy of the
# module without that line, so the client is the released module go.mod requires (v1.14.3); the
# other replaces name modules and stay.
#
#   deploy/oidc/kratos.sh          build if missing, print the binary's path
#   deploy/oidc/kratos.sh start    migrate the SQLite database and start it (pid in $STATE)
#   deploy/oidc/kratos.sh stop     stop what start started
#   deploy/oidc/kratos.sh wait     until it answers, then seed the development identities
#
# It listens on 127.0.0.1 only: AVIS_KRATOS_PORT (the public side: the browser's self-service
# flows, 4433) and AVIS_KRATOS_ADMIN_PORT (identities, 4434). Web is its UI: the login screen is
# web's /signin/password, which renders a flow's fields as a form that posts to Kratos itself;
# recovery (a code by email) and the new password after it are web's /signin/recovery and
# /signin/settings, rendered the same way. Its courier sends the code to the stack's SMTP sink
# (AVIS_SMTP_PORT on loopback), from the serving process itself (--watch-courier).
# Its database (SQLite) and secrets are made once per state folder ($AVIS_STATE_DIR/kratos).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
VERSION="${KRATOS_VERSION:-v1.3.1}"
DIR="$CACHE/kratos/$VERSION"
BIN="$DIR/kratos"
STATE="${AVIS_STATE_DIR:-$root/.local/run}"
DATA="$STATE/kratos"
PORT="${AVIS_KRATOS_PORT:-4433}"
ADMIN_PORT="${AVIS_KRATOS_ADMIN_PORT:-4434}"
WEB_PORT="${AVIS_OIDC_HOOK_PORT:-${AVIS_WEB_HTTP_PORT:-8000}}"
WAIT_SECONDS="${AVIS_WAIT_SECONDS:-90}"
PYTHON="${AVIS_PYTHON:-python3}"
# SQLite in WAL mode with synchronous(normal), as the local store runs: its migration on a new
# state folder takes about 0.9 s instead of 1.5 s; a crash of Kratos loses nothing, a power cut
# may lose the last commits (a local stand-in).
DSN="sqlite://$DATA/kratos.sqlite?_fk=true&mode=rwc&_journal_mode=WAL&_synchronous=NORMAL"

log() { printf '[kratos] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=../local/procs.sh
source "$root/deploy/local/procs.sh"

install() { ory_build Kratos github.com/ory/kratos "$VERSION" ./internal/client-go "$BIN"; }

alive() { pid_alive "$STATE/kratos.pid"; }
random() { random_hex 16; }

# Its secrets, made once per state folder: the cookies' signing key and the cipher key (exactly
# 32 characters) of what it encrypts in its database.
make_secrets() {
  [ -f "$DATA/secrets.env" ] && return 0
  ( umask 077; printf 'KRATOS_COOKIE_SECRET=%s\nKRATOS_CIPHER_SECRET=%s\n' "$(random)$(random)" "$(random)" \
      > "$DATA/secrets.env.new" )
  mv "$DATA/secrets.env.new" "$DATA/secrets.env"
}

write_config() {
  # shellcheck disable=SC1091
  source "$DATA/secrets.env"
  local web="http://127.0.0.1:$WEB_PORT"
  ( umask 077; cat > "$DATA/kratos.yml" <<YAML
version: $VERSION
dsn: "$DSN"
serve:
  public: { host: 127.0.0.1, port: $PORT, base_url: "http://127.0.0.1:$PORT/" }
  admin: { host: 127.0.0.1, port: $ADMIN_PORT, base_url: "http://127.0.0.1:$ADMIN_PORT/" }
identity:
  default_schema_id: person
  schemas: [{ id: person, url: "file://$here/identity.schema.json" }]
selfservice:
  default_browser_return_url: "$web/signin"
  # Only web's pages may be returned to after a flow.
  allowed_return_urls: ["$web/"]
  methods:
    password:
      enabled: true
      # No call to an outside breach list: this stack reaches nothing beyond loopback.
      config: { haveibeenpwned_enabled: false }
    totp: { enabled: true, config: { issuer: Avis } }
    profile: { enabled: true }
    link: { enabled: false }
    # The code method, for recovery only: no sign-in or second factor by emailed code.
    code: { enabled: true, config: { lifespan: 15m }, passwordless_enabled: false, mfa_enabled: false }
  flows:
    # Web renders each flow's fields; the form posts them to Kratos itself.
    login: { ui_url: "$web/signin/password", lifespan: 10m }
    # People are made by the platform (seeded here), never by signing up.
    registration: { enabled: false, ui_url: "$web/signin" }
    # After recovery, the new password: web renders the settings flow's password fields.
    settings: { ui_url: "$web/signin/settings", required_aal: highest_available, privileged_session_max_age: 15m }
    error: { ui_url: "$web/signin" }
    # A code by email to the identity's address; nothing is sent to an address nobody has.
    recovery: { enabled: true, use: code, ui_url: "$web/signin/recovery", lifespan: 15m, notify_unknown_recipients: false }
    verification: { enabled: false }
session:
  lifespan: 8h
  # A session of an identity with a second factor counts only once that factor is given.
  whoami: { required_aal: highest_available }
secrets:
  cookie: ["$KRATOS_COOKIE_SECRET"]
  cipher: ["$KRATOS_CIPHER_SECRET"]
courier:
  smtp:
    connection_uri: "smtp://127.0.0.1:${AVIS_SMTP_PORT:-1025}/?disable_starttls=true"
    from_address: no-reply@avis.local
    from_name: Avis
log:
  level: warning
  leak_sensitive_values: false
YAML
  )
}

start() {
  local bin
  bin="$(install)"
  mkdir -p "$DATA" && chmod 700 "$DATA"
  if alive; then log "Kratos already running (pid $(cat "$STATE/kratos.pid"))"; return; fi
  local p; for p in "$PORT" "$ADMIN_PORT"; do
    if port_open "$p"; then die "port $p for Kratos is taken by another process"; fi
  done
  make_secrets
  write_config
  DSN="$DSN" "$bin" migrate sql up --read-from-env --yes --config "$DATA/kratos.yml" > "$DATA/migrate.log" 2>&1 \
    || { cat "$DATA/migrate.log" >&2; die "Kratos's database migration failed"; }
  # --dev: cookies without the Secure flag, for http:// on loopback.
  DSN="$DSN" nohup "$bin" serve --dev --watch-courier --sqa-opt-out --config "$DATA/kratos.yml" > "$DATA/kratos.log" 2>&1 &
  echo $! > "$STATE/kratos.pid"
  log "Kratos starting (pid $!): public http://127.0.0.1:$PORT/, admin 127.0.0.1:$ADMIN_PORT"
}

wait_ready() {
  wait_ports Kratos "$STATE/kratos.pid" "$DATA/kratos.log" "$ADMIN_PORT" "$PORT"
  "$PYTHON" "$here/people.py" --public "http://127.0.0.1:$PORT" --admin "http://127.0.0.1:$ADMIN_PORT" \
    --file "$DATA/people.json"
  log "Kratos ready on http://127.0.0.1:$PORT/"
}

stop() { stop_pid "$STATE/kratos.pid" || true; }

case "${1:-install}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  wait) wait_ready ;;
  *) echo "usage: kratos.sh [install|start|stop|wait]" >&2; exit 2 ;;
esac
