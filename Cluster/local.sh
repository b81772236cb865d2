#!/usr/bin/env bash
# Calisson's main job on one machine: a local cluster of validators on loopback, a
# workload of signed transactions, and the query CLI reading the result.
#   Cluster/local.sh                 # 4 validators, 2,000 attributions (+ redemptions)
#   VALIDATORS=7 TRANSACTIONS=5000 Cluster/local.sh
# Builds in release, installs missing Debian packages first (scripts/install-dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
VALIDATORS=${VALIDATORS:-4}
TRANSACTIONS=${TRANSACTIONS:-2000}
BASE_PORT=${BASE_PORT:-7100}
OUT=${OUT:-$(mktemp -d /tmp/calisson-testnet.XXXXXX)}

scripts/install-dependencies
swift build -c release --product calisson-node
swift build -c release --product calisson
swift build -c release --product calisson-bench
BIN=.build/release

rm -rf "$OUT" && mkdir -p "$OUT"
"$BIN/calisson-node" testnet --validators "$VALIDATORS" --out "$OUT/net" --base-port "$BASE_PORT"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for config in "$OUT"/net/*/config.json; do
    node=$(basename "$(dirname "$config")")
    "$BIN/calisson-node" run --config "$config" --log-level notice > "$OUT/$node.log" 2>&1 &
    PIDS+=($!)
done
echo "cluster: ${#PIDS[@]} validators running, logs in $OUT"

query() { "$BIN/calisson" "$@" --node "127.0.0.1:$((BASE_PORT + 1))" --ca "$OUT/net/ca.crt" --chain calisson-local; }
PORTS=$(seq $((BASE_PORT + 1)) 2 $((BASE_PORT + 2 * VALIDATORS - 1)))
for port in $PORTS; do   # every node answers before the workload starts
    for _ in $(seq 1 200); do
        "$BIN/calisson" status --node "127.0.0.1:$port" --ca "$OUT/net/ca.crt" --chain calisson-local > /dev/null 2>&1 && break
        sleep 0.1
    done
done

"$BIN/calisson-bench" workload --testnet "$OUT/net" --transactions "$TRANSACTIONS" | tee "$OUT/workload.txt"
CITIZEN=$(sed -n 's/.*citizen 0.s account is //p' "$OUT/workload.txt")
FIRST=$(sed -n 's/.*the first transaction is //p' "$OUT/workload.txt")

echo; echo "== calisson status"; query status
echo; echo "== calisson supply"; query supply
echo; echo "== calisson programme recyclage --genesis (certified: checkpoint certificate + proof)"
query programme recyclage --genesis "$OUT/net/genesis.json"
echo; echo "== calisson tx --genesis (the first transaction: inclusion proof + commit certificate)"
query tx "$FIRST" --genesis "$OUT/net/genesis.json"
echo; echo "== calisson account (citizen 0)"; query account "$CITIZEN" --limit 5
echo; echo "== calisson validators"; query validators
echo; echo "== calisson supply --db (rtm's database, read-only, while the node runs)"
"$BIN/calisson" supply --db "$OUT/net/rtm/data/node.db"
echo; echo "== GET /health and /metrics (first lines) on the Métropole's node"
http_get() { exec 3<>"/dev/tcp/127.0.0.1/$1"; printf 'GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n' "$2" >&3; cat <&3; exec 3<&-; }
http_get $((BASE_PORT + 1000)) /health | tail -1
http_get $((BASE_PORT + 1000)) /metrics | grep -E '^calisson_(height|blocks_executed_total|transactions_applied_total|linked_validators) '
echo; echo "== every node's height and state root"
for port in $PORTS; do
    "$BIN/calisson" status --json --node "127.0.0.1:$port" --ca "$OUT/net/ca.crt" --chain calisson-local
done
