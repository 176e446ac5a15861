#!/usr/bin/env bash
# Run the suite (or `bench`, `bench-store`, `chaos`) against a fresh broker and store of its own, then stop them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
infra="deploy/local/infra.sh"
rm -rf "$AVIS_STATE_DIR"
trap '"$infra" stop' EXIT
"$infra" start
"$infra" wait
.venv/bin/python -m avis.shared.topics
if [ "${1:-}" = bench ]; then
  shift
  exec_status=0
  for b in bench/bench_*.py; do
    [ "$b" = bench/bench_store.py ] && continue  # its own target: make bench-store
    .venv/bin/python "$b" "$@" || exec_status=$?
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
echo "[test] lint: ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "[test] pytest"
.venv/bin/python -m pytest "$@"
