#!/usr/bin/env bash
# Stop the local cluster: SIGTERM to every node (they drain and stop cleanly), SIGKILL to
# any still running after 10 s. The data stay in $CALISSON_HOME until the next up.sh.
set -uo pipefail
source "$(dirname "$0")/common.sh"
[[ -f $CALISSON_HOME/pids ]] || { echo "down: no cluster in $CALISSON_HOME"; exit 0; }
mapfile -t PIDS < "$CALISSON_HOME/pids"
kill -TERM "${PIDS[@]}" 2>/dev/null
for _ in $(seq 1 100); do
    any_alive "${PIDS[@]}" || break
    sleep 0.1
done
if any_alive "${PIDS[@]}"; then
    late=()
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && late+=("$(ps -o comm= -p "$pid" 2>/dev/null || echo process) $pid")
    done
    echo "down: did not stop within 10 s, SIGKILL: ${late[*]}" >&2
    kill -KILL "${PIDS[@]}" 2>/dev/null
fi
rm -f "$CALISSON_HOME/pids"
echo "down: stopped"
