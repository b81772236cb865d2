import Consensus
import CalissonCrypto
import Wire

/// A fast stand-in for Ed25519 inside the simulator: a "signature" is two tagged hashes
/// of the key and the digest. Anyone could compute it, which is fine here: Byzantine
/// replicas are programmed behaviours that never forge others' signatures, and what the
/// simulator must exercise is that every signature is checked and corrupt ones dropped.
/// Real Ed25519 would cost ~60 µs a check and make ten thousand seeds take weeks.
struct SimulatedSigner: ConsensusSigner {
    let id: ValidatorID
    func sign(_ digest: SHA256Digest) -> Ed25519Signature { simulatedSignature(id, digest) }
}

private let signatureTag = TaggedHasher(tag: "calisson/simulated-signature")

func simulatedSignature(_ key: ValidatorID, _ digest: SHA256Digest) -> Ed25519Signature {
    let bytes = key.rawRepresentation + digest.bytes
    let low = signatureTag.hash(bytes), high = signatureTag.hash(bytes + [1])
    return Ed25519Signature(rawRepresentation: low.bytes + high.bytes)!
}

func simulatedVerify(_ check: SignatureCheck) -> Bool {
    simulatedSignature(check.publicKey, check.digest) == check.signature
}
