"""A small Python client of the Calisson gateway (Docs/API.md).

Standard library only, plus PyNaCl for a citizen wallet's Ed25519 signature. It encodes
transactions in their canonical wire form (Docs/WIRE.md), signs them as a wallet does,
and talks to `calisson-gateway` over HTTP/JSON: reads, rewards, redemptions, transfers,
and the Server-Sent Events feed. Tests/Vectors/transactions.json is its contract:
`python vectors.py` checks this module against it.
"""

import hashlib
import json
import struct
import time
import urllib.error
import urllib.request

import nacl.signing

# Canonical wire form: integers big-endian; strings and byte strings prefixed by their
# length as a u32; identifiers are strings; keys and hashes are 32 raw bytes.


def u8(value):
    return struct.pack(">B", value)


def u16(value):
    return struct.pack(">H", value)


def u32(value):
    return struct.pack(">I", value)


def u64(value):
    if not 0 <= value < 1 << 64:
        raise ValueError(f"{value} is not a 64-bit unsigned integer")
    return struct.pack(">Q", value)


def string(text):
    raw = text.encode("utf-8")
    return u32(len(raw)) + raw


def bytes32(hex_text):
    raw = bytes.fromhex(hex_text)
    if len(raw) != 32:
        raise ValueError(f"{hex_text!r} is not 32 bytes of hex")
    return raw


def tagged_hash(tag, *parts):
    """SHA-256(SHA-256(tag) || SHA-256(tag) || parts...)."""
    tag_digest = hashlib.sha256(tag.encode("utf-8")).digest()
    hasher = hashlib.sha256(tag_digest + tag_digest)
    for part in parts:
        hasher.update(part)
    return hasher.digest()


def endpoints(texts):
    """A partner's node endpoints ("host:port", at most 4), sorted and distinct as the
    ledger wants them (ledger rules 4)."""
    parsed = sorted({(host.encode("utf-8"), int(port)) for host, _, port in (text.rpartition(":") for text in texts)})
    if len(parsed) > 4:
        raise ValueError("at most 4 endpoints")
    return u32(len(parsed)) + b"".join(u32(len(host)) + host + u16(port) for host, port in parsed)


PARTNER_STATUS = {"reinstatePartner": 1, "suspendPartner": 2, "removePartner": 3}


def encode_action(action):
    """The governance actions a back-end most often proposes; the gateway's
    POST /v1/proposals takes every kind as JSON and signs them itself."""
    kind = action["kind"]
    if kind in PARTNER_STATUS:
        return u8(2) + string(action["target"]) + u8(PARTNER_STATUS[kind])
    if kind == "closeProgramme":
        return u8(6) + string(action["target"])
    if kind == "setValidators":
        return u8(7) + u32(len(action["validators"])) + b"".join(string(v) for v in action["validators"])
    if kind == "setPartnerEndpoints":
        return u8(14) + string(action["target"]) + endpoints(action["endpoints"])
    raise ValueError(f"this client does not encode {kind} proposals: send them to the gateway's POST /v1/proposals")


def encode_body(body):
    kind = body["kind"]
    if kind == "attribute":
        return (u8(1) + string(body["programme"]) + bytes32(body["account"]) + u32(body["units"])
                + bytes32(body["evidence"]))
    if kind == "redeem":
        return u8(2) + string(body["acceptor"]) + u64(body["amount"]) + bytes32(body["service"])
    if kind == "transfer":
        return u8(3) + bytes32(body["to"]) + string(body["programme"]) + u64(body["amount"])
    if kind == "propose":
        return u8(4) + encode_action(body["action"]) + u64(body["deadline"])
    if kind == "vote":
        return u8(5) + u64(body["proposal"]) + u8(1 if body["approve"] else 0)
    if kind == "setEndpoints":
        return u8(7) + endpoints(body["endpoints"])
    raise ValueError(f"unknown transaction kind {kind!r}")


def encode_signer(signer):
    if "citizen" in signer:
        return u8(1) + bytes32(signer["citizen"])
    return u8(2) + string(signer["partner"])


def encode_transaction(chain_id, signer, nonce, expiry_height, body):
    """The transaction as signed: chain id, signer, nonce, expiry height, body."""
    return string(chain_id) + encode_signer(signer) + u64(nonce) + u64(expiry_height) + encode_body(body)


def signing_digest(chain_id, transaction):
    """What the signer signs: the chain's transaction signing domain over the bytes."""
    return tagged_hash("calisson/signature/v1", u8(1) + string(chain_id), transaction)


def transaction_id(signed_transaction):
    return tagged_hash("calisson/command/v1", signed_transaction).hex()


class Wallet:
    """A citizen's key: its public key is the pseudonymous account."""

    def __init__(self, seed):
        self.key = nacl.signing.SigningKey(seed)

    @property
    def account(self):
        return self.key.verify_key.encode().hex()

    def sign(self, chain_id, nonce, expiry_height, body):
        """The fields and signature the gateway's /v1/redemptions and /v1/transfers take,
        and the signed transaction's bytes (what /v1/transactions takes, as hex)."""
        transaction = encode_transaction(chain_id, {"citizen": self.account}, nonce, expiry_height, body)
        signature = self.key.sign(signing_digest(chain_id, transaction)).signature
        return signature.hex(), transaction + signature


