import CalissonCrypto
import Wire

/// A validator's identity: its consensus public key.
public typealias ValidatorID = Ed25519PublicKey

/// The validators in force, in the order that decides primaries: the primary of view v
/// is `validators[v mod n]`. n validators tolerate f = ⌊(n - 1) / 3⌋ Byzantine ones.
public struct ValidatorSet: Hashable, Sendable {
    public static let countMax = 1_024

    public let validators: [ValidatorID]

    /// nil unless there is at least one validator and no duplicates.
    public init?(_ validators: [ValidatorID]) {
        guard !validators.isEmpty, Set(validators).count == validators.count else { return nil }
        self.validators = validators
    }

    public var count: Int { validators.count }
    /// The most Byzantine validators this set tolerates.
    public var faultsMax: Int { (count - 1) / 3 }
    /// The smallest q with 2q - n ≥ f + 1: any two quorums share an honest validator.
    /// It is 2f + 1 when n = 3f + 1, and more when n is not of that form (5 validators
    /// still tolerate one fault, and need 4 for a quorum).
    public var quorum: Int { (count + faultsMax) / 2 + 1 }
    /// Enough validators that at least one is honest.
    public var weakQuorum: Int { faultsMax + 1 }

    public func primary(of view: UInt64) -> ValidatorID { validators[Int(view % UInt64(count))] }
    public func contains(_ id: ValidatorID) -> Bool { validators.contains(id) }
}

extension ValidatorSet: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeArray(validators) }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let validators = try reader.readArray("validators", maximum: Self.countMax, of: Ed25519PublicKey.self)
        guard let set = ValidatorSet(validators) else {
            throw .invalidValue(field: "validators", offset: offset, reason: "empty, or a validator listed twice")
        }
        self = set
    }
}

/// An ordered batch of opaque commands (transactions, for the ledger) at one height.
/// The digest covers the height and the Merkle root of the commands' hashes, so a block
/// re-proposed in a later view keeps its digest. The null block (no commands) fills gaps.
public struct Block: Hashable, Sendable, WireCodable {
    public static let commandCountMax = 65_536
    public static let commandBytesMax = 64 * 1024

    public let seq: UInt64
    public let commands: [[UInt8]]
    /// Computed once: blocks are immutable and their digest is needed at every step.
    public let digest: SHA256Digest

    public init(seq: UInt64, commands: [[UInt8]]) {
        self.seq = seq
        self.commands = commands
        digest = Self.digest(seq: seq, commands: commands)
    }

    private static let commandTag = TaggedHasher(tag: "calisson/command/v1")
    private static let blockTag = TaggedHasher(tag: "calisson/block/v1")

    public var commandIDs: [SHA256Digest] { commands.map { Self.commandTag.hash($0) } }

    private static func digest(seq: UInt64, commands: [[UInt8]]) -> SHA256Digest {
        var writer = WireWriter(reservingCapacity: 44)
        writer.write(seq)
        writer.write(UInt32(commands.count))
        writer.write(MerkleTree.root(of: commands.map { commandTag.hash($0) }))
        return blockTag.hash(writer.bytes)
    }

    public static func == (lhs: Block, rhs: Block) -> Bool { lhs.digest == rhs.digest && lhs.seq == rhs.seq }
    public func hash(into hasher: inout Hasher) { hasher.combine(digest) }

    public func encode(to writer: inout WireWriter) {
        writer.write(seq)
        writer.write(UInt32(commands.count))
        for command in commands { writer.writeBytes(command) }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        seq = try reader.readUInt64("block.seq")
        let count = try reader.readCount("block.commands", maximum: Self.commandCountMax)
        var commands: [[UInt8]] = []
        for _ in 0..<min(count, reader.remaining / 4) {
            commands.append(try reader.readBytes("block.command", maximum: Self.commandBytesMax))
        }
        guard commands.count == count else {
            throw .truncated(field: "block.commands", offset: reader.offset, needed: 4, available: reader.remaining)
        }
        self.commands = commands
        digest = Self.digest(seq: seq, commands: commands)
    }
}

