#!/usr/bin/env bash
# Each node of the local cluster: its process, height, state root, view and links.
set -uo pipefail
source "$(dirname "$0")/common.sh"
[[ -f $CALISSON_HOME/env ]] || { echo "status: no cluster in $CALISSON_HOME (Cluster/local/up.sh)"; exit 1; }
mapfile -t PIDS < "$CALISSON_HOME/pids" 2>/dev/null || PIDS=()
status=0
for index in "${!NODES[@]}"; do
    pid=${PIDS[$index]:-}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then state="pid $pid"; else state="not running"; status=1; fi
    line=$(NODE_INDEX=$index cal status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("height %s  root %s…  view %s  linked to %s" % (s["height"], s["stateRoot"][:16], s["view"], s["peers"] or "nobody"))' 2>/dev/null) \
        || { line="no answer on port $(node_port "$index")"; status=1; }
    printf '%-16s %-14s %s\n' "${NODES[$index]}" "$state" "$line"
done
exit $status
