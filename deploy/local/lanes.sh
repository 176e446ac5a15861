#!/usr/bin/env bash
# `make test` without PYTEST_ARGS: the suite in two lanes side by side, each against a stack of its
# own (the second on TEST_PORT_PREFIX + 1 and TEST_STATE-lane2). Most of the suite waits on its
# broker, store and services rather than computing, so two lanes on two cores take about two
# thirds of the time of one (24.5 against 36.4 minutes). The lanes split the suite in halves of
# about equal length (the durations at the end of each lane's output say where to move a folder).
# `TEST_LANES=1` runs one.
set -uo pipefail
make_cmd=$1 prefix=$2 state=$3
one="tests/unit tests/integration"
two="tests/reliability tests/e2e tests/browser tests/deploy tests/contract"
log="$state-lane2.log"
mkdir -p "$(dirname "$log")"
echo "[test] lane 1: $one (prefix $prefix); lane 2: $two (prefix $((prefix + 1)), output in $log, shown at the end)"
# Lane 1 runs the lint for both; lane 2 has pytest's temporary folders of its own.
temp="$(mktemp -d)"
trap 'rm -rf "$temp"' EXIT
AVIS_TEST_LINT=0 PYTEST_DEBUG_TEMPROOT="$temp" "$make_cmd" --no-print-directory test-lane \
  TEST_PORT_PREFIX=$((prefix + 1)) TEST_STATE="$state-lane2" PYTEST_ARGS="$two" >"$log" 2>&1 &
lane2=$!
"$make_cmd" --no-print-directory test-lane TEST_PORT_PREFIX="$prefix" TEST_STATE="$state" PYTEST_ARGS="$one"
first=$?
wait "$lane2"
second=$?
echo "[test] lane 2 ($two):"
cat "$log"
echo "[test] lane 1 exited $first, lane 2 exited $second"
exit $((first || second))