/// A message body that is signed: its canonical encoding, under its purpose and the chain id.
public protocol SignedBody: WireEncodable, Hashable, Sendable {
    var purpose: SignaturePurpose { get }
}

/// Something that signs consensus digests with this replica's key. Production signs with
/// Ed25519; the simulator uses a fast stand-in. Signing is deterministic, so the replica
/// stays a pure function of its inputs.
public protocol ConsensusSigner: Sendable {
    var id: ValidatorID { get }
    func sign(_ digest: SHA256Digest) -> Ed25519Signature
}

public struct Signed<Body: SignedBody>: Hashable, Sendable {
    public let body: Body
    public let signer: ValidatorID
    public let signature: Ed25519Signature

    public init(body: Body, signer: ValidatorID, signature: Ed25519Signature) {
        self.body = body
        self.signer = signer
        self.signature = signature
    }

    public init(_ body: Body, chainId: String, signer: some ConsensusSigner) {
        self.body = body
        self.signer = signer.id
        signature = signer.sign(Self.digest(body, chainId: chainId))
    }

    static func digest(_ body: Body, chainId: String) -> SHA256Digest {
        // Chain ids are validated by ReplicaConfiguration, so the domain always exists.
        let domain = SigningDomain(chainId: chainId, purpose: body.purpose)!
        return domain.digest(for: body.wireBytes)
    }

    public func check(chainId: String) -> SignatureCheck {
        SignatureCheck(publicKey: signer, digest: Self.digest(body, chainId: chainId), signature: signature)
    }
}

public struct PrePrepare: SignedBody {
    public let view: UInt64
    public let block: Block
    public var seq: UInt64 { block.seq }
    public var purpose: SignaturePurpose { .prePrepare }

    public init(view: UInt64, block: Block) {
        self.view = view
        self.block = block
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(view)
        writer.write(block.digest)  // the signature covers the digest, which covers the block
    }
}

public enum VoteKind: UInt8, Hashable, Sendable {
    case prepare = 1
    case commit = 2
}

/// A Prepare or Commit for (view, seq, digest).
public struct Vote: SignedBody {
    public let kind: VoteKind
    public let view: UInt64
    public let seq: UInt64
    public let digest: SHA256Digest
    public var purpose: SignaturePurpose { kind == .prepare ? .prepare : .commit }

    public init(kind: VoteKind, view: UInt64, seq: UInt64, digest: SHA256Digest) {
        self.kind = kind
        self.view = view
        self.seq = seq
        self.digest = digest
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(kind.rawValue)
        writer.write(view)
        writer.write(seq)
        writer.write(digest)
    }
}

public struct CheckpointVote: SignedBody {
    public let seq: UInt64
    public let stateRoot: SHA256Digest
    public var purpose: SignaturePurpose { .checkpoint }

    public init(seq: UInt64, stateRoot: SHA256Digest) {
        self.seq = seq
        self.stateRoot = stateRoot
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(seq)
        writer.write(stateRoot)
    }
}

/// A block is prepared at a view: its PrePrepare and a quorum of matching Prepares.
public struct PreparedCertificate: Hashable, Sendable {
    public let prePrepare: Signed<PrePrepare>
    public let prepares: [Signed<Vote>]
    public var view: UInt64 { prePrepare.body.view }
    public var seq: UInt64 { prePrepare.body.seq }
    public var block: Block { prePrepare.body.block }

    public init(prePrepare: Signed<PrePrepare>, prepares: [Signed<Vote>]) {
        self.prePrepare = prePrepare
        self.prepares = prepares
    }
}

/// A block is final: a quorum of matching Commits for its digest at one view.
public struct CommitCertificate: Hashable, Sendable {
    public let commits: [Signed<Vote>]

    public init(commits: [Signed<Vote>]) { self.commits = commits }

    public var seq: UInt64? { commits.first?.body.seq }
    public var digest: SHA256Digest? { commits.first?.body.digest }
}

public struct CertifiedBlock: Hashable, Sendable {
    public let block: Block
    public let certificate: CommitCertificate

