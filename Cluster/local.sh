#!/usr/bin/env bash
# Calisson's main job on one machine (`make run`): a local cluster of validators on
# loopback, a day of the nudge money played on it (Cluster/scenario, ending with a bulk
# workload until a ledger epoch closes), the query CLI reading the result, certified, and
# every node's height and state root; then the cluster is stopped.
#   Cluster/local.sh                  # 4 validators
#   VALIDATORS=7 WORKLOAD=2000 Cluster/local.sh
# Builds in release, installs missing Debian packages first (scripts/install-dependencies).
# KEEP=1 leaves the cluster and the gateway running (Cluster/local/status.sh, down.sh) and
# prints the gateway's address and API key.
set -euo pipefail
cd "$(dirname "$0")/.."
VALIDATORS=${VALIDATORS:-4}
export CALISSON_HOME=${CALISSON_HOME:-$PWD/.cluster}

Cluster/local/down.sh > /dev/null 2>&1 || true
[[ ${KEEP:-0} == 1 ]] || trap 'Cluster/local/down.sh' EXIT
Cluster/local/up.sh "$VALIDATORS"
Cluster/scenario
source Cluster/local/common.sh

printf '\n\033[1m== The cluster\033[0m\n'
Cluster/local/status.sh
echo "-- GET /health and /metrics (a few lines) on the Métropole's node"
http_get() { exec 3<>"/dev/tcp/127.0.0.1/$1"; printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3; cat <&3; exec 3<&-; }
http_get $((BASE_PORT + 1000)) /health | tail -1
http_get $((BASE_PORT + 1000)) /metrics | grep -E '^calisson_(height|blocks_executed_total|transactions_applied_total|linked_validators) '
Cluster/local/gateway.sh
echo "-- a partner database read directly, read-only, while its node runs (calisson --db)"
"$BIN/calisson" supply --db "$NET/rtm/data/node.db"
# Every node reaches the same height and state root.
for _ in $(seq 1 100); do
    states=$(for index in "${!NODES[@]}"; do NODE_INDEX=$index cal status --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["height"], s["stateRoot"])'; done | sort -u)
    [[ $(echo "$states" | wc -l) == 1 ]] && break
    sleep 0.1
done
if [[ $(echo "$states" | wc -l) != 1 ]]; then echo "local: the nodes disagree: $states" >&2; exit 1; fi
echo "-- all ${#NODES[@]} nodes at height ${states% *}, state root ${states#* }"
