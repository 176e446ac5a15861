#!/usr/bin/env bash
# The local, Docker-free infrastructure: Apache Kafka (KRaft, combined mode), FerretDB (SQLite)
# and an SMTP sink, each on 127.0.0.1, each with its own data directory under $AVIS_STATE_DIR.
#
#   infra.sh install                 fetch/build what is missing into $AVIS_CACHE (once)
#   infra.sh start|stop|status|wait  [kafka|ferretdb|smtp ...]   (default: all three)
#
# Ports and directories come from the environment, so `make test` runs its own stack beside
# `make run`'s. stop only ever kills the pids this script recorded.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export AVIS_CACHE="${AVIS_CACHE:-$HOME/.cache/avis}"
STATE="${AVIS_STATE_DIR:-$root/.local/run}"
STATE_GIVEN="${AVIS_STATE_DIR:+yes}"
KAFKA_PORT="${AVIS_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${AVIS_KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${AVIS_MONGO_PORT:-27017}"
SMTP_PORT="${AVIS_SMTP_PORT:-1025}"
WAIT_SECONDS="${AVIS_WAIT_SECONDS:-90}"
PYTHON="${AVIS_PYTHON:-python3}"

log() { printf '[infra] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=procs.sh
source "$here/procs.sh"

kafka_libs() { "$root/deploy/kafka/install.sh"; }
ferretdb_bin() { "$root/deploy/ferretdb/install.sh"; }

pidfile() { echo "$STATE/$1.pid"; }
running() { pid_alive "$(pidfile "$1")"; }
port_of() {
  case "$1" in kafka) echo "$KAFKA_PORT" ;; ferretdb) echo "$MONGO_PORT" ;; smtp) echo "$SMTP_PORT" ;; esac
}
# The port a running part was started on (recorded by start), else the configured one.
port_now() { cat "$STATE/$1.port" 2>/dev/null || port_of "$1"; }

# The broker's identities (SASL/SCRAM-SHA-512): `admin`, its only super user (topics, ACLs,
# the lag exporter and the dead-letter replay), and one principal per service, whose ACLs
# (`avis-acls`, from deploy/k8s/base/users.yaml) let it write only the topics it owns and read
# only what it subscribes to. Their passwords are made once per state directory, kept beside
# the broker's data (never in the repository), and read by `make run` and the test stack.
KAFKA_USERS=(admin intake review reports notify web)
kafka_users_env() { echo "$STATE/kafka/users.env"; }
password_var() {
  if [ "$1" = admin ]; then echo AVIS_KAFKA_ADMIN_PASSWORD
  else echo "AVIS_$(echo "$1" | tr '[:lower:]' '[:upper:]')_KAFKA_PASSWORD"; fi
}
make_kafka_users() {
  local file u; file="$(kafka_users_env)"
  [ -f "$file" ] && return 0
  ( umask 077
    for u in "${KAFKA_USERS[@]}"; do
      echo "$(password_var "$u")=$(random_hex 24)"
    done > "$file.new" )
  mv "$file.new" "$file"
}

