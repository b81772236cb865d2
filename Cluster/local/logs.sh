#!/usr/bin/env bash
# Follow the local cluster's logs: every node's, or one node's (Cluster/local/logs.sh rtm).
set -uo pipefail
source "$(dirname "$0")/common.sh"
if [[ $# -gt 0 ]]; then exec tail -n 50 -F "$CALISSON_HOME/logs/$1.log"; fi
exec tail -n 20 -F "$CALISSON_HOME"/logs/*.log
