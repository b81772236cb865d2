import CalissonCrypto
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
    /// Who signed a checkpoint certificate, in its order (no signature checked: `verify`
    /// does); nil when it does not decode.
    public static func signers(of certificate: [UInt8]) -> [Ed25519PublicKey]? {
        var reader = WireReader(certificate)
        guard let count = try? reader.readCount("checkpoint.votes", maximum: 1_024) else { return nil }
        var signers: [Ed25519PublicKey] = []
        for _ in 0..<count {
            guard (try? reader.readUInt64("vote.seq")) != nil, (try? SHA256Digest(from: &reader)) != nil,
                let signer = try? Ed25519PublicKey(from: &reader), (try? Ed25519Signature(from: &reader)) != nil
            else { return nil }
            signers.append(signer)
        }
        return signers
    }

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
        try checkSigners(votes.map(\.signer), validators: validators)
        var body = WireWriter()
        body.write(first.height)
        body.write(first.root)
        let digest = domain.digest(for: body.bytes)
        for vote in votes {
            guard SignatureCheck(publicKey: vote.signer, digest: digest, signature: vote.signature).verify() else { throw .badSignature(vote.signer) }
        }
        return first.root
    }

    /// A quorum of `validators` (⌊(n + f)/2⌋ + 1, f = ⌊(n − 1)/3⌋).
    static func quorum(of validators: [Ed25519PublicKey]) -> Int {
        let n = validators.count, f = (n - 1) / 3
        return (n + f) / 2 + 1
    }

    /// Checked before any signature (a signature check is the costly part): each signer is
    /// a validator and signs once (as consensus makes certificates), and they are a quorum.
    /// A certificate padded with copies of a genuine vote would otherwise cost a check per
    /// copy, up to the 1,024 votes a certificate decodes, and still pass.
    static func checkSigners(_ signers: [Ed25519PublicKey], validators: [Ed25519PublicKey]) throws(CertificateError) {
        let set = Set(validators)
        var seen = Set<Ed25519PublicKey>()
        for signer in signers {
            guard set.contains(signer) else { throw .unknownSigner(signer) }
            guard seen.insert(signer).inserted else { throw .malformed("\(signer) signs twice") }
        }
        let quorum = quorum(of: validators)
        guard seen.count >= quorum else { throw .notAQuorum(signers: seen.count, quorum: quorum) }
    }
}

/// Checks that a transaction is in a final block, without the consensus module: the
/// block digest is recomputed from the height, the command count and the Merkle root
/// that the proof gives for the transaction's id, and the commit certificate must be a
/// quorum of `validators` signing a Commit for exactly that (height, digest).
///
/// Commit certificate wire form: u32 vote count, then per vote: kind (u8, 2 = commit),
/// view (u64), height (u64), block digest (32), signer (32), signature (64).
public enum InclusionCheck {
    static let blockTag = TaggedHasher(tag: "calisson/block/v1")

    /// Checks a node's whole answer: the proof, the certificate, and that the position the
    /// node states is the leaf the proof proves (a node could otherwise name any position).
    public static func verify(
        _ inclusion: TransactionInclusion, transaction id: Bytes32, validators: [Ed25519PublicKey], chainId: String
    ) throws(CertificateError) {
        guard inclusion.location.position == inclusion.proof.leafIndex else {
            throw .malformed("the node states position \(inclusion.location.position), its proof is for position \(inclusion.proof.leafIndex)")
        }
        try verify(
            transaction: id, height: inclusion.location.height, commandCount: inclusion.commandCount, proof: inclusion.proof,
            certificate: inclusion.certificate, validators: validators, chainId: chainId)
    }

    public static func verify(
        transaction id: Bytes32, height: UInt64, commandCount: UInt32, proof: MerkleProof, certificate: [UInt8],
        validators: [Ed25519PublicKey], chainId: String
    ) throws(CertificateError) {
        let root: SHA256Digest
        do { root = try proof.computeRoot(leaf: id) } catch { throw .malformed("inclusion proof: \(error)") }
        guard proof.leafCount == UInt64(commandCount) else { throw .malformed("the proof is for \(proof.leafCount) commands, the block has \(commandCount)") }
        var header = WireWriter()
        header.write(height)
        header.write(commandCount)
        header.write(root)
        try verifyCommit(digest: blockTag.hash(header.bytes), height: height, certificate: certificate, validators: validators, chainId: chainId)
    }

    /// One vote of a commit certificate, as encoded.
    struct CommitVote {
        let kind: UInt8
        let view: UInt64
        let height: UInt64
        let digest: SHA256Digest
        let signer: Ed25519PublicKey
        let signature: Ed25519Signature
    }

    /// The votes of a commit certificate, decoded (nothing checked).
    static func votes(of certificate: [UInt8]) throws(CertificateError) -> [CommitVote] {
        var reader = WireReader(certificate)
        do {
            var votes: [CommitVote] = []
            for _ in 0..<(try reader.readCount("commit.votes", maximum: 1_024)) {
                votes.append(CommitVote(
                    kind: try reader.readUInt8("vote.kind"), view: try reader.readUInt64("vote.view"), height: try reader.readUInt64("vote.seq"),
                    digest: try SHA256Digest(from: &reader), signer: try Ed25519PublicKey(from: &reader), signature: try Ed25519Signature(from: &reader)))
            }
            try reader.expectEnd()
            return votes
        } catch {
            throw .malformed("\(error)")
        }
    }

    /// Who signed a commit certificate, in its order (no signature checked: `verifyCommit`
    /// does); nil when it does not decode.
    public static func signers(ofCommit certificate: [UInt8]) -> [Ed25519PublicKey]? {
        (try? votes(of: certificate))?.map(\.signer)
    }

    /// Checks that `certificate` holds commit votes for block `digest` at `height` from a
    /// quorum of `validators` (the set in force at that height), each signature valid.
    public static func verifyCommit(
        digest: SHA256Digest, height: UInt64, certificate: [UInt8], validators: [Ed25519PublicKey], chainId: String
    ) throws(CertificateError) {
        guard let domain = SigningDomain(chainId: chainId, purpose: .commit) else { throw .malformed("bad chain id") }
        let votes = try votes(of: certificate)
        for vote in votes {
            guard vote.kind == 2 else { throw CertificateError.malformed("a vote is not a commit") }
            guard vote.height == height, vote.digest == digest else { throw CertificateError.wrongHeight(certified: vote.height, answered: height) }
        }
        try CheckpointCheck.checkSigners(votes.map(\.signer), validators: validators)
        for vote in votes {
            var body = WireWriter()
            body.write(vote.kind)
            body.write(vote.view)
            body.write(vote.height)
            body.write(vote.digest)
            guard SignatureCheck(publicKey: vote.signer, digest: domain.digest(for: body.bytes), signature: vote.signature).verify() else {
                throw CertificateError.badSignature(vote.signer)
            }
        }
    }
}