start_kafka() {
  local libs data conf
  libs="$(kafka_libs)"; data="$STATE/kafka"; conf="$data/server.properties"
  mkdir -p "$data/logs"
  if [ -f "$data/data/meta.properties" ] && [ ! -f "$(kafka_users_env)" ]; then
    log "Kafka storage in $data/data predates the broker's identities: formatting it again"
    rm -rf "$data/data"
  fi
  make_kafka_users
  # shellcheck disable=SC1090
  source "$(kafka_users_env)"
  local admin="$AVIS_KAFKA_ADMIN_PASSWORD"
  # `make bench` alone also opens a listener without identities, whose anonymous clients are
  # super users, to measure what SASL costs; no other start has it.
  local listeners="SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT" protocols="SASL_PLAINTEXT:SASL_PLAINTEXT"
  local supers="User:admin" bench_port="${AVIS_KAFKA_BENCH_PLAINTEXT_PORT:-}"
  if [ -n "$bench_port" ]; then
    listeners="$listeners,PLAINTEXT://127.0.0.1:$bench_port"
    protocols="$protocols,PLAINTEXT:PLAINTEXT"
    supers="$supers;User:ANONYMOUS"
    log "Kafka also listens without identities on 127.0.0.1:$bench_port (benchmarks only)"
  fi
  ( umask 077; cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
# Clients authenticate with SCRAM; nothing is served to an anonymous client.
listeners=$listeners,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=$protocols,CONTROLLER:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
# The controller's listener cannot use SCRAM (its users live in the metadata it serves): PLAIN,
# for the admin alone.
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=$supers
allow.everyone.if.no.acl.found=false
log.dirs=$data/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPS
  )
  local java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC "-Dkafka.logs.dir=$data/logs"
                   "-Dlog4j2.configurationFile=$root/deploy/kafka/log4j2.yaml")
  if [ ! -f "$data/data/meta.properties" ]; then
    log "formatting Kafka storage in $data/data"
    local scram=() u var
    for u in "${KAFKA_USERS[@]}"; do
      var="$(password_var "$u")"
      scram+=(--add-scram "SCRAM-SHA-512=[name=$u,password=${!var}]")
    done
    java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
      -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)" \
      -c "$conf" "${scram[@]}" > "$data/logs/format.log" 2>&1 || { cat "$data/logs/format.log" >&2; die "kafka format failed"; }
  fi
  nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$conf" > "$data/logs/stdout.log" 2>&1 &
  echo $! > "$(pidfile kafka)"
}

start_ferretdb() {
  local bin data
  bin="$(ferretdb_bin)"; data="$STATE/ferretdb"
  mkdir -p "$data/sqlite"
  # synchronous(normal): in WAL mode a commit no longer waits for the disk while it holds the
  # database's one write lock; a crash of FerretDB loses nothing, a power cut may lose the
  # last commits, never the file (a local stand-in; production runs MongoDB).
  # mmap_size: pages are read through a shared memory map instead of copied into each
  # connection's small page cache: a case costs the store about as much at 50,000 cases as at
  # 1,000 (docs/store-contract.md).
  local pragmas="_pragma=synchronous(normal)&_pragma=mmap_size(1073741824)"
  nohup "$bin" --listen-addr="127.0.0.1:$MONGO_PORT" --handler=sqlite \
    --sqlite-url="file:$data/sqlite/?$pragmas" --state-dir="$data" --telemetry=disable \
    --log-level=WARN --debug-addr="${AVIS_FERRETDB_METRICS_PORT:+127.0.0.1:$AVIS_FERRETDB_METRICS_PORT}" \
    > "$data/ferretdb.log" 2>&1 &
  echo $! > "$(pidfile ferretdb)"
}

start_smtp() {
  local data="$STATE/smtp"
  mkdir -p "$data/mail"
  nohup "$PYTHON" "$root/deploy/local/smtp_sink.py" --port "$SMTP_PORT" --dir "$data/mail" \
    > "$data/smtp.log" 2>&1 &
  echo $! > "$(pidfile smtp)"
}

start() {
  local s="$1"
  mkdir -p "$STATE"
  if running "$s"; then log "$s already running (pid $(cat "$(pidfile "$s")"))"; return; fi
  if port_open "$(port_of "$s")"; then die "port $(port_of "$s") for $s is taken by another process"; fi
  "start_$s"
  port_of "$s" > "$STATE/$s.port"
  log "$s starting (pid $(cat "$(pidfile "$s")")) on 127.0.0.1:$(port_of "$s")"
}

stop() {
  local s="$1"
  if stop_pid "$(pidfile "$s")"; then log "$s stopped"; fi
  rm -f "$STATE/$s.port"
}

