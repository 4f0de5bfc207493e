#!/usr/bin/env bash
# `make test`: the whole suite as three groups run side by side, each on its own clusters, so the suite
# takes the longest of them instead of their sum. Group "fast" needs no session cluster: unit tests,
# the registry (loopback ports, its own etcd netns on 10.99.20.0/24) and the contracts (their own
# 1-node cluster on 10.99.53.0/24). Groups "cluster" and "data" each bring up a 3-node session dev
# cluster of their own (10.99.1.0/24 and 10.99.31.0/24): "data" holds the dataset, move and failover
# tests and the walkthrough; "cluster" every other end-to-end test.
# The tests mostly wait on engines and agents, so three groups share two cores well.
# Extra arguments go to both pytest runs. Each group's output is printed once it ends; the exit code is
# non-zero if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=.venv/bin/pytest
out=$(mktemp -d /tmp/shoal-test.XXXXXX)
trap 'rm -rf "$out"' EXIT

SHOAL_TEST_CLUSTER=sf SHOAL_TEST_SUBNET=10.99.30.0/24 SHOAL_TEST_ROOT=/var/lib/shoal/test-f \
    $PYTEST -q -rs -p no:cacheprovider tests/unit tests/registry tests/contract "$@" >"$out/fast" 2>&1 &
fast=$!
data=(tests/e2e/test_datasets.py tests/e2e/test_moves.py tests/e2e/test_failover.py tests/acceptance)
ignore=()
for f in "${data[@]}"; do ignore+=("--ignore=$f"); done
$PYTEST -q -rs -p no:cacheprovider tests/e2e "${ignore[@]}" "$@" >"$out/cluster" 2>&1 &
cluster=$!
SHOAL_TEST_CLUSTER=sd SHOAL_TEST_SUBNET=10.99.31.0/24 SHOAL_TEST_ROOT=/var/lib/shoal/test-d \
    $PYTEST -q -rs -p no:cacheprovider "${data[@]}" "$@" >"$out/data" 2>&1 &
data_pid=$!

wait "$fast"; rf=$?
wait "$cluster"; rc=$?
wait "$data_pid"; rd=$?
for g in fast cluster data; do
    echo "=== group $g ==="
    cat "$out/$g"
done
for g in fast cluster data; do
    echo "=== group $g: $(tail -n 1 "$out/$g")"
done
exit $((rf != 0 || rc != 0 || rd != 0))
