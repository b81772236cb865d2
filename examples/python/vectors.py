"""Checks calisson.py against Tests/Vectors/transactions.json: for every vector of a kind
this client encodes, the same bytes, digest, signature and id. Exits 1 on any difference."""

import json
import pathlib
import sys

import nacl.signing

import calisson

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE.parent.parent / "Tests" / "Vectors" / "transactions.json"


def main():
    vectors = json.loads(VECTORS.read_text())["vectors"]
    failures = checked = 0
    for vector in vectors:
        try:
            transaction = calisson.encode_transaction(
                vector["chainId"], vector["signer"], vector["nonce"], vector["expiryHeight"], vector["body"])
        except ValueError as error:
            print(f"skip  {vector['name']}: {error}")
            continue
        key = nacl.signing.SigningKey(bytes.fromhex(vector["signerSeed"]))
        digest = calisson.signing_digest(vector["chainId"], transaction)
        signature = key.sign(digest).signature
        signed = transaction + signature
        got = {"signerPublicKey": key.verify_key.encode().hex(), "transaction": transaction.hex(),
               "signingDigest": digest.hex(), "signature": signature.hex(), "signedTransaction": signed.hex(),
               "id": calisson.transaction_id(signed)}
        wrong = [name for name, value in got.items() if vector[name] != value]
        checked += 1
        if wrong:
            failures += 1
            print(f"FAIL  {vector['name']}: {', '.join(wrong)} differ")
        else:
            print(f"ok    {vector['name']}")
    print(f"{checked} vectors checked, {failures} failed")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
