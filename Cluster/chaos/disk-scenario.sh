#!/usr/bin/env bash
# Disk faults on one node of a real local cluster (needs root: it mounts tmpfs):
#   1. rtm's data directory is a small tmpfs that the workload fills: rtm must stop with a
#      clear error (exit status non-zero, "disk full" in its log) while the other three go
#      on; given room again, it must reopen its database (the start checks) and catch up.
#   2. friche's data directory is read-only when it starts: it must refuse with a clear
#      error; writable again, it must start and catch up.
# Then every node must have the same height and state root.
#   Cluster/chaos/disk-scenario.sh            # SKIP_BUILD=1 to use the release binaries already built
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "disk-scenario.sh: needs root (mount)" >&2; exit 2; }
BASE_PORT=${BASE_PORT:-7700}
BIN=.build/release
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    scripts/install-dependencies
    for product in calisson-node calisson calisson-bench; do swift build -c release --product "$product"; done
fi
WORK=$(mktemp -d /tmp/calisson-disk.XXXXXX)
NET=$WORK/net
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    umount "$NET/rtm/data" 2>/dev/null || true
    umount "$NET/friche/data" 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "disk-scenario.sh: FAILED: $*" >&2; echo "logs in $WORK" >&2; trap - EXIT; cleanup; exit 1; }

"$BIN/calisson-node" testnet --validators 4 --out "$NET" --base-port "$BASE_PORT" --transaction-lifetime 100000 > /dev/null
# The databases testnet made move into the small file systems (a node never starts on a
# database that is not there: its volume not mounted, say).
for node in rtm friche; do cp "$NET/$node/data/node.db" "$WORK/$node.db"; done
mount -t tmpfs -o size=3m tmpfs "$NET/rtm/data"
mount -t tmpfs -o size=64m tmpfs "$NET/friche/data"
for node in rtm friche; do cp "$WORK/$node.db" "$NET/$node/data/node.db"; done
IDS=(metropole rtm tri-metropole friche)
start() { "$BIN/calisson-node" run --config "$NET/$1/config.json" --log-level notice >> "$WORK/$1.log" 2>&1 & PIDS[$2]=$!; }
for index in 0 1 2 3; do start "${IDS[$index]}" "$index"; done
status() { "$BIN/calisson" status --json --node "127.0.0.1:$((BASE_PORT + 2 * $1 + 1))" --ca "$NET/ca.crt" --chain calisson-local 2>/dev/null; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
for index in 0 1 2 3; do
    for _ in $(seq 1 100); do status "$index" > /dev/null && break; sleep 0.2; done
done
sleep 2

echo "== 1. rtm's disk fills up (3 MiB tmpfs)"
for round in $(seq 1 30); do
    "$BIN/calisson-bench" workload --testnet "$NET" --transactions 500 --citizens 300 --timeout 120 > "$WORK/workload-$round.txt" 2>&1 || true
    kill -0 "${PIDS[1]}" 2>/dev/null || break
done
if kill -0 "${PIDS[1]}" 2>/dev/null; then fail "rtm still runs on a full disk"; fi
wait "${PIDS[1]}" && fail "rtm exited with status 0 on a full disk" || echo "   rtm stopped, exit status $?"
grep -iE "full" "$WORK/rtm.log" | tail -2 | sed 's/^/   /'
grep -qiE "disk is full|disk.?full" "$WORK/rtm.log" || fail "rtm's log does not say the disk is full"
"$BIN/calisson-bench" workload --testnet "$NET" --transactions 200 --citizens 300 --timeout 120 > "$WORK/workload-after-full.txt" 2>&1 \
    || fail "the other three did not go on without rtm"
echo "   the other three went on: $(tail -3 "$WORK/workload-after-full.txt" | head -1)"
mount -o remount,size=256m "$NET/rtm/data"
start rtm 1
echo "   rtm restarted with room"

echo "== 2. friche's data directory is read-only when it starts"
# A mount cannot turn read-only under a process writing to it (busy), so: stop friche,
# remount its directory read-only, start it, more blocks come meanwhile.
kill -TERM "${PIDS[3]}"; wait "${PIDS[3]}" || true
mount -o remount,ro "$NET/friche/data"
start friche 3
for _ in $(seq 1 100); do kill -0 "${PIDS[3]}" 2>/dev/null || break; sleep 0.1; done
if kill -0 "${PIDS[3]}" 2>/dev/null; then fail "friche runs on a read-only directory"; fi
wait "${PIDS[3]}" && fail "friche exited with status 0 on a read-only directory" || echo "   friche stopped, exit status $?"
tail -2 "$WORK/friche.log" | sed 's/^/   /'
grep -qiE "not writable: read-only" "$WORK/friche.log" || fail "friche's log does not say that its directory is read-only"
"$BIN/calisson-bench" workload --testnet "$NET" --transactions 200 --citizens 300 --timeout 120 > "$WORK/workload-ro.txt" 2>&1 \
    || fail "the other three did not go on without friche"
mount -o remount,rw "$NET/friche/data"
start friche 3
echo "   friche restarted on a writable directory"

echo "== every node at the same height and root"
"$BIN/calisson-bench" workload --testnet "$NET" --transactions 50 --citizens 300 --timeout 120 > "$WORK/workload-last.txt" 2>&1 \
    || fail "the cluster does not finalize after the faults"
for _ in $(seq 1 300); do
    states=$(for index in 0 1 2 3; do status "$index" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["height"], s["stateRoot"])' 2>/dev/null || echo "?"; done | sort -u)
    [[ $(echo "$states" | wc -l) == 1 && $states != "?" ]] && break
    sleep 0.2
done
[[ $(echo "$states" | wc -l) == 1 && $states != "?" ]] || fail "the nodes disagree or do not answer: $states"
echo "   all four at height ${states% *}, root ${states#* }"
echo "disk-scenario.sh: passed"
