#!/usr/bin/env bash
# The demo `make demo` runs: bring up a 3-node dev cluster and run a container on every node,
# printing each command and what came back. Later issues extend it to the seed's whole walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."
SHOAL=${SHOAL:-.venv/bin/shoal}

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$SHOAL" dev up --nodes 3 --label node1=disk=ssd
step "$SHOAL" dev status
eval "$("$SHOAL" dev env)"
for node in node1 node2 node3; do
  var="SHOAL_NODE_${node^^}"
  step docker -H "${!var}" run --rm -e NODE="$node" busybox sh -c 'echo "hello from container $(hostname) on $NODE"'
done
step docker -H "$SHOAL_NODE_NODE2" run -d --name demo-redis -p 6379:6379 redis
sleep 0.5
addr=${SHOAL_NODE_NODE2#tcp://}; addr=${addr%:*}
step redis-cli -h "$addr" set seed "microservices from scratch"
step redis-cli -h "$addr" get seed
step docker -H "$SHOAL_NODE_NODE2" rm -f demo-redis

cat <<MSG

The cluster is up. Point the docker CLI at it:
    eval "\$($SHOAL dev env)"        # DOCKER_HOST is node1 until the manager lands
    docker -H \$SHOAL_NODE_NODE2 ps
Take it down with:
    $SHOAL dev down
MSG
