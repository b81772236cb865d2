#!/usr/bin/env bash
# Crash faults on a real local cluster: validators killed with SIGKILL at random moments
# (f at a time at most) and restarted, under a steady signed workload; then the checks
# (calisson-bench chaos --help): every transaction acknowledged final is in every node's
# chain, equal state roots at every height, balances add up, no other node stopped.
#   Cluster/chaos/kill.sh                 # 20 minutes, 4 validators, 40 tx/s
#   DURATION=120 RATE=20 Cluster/chaos/kill.sh
# The JSON result goes to $OUT (default .cluster/chaos-kill-<date>.json); exit status 1 on a failure,
# with the cluster's logs and databases kept (the path is printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-1200}
RATE=${RATE:-40}
VALIDATORS=${VALIDATORS:-4}
OUT=${OUT:-.cluster/chaos-kill-$(date +%Y%m%dT%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
scripts/install-dependencies
swift build -c release --product calisson-node
swift build -c release --product calisson-bench
.build/release/calisson-bench chaos --validators "$VALIDATORS" --duration "$DURATION" --rate "$RATE" --json "$OUT" ${SEED:+--seed "$SEED"}
