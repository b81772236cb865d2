#!/usr/bin/env bash
# Start calisson-gateway in front of the local cluster's nodes (all of them: it fails over
# between them and checks every answer against the genesis validators' certificates), with
# a fresh API key and the testnet's settlement register, and read a few records through it
# with curl, as a partner back-end in any language would (Docs/API.md); then the public
# dashboard, its open data, and a settlement file (Docs/DASHBOARD.md, Docs/SETTLEMENT.md). The gateway is stopped with the cluster
# (Cluster/local/down.sh). Its address and key are in $CALISSON_HOME/gateway.env.
set -euo pipefail
source "$(dirname "$0")/common.sh"
GATEWAY_PORT=$((BASE_PORT + 900))
key_output=$("$BIN/calisson-gateway" key --name make-run --scopes read,submit,govern)
KEY=$(sed -n 's/^key *//p' <<< "$key_output")
printf '{"keys": [%s]}\n' "$(sed -n 's/^entry *//p' <<< "$key_output")" > "$CALISSON_HOME/gateway-keys.json"
nodes=()
for index in "${!NODES[@]}"; do nodes+=(--node "127.0.0.1:$(node_port "$index")"); done
# It signs rewards for the transit operator, rtm, with rtm's signing and evidence keys.
nohup "$BIN/calisson-gateway" run "${nodes[@]}" --ca "$NET/ca.crt" --genesis "$NET/genesis.json" \
    --api-keys "$CALISSON_HOME/gateway-keys.json" --listen "127.0.0.1:$GATEWAY_PORT" \
    --partner rtm --signing-key "$NET/rtm/signing.key" --state-dir "$CALISSON_HOME/gateway" \
    --settlement-register "$NET/settlement-register.json" >> "$CALISSON_HOME/logs/gateway.log" 2>&1 &
echo $! >> "$CALISSON_HOME/pids"
printf 'GATEWAY=http://127.0.0.1:%s\nGATEWAY_KEY=%s\n' "$GATEWAY_PORT" "$KEY" > "$CALISSON_HOME/gateway.env"
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$GATEWAY_PORT/health" > /dev/null && break
    sleep 0.1
done

printf '\n\033[1m== The gateway (HTTP/JSON, every answer verified): http://127.0.0.1:%s\033[0m\n' "$GATEWAY_PORT"
api() { echo "\$ curl -H 'Authorization: Bearer …' http://127.0.0.1:$GATEWAY_PORT$1"; curl -sS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT$1"; echo; }
api /v1/status
amina=$("$BIN/calisson" key show --key "$CALISSON_HOME/scenario/amina.key")
api /v1/programmes/culture
api /v1/partners/velo-partage
echo "-- rtm's ticketing back-end rewards Amina for a bus trip, through the gateway (which signs for rtm), and waits"
echo "   until the certified state proves the result (wait=certified: about a checkpoint interval after finality)"
reward() {
    echo "\$ curl -X POST -H 'Idempotency-Key: trip-2026-11-22-A-0413' 'http://127.0.0.1:$GATEWAY_PORT/v1/rewards?wait=certified'"
    rewarded=$(curl -sS -X POST -H "Authorization: Bearer $KEY" -H 'Idempotency-Key: trip-2026-11-22-A-0413' -H 'Content-Type: application/json' \
        -d "{\"programme\": \"mobilite\", \"account\": \"$amina\", \"units\": 1, \"evidence\": \"rtm trip log 2026-11-22 #A-0413\"}" \
        "http://127.0.0.1:$GATEWAY_PORT/v1/rewards?wait=certified")
    echo "$rewarded"
    python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("resultVerified") is not True)' <<< "$rewarded" \
        || { echo "gateway: the reward's result is not proven" >&2; exit 1; }
}
reward
echo "-- the back-end retries (a lost answer): the same transaction, nothing rewarded twice"
reward
echo "-- Amina's wallet signs two bus tickets of 1 token (calisson submit redeem --sign-only); the ticketing"
echo "   back-end sends both in one batch, then again (a lost answer): each is relayed once"
tickets=() ticket_ids=()
for ticket in 18h05 18h40; do
    signed=$(NODE_INDEX=1 cal submit redeem --key "$CALISSON_HOME/scenario/amina.key" --acceptor rtm --amount 1 \
        --service "rtm ticket $ticket" --evidence-key "$NET/rtm/evidence.key" --sign-only)
    tickets+=("$(sed -n 's/^signed *//p' <<< "$signed")")
    ticket_ids+=("$(sed -n 's/^transaction *//p' <<< "$signed")")
