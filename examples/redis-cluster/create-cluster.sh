#!/bin/sh
# Once, when the six nodes run with redis.conf: make them one Redis Cluster, three primaries
# with one replica each (redis-cli gives each primary a replica on another machine).
#   REDISCLI_AUTH=<requirepass> sh create-cluster.sh [--cluster-yes]
# NODES lists the nodes, host:port (the first three become the primaries).
set -eu
: "${REDISCLI_AUTH:?set REDISCLI_AUTH to the nodes requirepass}"
export REDISCLI_AUTH
NODES="${NODES:-10.0.0.31:7000 10.0.0.32:7000 10.0.0.33:7000 10.0.0.34:7000 10.0.0.35:7000 10.0.0.36:7000}"
# shellcheck disable=SC2086 # NODES is a list of words
exec redis-cli --cluster create $NODES --cluster-replicas 1 "$@"
