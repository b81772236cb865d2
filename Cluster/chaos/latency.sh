#!/usr/bin/env bash
# Latency, jitter and loss on the links of a real local cluster: every validator link goes
# through a relay on 127.0.0.1 that delays what it forwards (25 ± 10 ms each way); the
# faults are latency spikes of 200-600 ms on one link, loss bursts (one link holds
# everything for 2-10 s, as TCP does while it retransmits), and every link five times
# slower. It stands in for tc netem, which this machine's kernel lacks. Then the checks
# of Cluster/chaos/kill.sh.
#   Cluster/chaos/latency.sh                 # 20 minutes, 4 validators, 40 tx/s
#   DURATION=120 DELAY=50 JITTER=20 Cluster/chaos/latency.sh
# The JSON result goes to $OUT (default .cluster/chaos-latency-<date>.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-1200}
RATE=${RATE:-40}
VALIDATORS=${VALIDATORS:-4}
DELAY=${DELAY:-25}
JITTER=${JITTER:-10}
OUT=${OUT:-.cluster/chaos-latency-$(date +%Y%m%dT%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
scripts/install-dependencies
swift build -c release --product calisson-node
swift build -c release --product calisson-bench
.build/release/calisson-bench chaos --mix latency --delay "$DELAY" --jitter "$JITTER" --validators "$VALIDATORS" \
    --duration "$DURATION" --rate "$RATE" --down 2 --down 10 --gap 2 --gap 6 --json "$OUT" ${SEED:+--seed "$SEED"}
