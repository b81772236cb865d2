#!/usr/bin/env bash
# Start a local cluster of N validators on loopback, in the background.
#   Cluster/local/up.sh [N]          # N = 4 by default
# Installs missing Debian packages, builds the release binaries, writes a test network
# (calisson-node testnet) into $CALISSON_HOME (default .cluster/), starts one
# calisson-node per validator, and returns once every node is linked to all the others
# and the cluster has finalized a first block. Ports: BASE_PORT (7100) + 2i for
# validators, + 2i + 1 for clients, BASE_PORT + 1000 + i for /metrics and /health.
# Environment: BASE_PORT, EPOCH_LENGTH (blocks per ledger epoch, 40), LOG_LEVEL (notice),
# CHAIN (calisson-local), SKIP_BUILD=1 to use the binaries already built.
set -euo pipefail
REQUESTED_BASE_PORT=${BASE_PORT:-}
source "$(dirname "$0")/common.sh"
VALIDATORS=${1:-4}
# The caller's BASE_PORT wins over the one a previous cluster left in $CALISSON_HOME/env.
BASE_PORT=${REQUESTED_BASE_PORT:-7100}
EPOCH_LENGTH=${EPOCH_LENGTH:-40}
LOG_LEVEL=${LOG_LEVEL:-notice}
CHAIN=${CHAIN:-calisson-local}

if [[ -f $CALISSON_HOME/pids ]] && mapfile -t running < "$CALISSON_HOME/pids" && any_alive "${running[@]}"; then
    echo "up: a cluster is already running in $CALISSON_HOME (Cluster/local/down.sh first)" >&2
    exit 1
fi
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    "$ROOT/scripts/install-dependencies"
    (cd "$ROOT" && swift build -c release --product calisson-node && swift build -c release --product calisson \
        && swift build -c release --product calisson-bench && swift build -c release --product calisson-gateway)
fi

rm -rf "$CALISSON_HOME" && mkdir -p "$CALISSON_HOME/logs"
"$BIN/calisson-node" testnet --validators "$VALIDATORS" --out "$NET" --base-port "$BASE_PORT" --chain-id "$CHAIN" \
    --epoch-length "$EPOCH_LENGTH"
NODES=()
for index in $(seq 0 $((VALIDATORS - 1))); do
    NODES+=("$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['validators'][int(sys.argv[2])])" "$NET/genesis.json" "$index")")
done
cat > "$CALISSON_HOME/env" <<ENV
VALIDATORS=$VALIDATORS
BASE_PORT=$BASE_PORT
CHAIN=$CHAIN
NODES=(${NODES[*]})
ENV

: > "$CALISSON_HOME/pids"
for node in "${NODES[@]}"; do
    nohup "$BIN/calisson-node" run --config "$NET/$node/config.json" --log-level "$LOG_LEVEL" \
        >> "$CALISSON_HOME/logs/$node.log" 2>&1 &
    echo $! >> "$CALISSON_HOME/pids"
done
echo "up: ${#NODES[@]} validators started (${NODES[*]}), logs in $CALISSON_HOME/logs"

# Every node answers and is linked to every other one, within LINK_SECONDS (90: debug
# builds on a loaded machine start slowly; the wait ends as soon as they are linked).
LINK_SECONDS=${LINK_SECONDS:-90}
deadline=$((SECONDS + LINK_SECONDS))
for index in $(seq 0 $((VALIDATORS - 1))); do
    linked=no
    while (( SECONDS < deadline )); do
        peers=$(NODE_INDEX=$index cal status --json 2>/dev/null \
            | python3 -c "import json,sys; p=json.load(sys.stdin)['peers']; print(len([x for x in p.split(',') if x]))" 2>/dev/null || echo 0)
        if [[ $peers -ge $((VALIDATORS - 1)) ]]; then linked=yes; break; fi
        sleep 0.1
    done
    if [[ $linked != yes ]]; then
        echo "up: ${NODES[$index]} is not linked to every other validator after $LINK_SECONDS s; see $CALISSON_HOME/logs/${NODES[$index]}.log" >&2
        tail -n 20 "$CALISSON_HOME/logs/${NODES[$index]}.log" >&2
        exit 1
    fi
done
# One attribution (to a throwaway account) shows that the cluster orders, executes and
# finalizes transactions (idle, it cuts only the empty blocks to its first checkpoint).
probe=$("$BIN/calisson" key generate --out "$CALISSON_HOME/probe.key")
cal submit attribute --key "$NET/metropole/signing.key" --as metropole --programme recyclage --account "$probe" \
    --evidence "cluster start $(date +%s%N)" > /dev/null
echo "up: the cluster finalized its first block; client ports $(node_port 0)...$(node_port $((VALIDATORS - 1))) step 2, CA $NET/ca.crt"