status() {
  local s="$1"
  if running "$s"; then
    if port_open "$(port_now "$s")"; then echo "$s: up (pid $(cat "$(pidfile "$s")"), 127.0.0.1:$(port_now "$s"))"
    else echo "$s: starting (pid $(cat "$(pidfile "$s")"))"; fi
  else echo "$s: down"; fi
}

# A live `make run` of this checkout's, as "pid state-folder" (run.sh registers itself in .local/runs).
make_runs() {
  local f pid
  for f in "$root"/.local/runs/*; do
    [ -f "$f" ] || continue
    pid="${f##*/}"
    if ps -p "$pid" -o args= 2>/dev/null | grep -q 'deploy/local/run.sh'; then echo "$pid $(cat "$f")"; fi
  done
}

# Asked without AVIS_STATE_DIR while no `make run` uses the default folder: show the `make run`
# that another shell started with a state folder of its own, and say how to point at it.
find_make_run() {
  local pid state
  [ -z "$STATE_GIVEN" ] || return 0
  [ -f "$STATE/run.pid" ] && ps -p "$(cat "$STATE/run.pid")" -o args= 2>/dev/null | grep -q 'deploy/local/run.sh' && return 0
  read -r pid state < <(make_runs) || return 0
  [ -n "$state" ] && [ "$state" != "$STATE" ] || return 0
  echo "make run (pid $pid) keeps its state in $state; in another shell: export AVIS_STATE_DIR=$state"
  STATE="$state"
}

wait_ready() {
  local s="$1" deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$(port_of "$s")"; do
    running "$s" || die "$s exited; see its log under $STATE/$s"
    [ $SECONDS -lt $deadline ] || die "$s not listening on $(port_of "$s") after ${WAIT_SECONDS}s"
    sleep 0.3
  done
  log "$s ready on 127.0.0.1:$(port_of "$s")"
}

cmd="${1:-status}"; shift || true
services=("$@"); [ ${#services[@]} -gt 0 ] || services=(kafka ferretdb smtp)
case "$cmd" in
  install)
    # Three lanes side by side. Maven's downloads (Kafka's jars, then Zipkin's jar) wait on the
    # network, not the CPU. The four Go builds run two at a time over one build cache, so the
    # standard library and the modules they share compile once, not once per build: Hydra beside
    # FerretDB (the two longest), then Kratos, which finds most of Hydra's modules built, beside
    # the metrics store.
    { kafka_libs >/dev/null && "$root/deploy/tracing/install.sh" >/dev/null; } & jars=$!
    { "$root/deploy/oidc/install.sh" >/dev/null && "$root/deploy/metrics/install.sh" server >/dev/null; } & lane=$!
    ferretdb_bin >/dev/null && "$root/deploy/oidc/kratos.sh" >/dev/null \
      || die "FerretDB or the identity server (Kratos) did not build"
    wait "$lane" || die "the OpenID provider (Hydra) or the metrics store (VictoriaMetrics) did not build"
    wait "$jars" || die "Kafka's or Zipkin's jars could not be fetched"
    log "Kafka, Zipkin, FerretDB, VictoriaMetrics, Hydra and Kratos are in $AVIS_CACHE" ;;
  start|stop) for s in "${services[@]}"; do "$cmd" "$s"; done ;;
  status)
    [ $# -gt 0 ] || find_make_run
    for s in "${services[@]}"; do status "$s"; done
    if [ $# -eq 0 ] && [ -f "$STATE/run.pid" ]; then
      run_pid="$(cat "$STATE/run.pid")"
      if ps -p "$run_pid" -o args= 2>/dev/null | grep -q 'deploy/local/run.sh'; then
        echo "make run: up (pid $run_pid, state $STATE; Ctrl-C in its terminal stops it and what it started)"
      fi
    fi ;;
  wait) for s in "${services[@]}"; do wait_ready "$s"; done ;;
  *) die "usage: infra.sh install|start|stop|status|wait [kafka|ferretdb|smtp ...]" ;;
esac
