#!/usr/bin/env bash
# Run the suite (or `bench`, `bench-store`, `chaos`) against a fresh broker and store of its own, then stop them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
infra="deploy/local/infra.sh"
# shellcheck source=procs.sh
source deploy/local/procs.sh
# A prefix past 6 puts the broker past the last port (79092): say so rather than fail later.
for port in "$AVIS_KAFKA_PORT" "$AVIS_MONGO_PORT" "$AVIS_OIDC_PORT" "$AVIS_KMS_PORT"; do
  if [ "$port" -gt 65535 ]; then
    echo "[test] port $port does not exist: TEST_PORT_PREFIX must be 1 to 6 (1 or 2 best)" >&2
    exit 2
  fi
done
# Another stack on these ports (a second run with the same TEST_PORT_PREFIX): refuse before its
# state folder is removed from under it.
for port in "$AVIS_KAFKA_PORT" "$AVIS_MONGO_PORT" "$AVIS_SMTP_PORT" "$AVIS_OIDC_PORT" \
    "$AVIS_KMS_PORT" "$AVIS_KRATOS_PORT"; do
  if port_open "$port"; then
    echo "[test] port $port is taken: another test stack runs with these ports (the same" \
      "TEST_PORT_PREFIX?); stop it, or choose another TEST_PORT_PREFIX and TEST_STATE" >&2
    exit 1
  fi
done
rm -rf "$AVIS_STATE_DIR"
# A port in the kernel's ephemeral range can be taken, while its server is stopped, by a client's
# own reconnection (a TCP self-connect); the outage tests and the fault run restart the broker
# and store on their ports, so say so when that can happen (TEST_PORT_PREFIX 3 to 5).
low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
for port in "$AVIS_KAFKA_PORT" "$AVIS_MONGO_PORT"; do
  if [ "$port" -ge "$low" ]; then
    echo "[test] note: port $port is in the ephemeral range (from $low); a restarted broker or" \
      "store may find it taken. TEST_PORT_PREFIX=1 or 2 keeps clear of it." >&2
    break
  fi
done
# The services run as `make run` runs them: in development (the HS256 test secret), with the
# walkthroughs' 8-hour tokens; the suites, benchmarks and fault run send many writes as one
# caller, so the write rate limit is out of their way (its own tests set theirs).
export AVIS_ENV=development
export AVIS_JWT_MAX_LIFETIME_SECONDS="${AVIS_JWT_MAX_LIFETIME_SECONDS:-28800}"
export AVIS_RATE_LIMIT_WRITES="${AVIS_RATE_LIMIT_WRITES:-100000/minute}"
# The key server takes about 2 s to stop: beside the others.
trap 'deploy/kms/install.sh stop & "$infra" stop; deploy/oidc/install.sh stop; deploy/oidc/kratos.sh stop; wait; if [ -n "${lint_log:-}" ]; then kill "$lint" 2>/dev/null || true; rm -f "$lint_log"; fi' EXIT
# (The second lane of deploy/local/lanes.sh leaves the lint to the first: AVIS_TEST_LINT=0.)
case "${1:-}:${AVIS_TEST_LINT:-1}" in
  bench:* | bench-store:* | chaos:* | *:0) ;;
  *)
    # The suite's lint (about 45 s from a cold mypy cache, most of it one core) runs beside the
    # stack's start, which mostly waits; its verdict comes before pytest.
    lint_log="$(mktemp)"
    { .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy; } \
      >"$lint_log" 2>&1 &
    lint=$!
    ;;
esac
"$infra" start
# The OpenID provider (Hydra), its token hook on 127.0.0.1:$AVIS_OIDC_HOOK_PORT, where the
# sign-in tests serve web's (tests/integration/shared/test_oidc_tokens.py).
deploy/oidc/install.sh start
# People's identities and passwords (Kratos), behind web's sign-in through Hydra
# (tests/integration/web/test_web_oidc_signin.py): its migration, start and seeding (a few
# seconds: the passwords' hashes, the professionals' TOTP enrolment) beside the broker's start.
{ deploy/oidc/kratos.sh start && deploy/oidc/kratos.sh wait; } & kratos_up=$!
# The key server (PyKMIP), with its CA and each service's certificate in $AVIS_STATE_DIR/kms
# (tests/integration/shared/test_kms.py).
deploy/kms/install.sh start
# Its wait (mostly Python importing PyKMIP, about 3 s) runs beside the broker's start and Hydra's.
deploy/kms/install.sh wait & kms_wait=$!
"$infra" wait
deploy/oidc/install.sh wait
wait "$kratos_up"
wait "$kms_wait"
# The broker's passwords (made by infra.sh): the suites' own clients connect as its
# administrator, each service as itself; then the topics and each service's ACLs.
set -a
# shellcheck disable=SC1091
source "$AVIS_STATE_DIR/kafka/users.env"
# shellcheck disable=SC1090
source <(deploy/kms/install.sh env)
set +a
.venv/bin/python -m avis.shared.topics
.venv/bin/python deploy/kafka/acls.py
if [ "${1:-}" = bench ]; then
  shift
  # Arguments that name bench files (`BENCH_ARGS="bench/bench_copies.py --quick"`) run only
  # those; the other arguments go to each file run.
  files=()
  args=()
  for a in "$@"; do
    case "$a" in
      bench/bench_*.py) files+=("$a") ;;
      *) args+=("$a") ;;
    esac
  done
  if [ ${#files[@]} -eq 0 ]; then
    for b in bench/bench_*.py; do
      [ "$b" = bench/bench_store.py ] && continue  # its own target: make bench-store
      files+=("$b")
    done
  fi
  exec_status=0
  for b in "${files[@]}"; do
    .venv/bin/python "$b" ${args[@]+"${args[@]}"} || exec_status=$?
  done
  exit $exec_status
fi
if [ "${1:-}" = bench-store ]; then
  shift
  # not exec: the EXIT trap must still stop the broker and store, also after a failed run
  .venv/bin/python bench/bench_store.py "$@"
  exit $?
fi
if [ "${1:-}" = chaos ]; then
  shift
  # not exec: the EXIT trap must still stop the broker and store; the run bounds its own time
  .venv/bin/python -m tests.reliability.chaos "$@"
  exit $?
fi
if [ -n "${lint_log:-}" ]; then
  echo "[test] lint: ruff and mypy"
  linted=0
  wait "$lint" || linted=$?
  cat "$lint_log"
  rm -f "$lint_log"
  [ "$linted" -eq 0 ] || exit "$linted"
fi
echo "[test] pytest"
# The slowest tests, to keep the run under its 30 minutes.
.venv/bin/python -m pytest --durations=60 "$@"
