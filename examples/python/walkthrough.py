"""A partner back-end's day through the gateway, in Python: read the chain's status,
reward a citizen (the gateway signs for its partner), let the citizen's wallet redeem part
of it at an acceptor (the wallet signs; the gateway checks and relays; answered once its
result is proven), retry the same
redemption (no second effect), read the account, send two more redemptions in one batch
(twice: no second effect either), and find the first redemption in the event feed.

    python walkthrough.py --gateway http://127.0.0.1:8080 --key cal_… --programme mobilite --acceptor friche
"""

import argparse
import hashlib
import sys
import time

import calisson


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--key", required=True, help="an API key with the read and submit scopes")
    parser.add_argument("--programme", required=True)
    parser.add_argument("--acceptor", required=True)
    parser.add_argument("--wallet-seed", default=hashlib.sha256(b"walkthrough wallet").hexdigest())
    arguments = parser.parse_args()

    gateway = calisson.Gateway(arguments.gateway, arguments.key)
    wallet = calisson.Wallet(bytes.fromhex(arguments.wallet_seed))
    status = gateway.status()
    chain_id, height = status["chainId"], status["newestCertifiedHeight"]
    print(f"chain {chain_id}, certified height {height}, wallet {wallet.account}")

    evidence = hashlib.sha256(f"walkthrough gesture of {wallet.account}".encode()).hexdigest()
    reward = gateway.reward("walkthrough-reward-1", arguments.programme, wallet.account, 5, evidence)
    print(f"reward: {reward['status']} {reward.get('result')} at height {reward.get('height')}")
    if reward.get("result") != "applied":
        return fail(f"the reward was not applied: {reward}")
    balance = gateway.account(wallet.account)["balance"]
    print(f"balance after the reward: {balance} (certified at checkpoint {gateway.account(wallet.account)['verification']['checkpointHeight']})")

    service = hashlib.sha256(b"walkthrough museum ticket").hexdigest()
    expiry = reward["height"] + 200
    # Answered once the certified state proves its result, not on the word of the node
    # that gave its block.
    started = time.monotonic()
    first = gateway.redeem(wallet, chain_id, 1, expiry, arguments.acceptor, 20, service, wait="certified")
    waited = time.monotonic() - started
    if first.get("resultVerified") is not True:
        # 202: the gateway's 30 s ran out before a certified checkpoint covered the block
        # (a heavily loaded machine). Anything sooner is a failure: the wait promises a
        # proven result or its whole time.
        print(f"redemption: {first['status']}, its result not proven after {waited:.1f} s; following its URL")
        if waited < 29:
            return fail(f"the redemption came back unproven before the gateway's time ran out: {first}")
        first = gateway.wait_proven(first["id"])
    again = gateway.redeem(wallet, chain_id, 1, expiry, arguments.acceptor, 20, service)
    print(f"redemption: {first['result']} as {first['id']} (result proven at checkpoint {first.get('resultCheckpoint')}, "
          f"answered in {waited:.1f} s); "
          f"the same request again: {again['id']}")
    if first.get("result") != "applied" or first.get("resultVerified") is not True or again["id"] != first["id"]:
        return fail(f"the redemption was not applied once, its result proven: {first} / {again}")
    try:
        gateway.redeem(wallet, chain_id, 2, expiry, arguments.acceptor, 10**18, service)
        return fail("an amount past the ledger's bound was accepted")
    except calisson.GatewayError as error:
        print(f"an amount past the bound: {error.status} ({error.problem['detail']})")

    # Two redemptions the wallet signs, sent in one batch; the same batch again is the same transactions.
    signed = [wallet.sign(chain_id, nonce, expiry, {"kind": "redeem", "acceptor": arguments.acceptor, "amount": 1, "service": service})[1]
              for nonce in (10, 11)]
    batch = gateway.submit_batch(signed)
    resent = gateway.submit_batch(signed)
    finals = [gateway.wait_final(state["id"]) for state in batch]
    print(f"a batch of two redemptions: {[state['status'] for state in batch]}, then "
          f"{[(state['status'], state.get('result'), state.get('reason')) for state in finals]}")
    if [state["id"] for state in batch] != [calisson.transaction_id(item) for item in signed] or \
            [state["id"] for state in resent] != [state["id"] for state in batch] or any(state.get("result") != "applied" for state in finals):
        return fail(f"the batch was not relayed once and applied: {batch} / {resent} / {finals}")

    seen = []
    for event_id, kind, data in gateway.events(f"from=1&account={wallet.account}"):
        seen.append((event_id, kind, data["kind"]))
        if data.get("id") == first["id"]:
            break
    print(f"the feed: {seen}")
    if [kind for _, _, kind in seen] != ["attribute", "redeem"]:
        return fail("the feed did not give the reward then the redemption")
    # The same, certified: each block's events once a certified checkpoint above it confirms
    # them, its results those the block committed (a few seconds behind the head).
    confirmed = []
    for event_id, kind, data in gateway.events(f"from=1&account={wallet.account}&certified=true"):
        confirmed.append((event_id, data["kind"], data.get("resultVerified"), data.get("checkpoint")))
        if data.get("id") == first["id"]:
            break
    print(f"the certified feed: {confirmed}")
    if [event[:3] for event in confirmed] != [(event_id, kind, True) for event_id, _, kind in seen] or \
            any(checkpoint < int(event_id.split(".")[0]) for event_id, _, _, checkpoint in confirmed):
        return fail("the certified feed did not give the same events, their results verified")
    print("walkthrough: ok")
    return 0


def fail(message):
    print(f"walkthrough: FAILED: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
