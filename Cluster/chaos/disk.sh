#!/usr/bin/env bash
# Disk faults on a real local cluster (root: tmpfs mounts), one node at a time, under a
# steady signed workload: its disk filled (it must stop with "the disk is full", exit
# status 1; it is given room and restarted) or its data directory read-only at start (it
# must refuse with "not writable", exit status 1; made writable and restarted). Then the
# checks of Cluster/chaos/kill.sh. The scripted walk-through of the same faults, with the
# other nodes' behaviour shown step by step, is Cluster/chaos/disk-scenario.sh.
#   sudo Cluster/chaos/disk.sh                 # 20 minutes, 4 validators, 40 tx/s
#   sudo DURATION=120 Cluster/chaos/disk.sh
# The JSON result goes to $OUT (default .cluster/chaos-disk-<date>.json).
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) -eq 0 ]] || { echo "disk.sh: needs root (tmpfs mounts)" >&2; exit 2; }
DURATION=${DURATION:-1200}
RATE=${RATE:-40}
VALIDATORS=${VALIDATORS:-4}
OUT=${OUT:-.cluster/chaos-disk-$(date +%Y%m%dT%H%M%S).json}
mkdir -p "$(dirname "$OUT")"
scripts/install-dependencies
swift build -c release --product calisson-node
swift build -c release --product calisson-bench
.build/release/calisson-bench chaos --mix disk --validators "$VALIDATORS" --duration "$DURATION" --rate "$RATE" \
    --gap 2 --gap 8 --down 1 --down 4 --json "$OUT" ${SEED:+--seed "$SEED"}
