#!/usr/bin/env bash
# A Byzantine validator in a real local cluster: the primary of view 0 runs the debug
# build of calisson-node (the only build with the test-only --byzantine modes) and takes
# the modes in turn, one per MODE_PERIOD seconds: equivocate (conflicting proposals and
# votes), garbage (random and corrupted frames), replay (old signed messages), withhold
# (no votes). The honest validators are killed and restarted one at a time meanwhile.
# Then the checks of Cluster/chaos/kill.sh, on the honest nodes.
#   Cluster/chaos/byzantine.sh                  # 20 minutes, 4 validators, 40 tx/s
#   DURATION=120 MODE_PERIOD=30 Cluster/chaos/byzantine.sh
# The JSON result goes to $OUT (default .cluster/chaos-byzantine-<date>.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-1200}
RATE=${RATE:-40}
VALIDATORS=${VALIDATORS:-4}
MODE_PERIOD=${MODE_PERIOD:-150}
OUT=${OUT:-.cluster/chaos-byzantine-$(date +%Y%m%dT%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
scripts/install-dependencies
swift build --product calisson-node
swift build -c release --product calisson-node
swift build -c release --product calisson-bench
.build/release/calisson-bench chaos --mix byzantine --byzantine-binary .build/debug/calisson-node --mode-period "$MODE_PERIOD" \
    --validators "$VALIDATORS" --duration "$DURATION" --rate "$RATE" --json "$OUT" ${SEED:+--seed "$SEED"}
