# shellcheck shell=bash
# Sourced by the stack's scripts (infra, run, the OpenID provider, the identity server, the key
# server): the checks of ports and recorded pids they share, and the build of an Ory server.
# The sourcing script defines log() and die(), which print with its own prefix.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_alive PIDFILE: the process recorded there still runs.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# stop_pid PIDFILE [SIGNAL] [group]: send SIGNAL (TERM) to the recorded process, wait up to 20 s,
# then kill it (its whole process group with `group`: a server started by setsid); forget the pid.
# Returns 1 when nothing recorded was running.
stop_pid() {
  local f="$1" sig="${2:-TERM}" pid was=1
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    was=0
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in 20 s; killing"
      if [ "${3:-}" = group ]; then kill -9 -- "-$pid" 2>/dev/null || true; else kill -9 "$pid" 2>/dev/null || true; fi
    fi
  fi
  rm -f "$f"
  return "$was"
}

# wait_ports NAME PIDFILE LOG PORT...: until every PORT answers on loopback, dying if the process
# exits or after $WAIT_SECONDS.
wait_ports() {
  local name="$1" pidfile="$2" logfile="$3" deadline=$((SECONDS + ${WAIT_SECONDS:-90})) p
  shift 3
  for p in "$@"; do
    until port_open "$p"; do
      pid_alive "$pidfile" || die "$name exited; see $logfile"
      [ $SECONDS -lt $deadline ] || die "$name not listening on $* after ${WAIT_SECONDS:-90}s"
      sleep 0.2
    done
  done
}

# ory_build NAME MODULE VERSION REPLACED BIN: build an Ory server (the Go module MODULE@VERSION)
# with its SQLite driver into BIN once, and print BIN. A plain `go install` fails: the module's
# go.mod replaces a client by a folder (REPLACED) that the module download leaves out, so we
# build from a copy without that line, and the client is the released module go.mod requires.
ory_build() {
  local name="$1" module="$2" version="$3" replaced="$4" bin="$5" work src
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  command -v go >/dev/null || die "go is required to build $name"
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "chmod -R u+w '$work' 2>/dev/null; rm -rf '$work'" EXIT
  export GOFLAGS=-mod=mod
  src="$(cd "$work" && go mod download -json "$module@$version" \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')" \
    || die "could not download $module@$version from the Go module proxy"
  cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
  sed -i "\\#=> $replaced#d" "$work/src/go.mod"
  mkdir -p "$(dirname "$bin")"
  log "building $name $version (with SQLite) into $(dirname "$bin"), once (a minute or two)"
  # -tags sqlite: the SQLite driver (cgo) the local stack stores in; libsqlite3: linked to the
  # system's SQLite (libsqlite3-dev, when there) instead of compiling the driver's own copy of
  # SQLite's C source (41 s of CPU at -O2 -g here) in each of Hydra's and Kratos's builds;
  # -p 2: the machine is shared. -dwarf=false: no debug information compiled (the link drops it
  # anyway: -w).
  local tags=sqlite
  if printf '#include <sqlite3.h>\n' | cc -E - >/dev/null 2>&1; then tags=sqlite,libsqlite3
  else log "no libsqlite3-dev: building SQLite's C source into $name (a minute longer)"; fi
  (cd "$work/src" && CGO_ENABLED=1 go build -p "${AVIS_GO_BUILD_JOBS:-2}" -tags "$tags" -trimpath -gcflags=all=-dwarf=false \
     -ldflags "-s -w -X $module/driver/config.Version=$version" \
     -o "$bin.tmp" .) || die "the $name build failed"
  mv "$bin.tmp" "$bin"
  echo "$bin"
}
