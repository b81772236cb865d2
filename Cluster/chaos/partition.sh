#!/usr/bin/env bash
# Network partitions on a real local cluster (root): each validator in a network namespace
# of its own, joined by veth pairs to a bridge in a namespace made here for the driver
# (never the host's); the faults are silent partitions held for 2-10 s then healed: the
# primary isolated, one node isolated, the validators split in halves, one link cut.
# Then the same checks as Cluster/chaos/kill.sh.
#   sudo Cluster/chaos/partition.sh                 # 20 minutes, 4 validators, 40 tx/s
#   sudo DURATION=120 Cluster/chaos/partition.sh
# The JSON result goes to $OUT (default .cluster/chaos-partition-<date>.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "partition.sh: needs root (network namespaces)" >&2; exit 2; }
DURATION=${DURATION:-1200}
RATE=${RATE:-40}
VALIDATORS=${VALIDATORS:-4}
OUT=${OUT:-.cluster/chaos-partition-$(date +%Y%m%dT%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
scripts/install-dependencies
command -v ip >/dev/null || apt-get install -y iproute2
swift build -c release --product calisson-node
swift build -c release --product calisson-bench
hub=calisson-hub-$$
ip netns add "$hub"
ip -n "$hub" link set lo up
trap 'ip netns del "$hub" 2>/dev/null || true' EXIT
ip netns exec "$hub" .build/release/calisson-bench chaos --mix partition --validators "$VALIDATORS" --duration "$DURATION" \
    --rate "$RATE" --down 2 --down 10 --gap 2 --gap 6 --json "$OUT" ${SEED:+--seed "$SEED"}