class GatewayError(Exception):
    """A problem document (RFC 9457) the gateway answered, with its HTTP status."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('type', '')}: {problem.get('detail', problem)}")


class Gateway:
    """`retries`: how many times a request refused with 429 or 503 and a Retry-After is sent
    again, after the wait the gateway asks for (at most 10 s each)."""

    def __init__(self, url, api_key, timeout=60, retries=5):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries

    def _request(self, method, path, body=None, headers=None):
        request = urllib.request.Request(self.url + path, method=method)
        request.add_header("Authorization", f"Bearer {self.api_key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            request.add_header("Content-Type", "application/json")
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, data=data, timeout=self.timeout) as response:
                    return response.status, json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                # 429 (a rate limit) and 503 (not ready yet, busy) mean the request was not
                # taken: asked again after the Retry-After the gateway gives, a few times.
                wait = error.headers.get("Retry-After")
                if error.code in (429, 503) and wait and wait.isdigit() and attempt < self.retries:
                    error.read()
                    time.sleep(min(int(wait), 10))
                    continue
                raise GatewayError(error.code, json.loads(error.read() or b"{}")) from None

    def get(self, path):
        return self._request("GET", path)[1]

    def status(self):
        return self.get("/v1/status")

    def account(self, account):
        return self.get(f"/v1/accounts/{account}")

    # Submissions: `wait` is "true" (answered at finality, its place proven), "certified"
    # (its result proven too: `resultVerified`) or "false" (answered once admitted).

    def reward(self, idempotency_key, programme, account, units, evidence, wait="true"):
        return self._request("POST", f"/v1/rewards?wait={wait}", {"programme": programme, "account": account, "units": units,
                                                                  "evidence": evidence}, {"Idempotency-Key": idempotency_key})[1]

    def redeem(self, wallet, chain_id, nonce, expiry_height, acceptor, amount, service, wait="true"):
        body = {"kind": "redeem", "acceptor": acceptor, "amount": amount, "service": service}
        signature, _ = wallet.sign(chain_id, nonce, expiry_height, body)
        return self._request("POST", f"/v1/redemptions?wait={wait}", {
            "account": wallet.account, "acceptor": acceptor, "amount": amount, "service": service, "nonce": nonce,
            "expiryHeight": expiry_height, "signature": signature})[1]

    def transfer(self, wallet, chain_id, nonce, expiry_height, to, programme, amount, wait="true"):
        body = {"kind": "transfer", "to": to, "programme": programme, "amount": amount}
        signature, _ = wallet.sign(chain_id, nonce, expiry_height, body)
        return self._request("POST", f"/v1/transfers?wait={wait}", {
            "account": wallet.account, "to": to, "programme": programme, "amount": amount, "nonce": nonce,
            "expiryHeight": expiry_height, "signature": signature})[1]

    def submit(self, signed_transaction, wait="true"):
        return self._request("POST", f"/v1/transactions?wait={wait}", {"transaction": signed_transaction.hex()})[1]

    def submit_batch(self, signed_transactions):
        """Up to 256 signed transactions in one request: their states (pending or refused)
        in the same order, once admitted. Sending the same batch again has no second effect."""
        return self._request("POST", "/v1/transaction-batches",
                             {"transactions": [signed.hex() for signed in signed_transactions]})[1]["transactions"]

    def wait_final(self, transaction_id, seconds=30):
        """The transaction's state once final (or the last one seen after `seconds`)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                state = self.get(f"/v1/transactions/{transaction_id}")
            except GatewayError as error:
                if error.status != 404:
                    raise
                state = {"id": transaction_id, "status": "unknown"}
            if state["status"] in ("final", "refused") or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def wait_proven(self, transaction_id, seconds=60):
        """The transaction's state once final with its result proven by the certified state
        (`resultVerified`), or the last one seen after `seconds`: what to do after a
        `wait="certified"` submission answered 202 (the gateway's 30 s ran out first, on a
        loaded chain, say). A block under ledger rules before 7 committed no results: its
        result stays the node's word (`resultVerified` false)."""
        deadline = time.monotonic() + seconds
        while True:
            state = self.wait_final(transaction_id, max(0.0, deadline - time.monotonic()))
            if state["status"] != "final" or state.get("resultVerified") is True or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def events(self, query="", last_event_id=None):
        """Yields (id, event, data) from the Server-Sent Events feed until the server
        ends it; resume by passing the last id back as last_event_id."""
        request = urllib.request.Request(self.url + "/v1/events" + (f"?{query}" if query else ""))
        request.add_header("Authorization", f"Bearer {self.api_key}")
        request.add_header("Accept", "text/event-stream")
        if last_event_id:
            request.add_header("Last-Event-ID", last_event_id)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            raise GatewayError(error.code, json.loads(error.read() or b"{}")) from None
        with response:
            fields = {}
            for raw in response:
                line = raw.decode("utf-8").rstrip("\n")
                if not line:
                    if "id" in fields and "data" in fields:
                        yield fields["id"], fields.get("event", "message"), json.loads(fields["data"])
                    fields = {}
                elif not line.startswith(":") and ": " in line:
                    name, value = line.split(": ", 1)
                    fields[name] = value
