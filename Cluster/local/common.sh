# Shared by the Cluster/local scripts and Cluster/scenario: where the local cluster lives
# and how to reach it. Source it; do not run it.
#   CALISSON_HOME   the cluster's directory (default: .cluster in the repository)
#   BIN             where the release binaries are (default: .build/release)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CALISSON_HOME=${CALISSON_HOME:-$ROOT/.cluster}
BIN=${BIN:-$ROOT/.build/release}
NET=$CALISSON_HOME/net
if [[ -f $CALISSON_HOME/env ]]; then
    # shellcheck disable=SC1091
    source "$CALISSON_HOME/env"   # VALIDATORS, BASE_PORT, CHAIN, NODES (partner ids in order)
fi

# calisson against node $NODE_INDEX (default 0), through its client port, with the CA.
node_port() { echo $((BASE_PORT + 2 * ${1:-0} + 1)); }
cal() { "$BIN/calisson" "$@" --node "127.0.0.1:$(node_port "${NODE_INDEX:-0}")" --ca "$NET/ca.crt" --chain "$CHAIN"; }
# The same, every answer certified: checked against checkpoint certificates of the genesis validators,
# and fresh: not more than 32 blocks behind the newest checkpoint node 1 (a witness) certifies.
certified() { cal "$@" --genesis "$NET/genesis.json" --witness "127.0.0.1:$(node_port 1)"; }

# Whether any of the given pids is still running.
any_alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