done
batch() {
    echo "\$ curl -X POST -d '{\"transactions\": [\"<signed hex>\", \"<signed hex>\"]}' http://127.0.0.1:$GATEWAY_PORT/v1/transaction-batches"
    curl -sS -X POST -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{\"transactions\": [\"${tickets[0]}\", \"${tickets[1]}\"]}" "http://127.0.0.1:$GATEWAY_PORT/v1/transaction-batches"; echo
}
batch
batch
echo "-- the first ticket once final: its block, result and verified inclusion"
field() { python3 -c "import json,sys; v=json.load(sys.stdin); [v := v.get(k, {}) for k in sys.argv[1:]]; print(v if v != {} else 0)" "$@"; }
ticket_height=0
for _ in $(seq 1 100); do
    heights=()
    for id in "${ticket_ids[@]}"; do
        heights+=("$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/transactions/$id" | field height || echo 0)")
    done
    if (( heights[0] > 0 && heights[1] > 0 )); then
        ticket_height=$(( heights[0] > heights[1] ? heights[0] : heights[1] ))
        break
    fi
    sleep 0.1
done
api "/v1/transactions/${ticket_ids[0]}"
echo "-- Amina's account as certified at the latest stable checkpoint, once one covers the tickets' block $ticket_height"
echo "   (with no more transactions coming, the primary completes the checkpoint interval with empty blocks)"
started=$(date +%s%N)
for _ in $(seq 1 100); do
    covered=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/accounts/$amina" | field verification checkpointHeight || echo 0)
    (( covered >= ticket_height )) && break
    sleep 0.1
done
echo "   covered after $(( ($(date +%s%N) - started) / 1000000 )) ms"
api "/v1/accounts/$amina"
echo "-- the first ticket again: a certified checkpoint covers its block now, so its result is proven too (resultVerified)"
for _ in $(seq 1 100); do
    proven=$(curl -sf -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/transactions/${ticket_ids[0]}" | field resultVerified || echo 0)
    [[ $proven == True ]] && break
    sleep 0.1
done
api "/v1/transactions/${ticket_ids[0]}"
[[ $proven == True ]] || { echo "gateway: the ticket's result is not proven" >&2; exit 1; }
echo "-- the event feed (Server-Sent Events, resumable with Last-Event-ID): Amina's transactions from block 1, checked block by block"
echo "\$ curl -N -H 'Authorization: Bearer …' 'http://127.0.0.1:$GATEWAY_PORT/v1/events?from=1&account=$amina'"
curl -sN --max-time 3 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/events?from=1&account=$amina" \
    | grep -E '^(id|event|data):' | cut -c1-200 | head -n 12 || true
echo "-- the same feed, certified: each block's events once a certified checkpoint above it confirms them (results, decisions, epoch closes)"
echo "\$ curl -N -H 'Authorization: Bearer …' 'http://127.0.0.1:$GATEWAY_PORT/v1/events?from=1&account=$amina&certified=true'"
certified_feed=$(curl -sN --max-time 5 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/events?from=1&account=$amina&certified=true" \
    | grep -E '^(id|event|data):' | head -n 6 || true)
cut -c1-240 <<<"$certified_feed"
grep -q '"resultVerified":true' <<<"$certified_feed" || { echo "gateway: the certified feed gave no verified result" >&2; exit 1; }
echo "\$ curl http://127.0.0.1:$GATEWAY_PORT/v1/supply   (no key)"
curl -sS "http://127.0.0.1:$GATEWAY_PORT/v1/supply"; echo
echo "-- what the Métropole and the public see, no key needed: the dashboard (HTML), its open data and the proof of each figure"
for page in /fr/ /en/partners "/open-data/v1/programmes.csv" /proofs/supply; do
    curl -sS -o /dev/null -w "   GET $page: %{http_code}, %{size_download} bytes, %{time_total} s\n" "http://127.0.0.1:$GATEWAY_PORT$page"
done
curl -sS "http://127.0.0.1:$GATEWAY_PORT/open-data/v1/partners.csv" | head -n 6 | sed 's/^/   /'
echo "-- the treasury's settlement file for epoch 0 through the gateway (govern scope)"
curl -sS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GATEWAY_PORT/v1/settlements/0/accounting.csv" | cut -c1-110 | sed 's/^/   /'
if [[ ${KEEP:-0} == 1 ]]; then
    echo "gateway: http://127.0.0.1:$GATEWAY_PORT, API key $KEY (also in $CALISSON_HOME/gateway.env); Docs/API.md"
    echo "dashboard: http://127.0.0.1:$GATEWAY_PORT/fr/ (English: /en/); open data: http://127.0.0.1:$GATEWAY_PORT/open-data/v1/; Docs/DASHBOARD.md"
fi
