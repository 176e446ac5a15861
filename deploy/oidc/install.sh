#!/usr/bin/env bash
# The OpenID Connect provider of the Docker-free stack: Ory Hydra (Apache-2.0, OAuth2 and OpenID
# Connect), built from the Go module proxy into $AVIS_CACHE/hydra once, with its SQLite driver.
# A plain `go install` of it fails: its go.mod replaces github.com/ory/hydra-client-go/v2 by
# ./internal/httpclient, a nested module that the module download leaves out. We build from a
# copy of the module without that line, so the client is the released module go.mod requires
# (v2.2.1); the other replace (a fork of pop) names a module and stays.
#
#   deploy/oidc/install.sh          build if missing, print the binary's path
#   deploy/oidc/install.sh start    migrate the SQLite database and start it (pid in $STATE)
#   deploy/oidc/install.sh stop     stop what start started
#   deploy/oidc/install.sh wait     until it answers, then seed the partners' clients (seed.py)
#   deploy/oidc/install.sh partners the seeded clients as AVIS_WEB_PARTNER_CLIENTS (client -> partner)
#   deploy/oidc/install.sh services the services' machines' clients as AVIS_WEB_SERVICE_CLIENTS
#
# It listens on 127.0.0.1 only: AVIS_OIDC_PORT (the public side: discovery, keys, tokens, 4444)
# and AVIS_OIDC_ADMIN_PORT (clients, keys, 4445). Its issuer is http://127.0.0.1:$AVIS_OIDC_PORT/;
# it runs with --dev, which its own checks need for an issuer and cookies over http on loopback.
# Access tokens are JWTs signed with its key set hydra.jwt.access-token (ID tokens: another set).
# Before it issues a token it asks its token hook, web's POST /oidc/token-hook on
# 127.0.0.1:$AVIS_OIDC_HOOK_PORT (AVIS_WEB_HTTP_PORT, 8000), for the claims `role` and `partner_id`,
# which it writes at the top level of the token (a service's machine: role service alone). Its
# database (SQLite), system secret and the hook's key are made once per state folder
# ($AVIS_STATE_DIR/oidc), never in the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
VERSION="${HYDRA_VERSION:-v2.3.0}"
DIR="$CACHE/hydra/$VERSION"
BIN="$DIR/hydra"
STATE="${AVIS_STATE_DIR:-$root/.local/run}"
DATA="$STATE/oidc"
PORT="${AVIS_OIDC_PORT:-4444}"
ADMIN_PORT="${AVIS_OIDC_ADMIN_PORT:-4445}"
HOOK_PORT="${AVIS_OIDC_HOOK_PORT:-${AVIS_WEB_HTTP_PORT:-8000}}"
WAIT_SECONDS="${AVIS_WAIT_SECONDS:-90}"
PYTHON="${AVIS_PYTHON:-python3}"