    public init(block: Block, certificate: CommitCertificate) {
        self.block = block
        self.certificate = certificate
    }
}

/// A quorum of matching checkpoint votes: the state at `seq` is stable.
public struct CheckpointCertificate: Hashable, Sendable {
    public let votes: [Signed<CheckpointVote>]
    public var seq: UInt64 { votes.first?.body.seq ?? 0 }
    public var stateRoot: SHA256Digest { votes.first?.body.stateRoot ?? .zero }

    public init(votes: [Signed<CheckpointVote>]) { self.votes = votes }
}

public struct ViewChange: SignedBody {
    public let newView: UInt64
    /// nil: no stable checkpoint yet (sequence 0, the genesis state).
    public let stable: CheckpointCertificate?
    public let prepared: [PreparedCertificate]
    public var purpose: SignaturePurpose { .viewChange }

    public init(newView: UInt64, stable: CheckpointCertificate?, prepared: [PreparedCertificate]) {
        self.newView = newView
        self.stable = stable
        self.prepared = prepared
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(newView)
        writer.write(stable?.seq ?? 0)
        writer.write(stable?.stateRoot ?? .zero)
        writer.write(UInt32(prepared.count))
        for certificate in prepared {
            writer.write(certificate.view)
            writer.write(certificate.seq)
            writer.write(certificate.block.digest)
        }
    }
}

public struct NewView: SignedBody {
    public let view: UInt64
    public let viewChanges: [Signed<ViewChange>]
    public let prePrepares: [Signed<PrePrepare>]
    public var purpose: SignaturePurpose { .newView }

    public init(view: UInt64, viewChanges: [Signed<ViewChange>], prePrepares: [Signed<PrePrepare>]) {
        self.view = view
        self.viewChanges = viewChanges
        self.prePrepares = prePrepares
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(view)
        writer.write(UInt32(viewChanges.count))
        for change in viewChanges {
            writer.write(change.signer)
            writer.write(change.signature)
        }
        writer.write(UInt32(prePrepares.count))
        for prePrepare in prePrepares {
            writer.write(prePrepare.body.seq)
            writer.write(prePrepare.body.block.digest)
        }
    }
}

/// Everything replicas say to each other.
public enum Message: Hashable, Sendable {
    case prePrepare(Signed<PrePrepare>)
    case vote(Signed<Vote>)
    case checkpoint(Signed<CheckpointVote>)
    case viewChange(Signed<ViewChange>)
    case newView(Signed<NewView>)
    /// Asks for committed blocks from `fromSeq` on (unsigned: answering is harmless).
    case stateRequest(fromSeq: UInt64)
    /// Committed blocks with their certificates, in order; each is checked on arrival.
    case stateResponse([CertifiedBlock])

    /// Every signature the message carries, nested certificates included. The shell
    /// verifies all of them (in batches, off the event loop) before the replica sees it.
    public func signatureChecks(chainId: String) -> [SignatureCheck] {
        switch self {
        case let .prePrepare(m): return [m.check(chainId: chainId)]
        case let .vote(m): return [m.check(chainId: chainId)]
        case let .checkpoint(m): return [m.check(chainId: chainId)]
        case let .viewChange(m): return Self.checks(m, chainId: chainId)
        case let .newView(m):
            return [m.check(chainId: chainId)] + m.body.viewChanges.flatMap { Self.checks($0, chainId: chainId) }
                + m.body.prePrepares.map { $0.check(chainId: chainId) }
        case .stateRequest: return []
        case let .stateResponse(blocks): return blocks.flatMap { $0.certificate.commits.map { $0.check(chainId: chainId) } }
        }
    }

    private static func checks(_ change: Signed<ViewChange>, chainId: String) -> [SignatureCheck] {
        var checks = [change.check(chainId: chainId)]
        checks += change.body.stable?.votes.map { $0.check(chainId: chainId) } ?? []
        for certificate in change.body.prepared {
            checks.append(certificate.prePrepare.check(chainId: chainId))
            checks += certificate.prepares.map { $0.check(chainId: chainId) }
        }
        return checks
    }
}
