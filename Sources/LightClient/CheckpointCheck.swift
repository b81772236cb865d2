import Crypto
import Wire

/// Why a checkpoint certificate does not certify a state root.
public enum CertificateError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    case notAQuorum(signers: Int, quorum: Int)
    case unknownSigner(Ed25519PublicKey)
    case badSignature(Ed25519PublicKey)
    case wrongHeight(certified: UInt64, answered: UInt64)

    public var description: String {
        switch self {
        case let .malformed(reason): return "malformed certificate: \(reason)"
        case let .notAQuorum(signers, quorum): return "\(signers) distinct validators signed, a quorum is \(quorum)"
        case let .unknownSigner(key): return "signed by \(key), not a validator"
        case let .badSignature(key): return "the signature of \(key) does not verify"
        case let .wrongHeight(certified, answered): return "the certificate is for height \(certified), the answer for \(answered)"
        }
    }
}

/// Checks a checkpoint certificate without the consensus module: its votes (height,
/// state root) agree, come from distinct validators of `validators`, at least a quorum of
/// them (⌊(n + f)/2⌋ + 1, f = ⌊(n − 1)/3⌋), each signature valid under the chain's
/// checkpoint signing domain. Returns the certified state root.
///
/// Wire form (Docs/PROTOCOL.md, *Wire form*): u32 vote count, then per vote: height
/// (u64), state root (32 bytes), signer (32 bytes), Ed25519 signature (64 bytes).
public enum CheckpointCheck {
    public static func verify(
        _ certificate: [UInt8], height: UInt64, validators: [Ed25519PublicKey], chainId: String
    ) throws(CertificateError) -> SHA256Digest {
        var reader = WireReader(certificate)
        var votes: [(height: UInt64, root: SHA256Digest, signer: Ed25519PublicKey, signature: Ed25519Signature)] = []
        do {
            let count = try reader.readCount("checkpoint.votes", maximum: 1_024)
            for _ in 0..<count {
                let voteHeight = try reader.readUInt64("vote.seq")
                let root = try SHA256Digest(from: &reader)
                let signer = try Ed25519PublicKey(from: &reader)
                votes.append((voteHeight, root, signer, try Ed25519Signature(from: &reader)))
            }
            try reader.expectEnd()
        } catch {
            throw .malformed("\(error)")
        }
        guard let first = votes.first else { throw .malformed("no votes") }
        guard votes.allSatisfy({ $0.height == first.height && $0.root == first.root }) else { throw .malformed("votes differ") }
        guard first.height == height else { throw .wrongHeight(certified: first.height, answered: height) }
        guard let domain = SigningDomain(chainId: chainId, purpose: .checkpoint) else { throw .malformed("bad chain id") }
        var body = WireWriter()
        body.write(first.height)
        body.write(first.root)
        let digest = domain.digest(for: body.bytes)
        var signers = Set<Ed25519PublicKey>()
        for vote in votes {
            guard validators.contains(vote.signer) else { throw .unknownSigner(vote.signer) }
            guard SignatureCheck(publicKey: vote.signer, digest: digest, signature: vote.signature).verify() else { throw .badSignature(vote.signer) }
            signers.insert(vote.signer)
        }
        let n = validators.count, f = (n - 1) / 3
        let quorum = (n + f) / 2 + 1
        guard signers.count >= quorum else { throw .notAQuorum(signers: signers.count, quorum: quorum) }
        return first.root
    }
}
