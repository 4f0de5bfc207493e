#!/usr/bin/env bash
# `make test`: the whole suite as two groups run side by side, each on its own clusters, so the suite
# takes the longer of the two instead of their sum. Group "fast" needs no session cluster: unit tests,
# the registry (loopback ports, its own etcd netns on 10.99.20.0/24) and the contracts (their own
# 1-node cluster on 10.99.53.0/24). Group "cluster" is every test on the session's 3-node dev cluster.
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
$PYTEST -q -rs -p no:cacheprovider tests/e2e tests/acceptance "$@" >"$out/cluster" 2>&1 &
cluster=$!

wait "$fast"; rf=$?
wait "$cluster"; rc=$?
for g in fast cluster; do
    echo "=== group $g ==="
    cat "$out/$g"
done
echo "=== group fast: $(tail -n 1 "$out/fast")"
echo "=== group cluster: $(tail -n 1 "$out/cluster")"
exit $((rf != 0 || rc != 0))