log() { printf '[oidc] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=../local/procs.sh
source "$root/deploy/local/procs.sh"

install() { ory_build Hydra github.com/ory/hydra/v2 "$VERSION" ./internal/httpclient "$BIN"; }

alive() { pid_alive "$STATE/hydra.pid"; }
random() { random_hex 32; }

# The secrets of this state folder, made once: Hydra's system secret (it encrypts its database's
# secrets with it; for Hydra alone) and the key it presents to web's token hook (hook.env, which
# `make run` gives web as AVIS_WEB_TOKEN_HOOK_KEY).
make_secret() {
  [ -f "$DATA/$1" ] && return 0
  ( umask 077; echo "$2=$(random)" > "$DATA/$1.new" )
  mv "$DATA/$1.new" "$DATA/$1"
}

write_config() {
  # shellcheck disable=SC1091
  source "$DATA/system.env"
  # shellcheck disable=SC1091
  source "$DATA/hook.env"
  ( umask 077; cat > "$DATA/hydra.yml" <<YAML
serve:
  public: { host: 127.0.0.1, port: $PORT }
  admin: { host: 127.0.0.1, port: $ADMIN_PORT }
dsn: sqlite://$DATA/hydra.sqlite?_fk=true&mode=rwc
urls:
  self: { issuer: "http://127.0.0.1:$PORT/", public: "http://127.0.0.1:$PORT/" }
  # People's sign-in, consent and sign-out screens are web's; machines never see them.
  login: "http://127.0.0.1:$HOOK_PORT/oidc/login"
  consent: "http://127.0.0.1:$HOOK_PORT/oidc/consent"
  logout: "http://127.0.0.1:$HOOK_PORT/oidc/logout"
  post_logout_redirect: "http://127.0.0.1:$HOOK_PORT/signin"
secrets:
  system: ["$AVIS_OIDC_SYSTEM_SECRET"]
strategies:
  access_token: jwt
ttl:
  access_token: 1h
oauth2:
  # Every authorization-code flow carries a PKCE challenge; only S256 is taken (never plain).
  pkce: { enforced: true, enforced_for_public_clients: true }
  # The claims the hook sets, at the top level of the access token, where the services read
  # them; not mirrored again under "ext".
  allowed_top_level_claims: [role, partner_id]
  mirror_top_level_claims: false
  token_hook:
    url: "http://127.0.0.1:$HOOK_PORT/oidc/token-hook"
    auth:
      type: api_key
      config: { in: header, name: Authorization, value: "Bearer $AVIS_WEB_TOKEN_HOOK_KEY" }
webfinger:
  jwks:
    # The services verify access tokens with the keys published here: the access tokens' set
    # beside the ID tokens' (what tells the two apart: AVIS_JWT_ACCESS_TOKEN_MARK).
    broadcast_keys: [hydra.openid.id-token, hydra.jwt.access-token]
log:
  level: warn
  leak_sensitive_values: false
YAML
  )
}

start() {
  local bin
  bin="$(install)"
  mkdir -p "$DATA" && chmod 700 "$DATA"
  if alive; then log "Hydra already running (pid $(cat "$STATE/hydra.pid"))"; return; fi
  local p; for p in "$PORT" "$ADMIN_PORT"; do
    if port_open "$p"; then die "port $p for Hydra is taken by another process"; fi
  done
  make_secret system.env AVIS_OIDC_SYSTEM_SECRET
  make_secret hook.env AVIS_WEB_TOKEN_HOOK_KEY
  write_config
  "$bin" migrate sql up --read-from-env --yes --config "$DATA/hydra.yml" > "$DATA/migrate.log" 2>&1 \
    || { cat "$DATA/migrate.log" >&2; die "Hydra's database migration failed"; }
  nohup "$bin" serve all --dev --sqa-opt-out --config "$DATA/hydra.yml" > "$DATA/hydra.log" 2>&1 &
  echo $! > "$STATE/hydra.pid"
  log "Hydra starting (pid $!): issuer http://127.0.0.1:$PORT/, admin 127.0.0.1:$ADMIN_PORT"
}

wait_ready() {
  wait_ports Hydra "$STATE/hydra.pid" "$DATA/hydra.log" "$ADMIN_PORT" "$PORT"
  "$PYTHON" "$here/seed.py" --admin "http://127.0.0.1:$ADMIN_PORT" --file "$DATA/partners.json" \
    --web "http://127.0.0.1:$HOOK_PORT"
  log "Hydra ready on http://127.0.0.1:$PORT/"
}

stop() { stop_pid "$STATE/hydra.pid" || true; }

case "${1:-install}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  wait) wait_ready ;;
  partners) "$PYTHON" "$here/seed.py" --file "$DATA/partners.json" --mapping ;;
  services) "$PYTHON" "$here/seed.py" --file "$DATA/partners.json" --services ;;
  *) echo "usage: install.sh [install|start|stop|wait|partners|services]" >&2; exit 2 ;;
esac
