import CalissonCrypto
import Wire

/// Two consensus statements a validator signed for one slot that conflict: two proposals
/// (pre-prepares) for the same view and height, or two prepares or commits for the same
/// view and height, of different blocks. Self-contained: the ledger recomputes what each
/// signature covers from these fields, exactly as the consensus signs it (Docs/PROTOCOL.md,
/// "Equivocation evidence"), and checks both signatures under `nodeKey`. Ledger rules 3.
public struct EquivocationEvidence: Hashable, Sendable, WireCodable {
    public enum Kind: UInt8, Sendable, CaseIterable {
        /// The signature covers the view and the block's digest.
        case proposal = 2
        case prepare = 3
        case commit = 4

        var purpose: SignaturePurpose { SignaturePurpose(rawValue: rawValue) }
    }

    /// One signed statement: for a vote, the block digest it votes for (`commandCount` 0);
    /// for a proposal, the block's header (its command count and the Merkle root of its
    /// command ids), from which its digest follows.
    public struct Statement: Hashable, Sendable {
        public let hash: SHA256Digest
        public let commandCount: UInt32
        public let signature: Ed25519Signature

        public init(hash: SHA256Digest, commandCount: UInt32 = 0, signature: Ed25519Signature) {
            self.hash = hash
            self.commandCount = commandCount
            self.signature = signature
        }
    }

    public let nodeKey: Ed25519PublicKey
    public let kind: Kind
    public let view: UInt64
    public let seq: UInt64
    /// The two statements, in the order of the block digests they name (one encoding per pair).
    public let first: Statement
    public let second: Statement

    /// The two statements in either order; nil when they name the same block (no conflict)
    /// or a vote carries a command count.
    public init?(nodeKey: Ed25519PublicKey, kind: Kind, view: UInt64, seq: UInt64, _ a: Statement, _ b: Statement) {
        self.nodeKey = nodeKey
        self.kind = kind
        self.view = view
        self.seq = seq
        let digestA = Self.blockDigest(kind, seq: seq, a), digestB = Self.blockDigest(kind, seq: seq, b)
        guard digestA != digestB, kind == .proposal || (a.commandCount == 0 && b.commandCount == 0) else { return nil }
        (first, second) = digestA.bytes.lexicographicallyPrecedes(digestB.bytes) ? (a, b) : (b, a)
    }

    private static let blockTag = TaggedHasher(tag: "calisson/block/v1")

    /// The digest of the block a statement names: the vote's, or the proposal's header's
    /// (`TaggedHash("calisson/block/v1", seq || command count || commands root)`).
    static func blockDigest(_ kind: Kind, seq: UInt64, _ statement: Statement) -> SHA256Digest {
        guard kind == .proposal else { return statement.hash }
        var writer = WireWriter(reservingCapacity: 44)
        writer.write(seq)
        writer.write(statement.commandCount)
        writer.write(statement.hash)
        return blockTag.hash(writer.bytes)
    }

    /// What `statement`'s signature signs on `chainId`: a proposal's view and block digest,
    /// a vote's kind, view, height and block digest.
    public func signedDigest(_ statement: Statement, chainId: String) -> SHA256Digest? {
        var writer = WireWriter()
        let block = Self.blockDigest(kind, seq: seq, statement)
        switch kind {
        case .proposal:
            writer.write(view)
            writer.write(block)
        case .prepare, .commit:
            writer.write(kind == .prepare ? UInt8(1) : UInt8(2))
            writer.write(view)
            writer.write(seq)
            writer.write(block)
        }
        return SigningDomain(chainId: chainId, purpose: kind.purpose)?.digest(for: writer.bytes)
    }

    /// Both signature checks, nil when the chain id cannot sign.
    public func checks(chainId: String) -> [SignatureCheck]? {
        guard let a = signedDigest(first, chainId: chainId), let b = signedDigest(second, chainId: chainId) else { return nil }
        return [SignatureCheck(publicKey: nodeKey, digest: a, signature: first.signature),
                SignatureCheck(publicKey: nodeKey, digest: b, signature: second.signature)]
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(nodeKey)
        writer.write(kind.rawValue)
        writer.write(view)
        writer.write(seq)
        for statement in [first, second] {
            writer.write(statement.hash)
            writer.write(statement.commandCount)
            writer.write(statement.signature)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let key = try Ed25519PublicKey(from: &reader)
        let kind: Kind = try reader.readEnum("evidence.kind")
        let view = try reader.readUInt64("evidence.view")
        let seq = try reader.readUInt64("evidence.seq")
        var statements: [Statement] = []
        for _ in 0..<2 {
            let hash = try SHA256Digest(from: &reader)
            let count = try reader.readUInt32("evidence.commandCount")
            statements.append(Statement(hash: hash, commandCount: count, signature: try Ed25519Signature(from: &reader)))
        }
        guard let evidence = EquivocationEvidence(nodeKey: key, kind: kind, view: view, seq: seq, statements[0], statements[1]),
            evidence.first == statements[0]
        else {
            throw .invalidValue(field: "evidence", offset: offset, reason: "the two statements name the same block, are out of order, or a vote has a command count")
        }
        self = evidence
    }
}

/// An equivocation the ledger recorded (`StateKeys.equivocation`): whose node key, the
/// partner holding it then, who reported it and when, and what followed.
public struct EquivocationRecord: Hashable, Sendable, WireCodable {
    public let partner: Identifier
    public let reporter: Identifier
    public let height: UInt64
    /// Whether the partner was suspended for it (the policy in force, `setEquivocationPolicy`).
    public let suspended: Bool
    public let evidence: EquivocationEvidence

    public init(partner: Identifier, reporter: Identifier, height: UInt64, suspended: Bool, evidence: EquivocationEvidence) {
        self.partner = partner
        self.reporter = reporter
        self.height = height
        self.suspended = suspended
        self.evidence = evidence
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(partner)
        writer.write(reporter)
        writer.write(height)
        writer.write(suspended)
        writer.write(evidence)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        partner = try Identifier(from: &reader)
        reporter = try Identifier(from: &reader)
        height = try reader.readUInt64("equivocation.height")
        suspended = try reader.readBool("equivocation.suspended")
        evidence = try EquivocationEvidence(from: &reader)
    }
}

/// How many equivocations were recorded against a partner, and the last one's height
/// (`StateKeys.equivocationTally`).
public struct EquivocationTally: Hashable, Sendable, WireCodable {
    public var count: UInt64
    public var lastHeight: UInt64

    public func encode(to writer: inout WireWriter) {
        writer.write(count)
        writer.write(lastHeight)
    }

    public init(count: UInt64, lastHeight: UInt64) {
        self.count = count
        self.lastHeight = lastHeight
    }

    public init(from reader: inout WireReader) throws(WireError) {
        count = try reader.readUInt64("tally.count")
        lastHeight = try reader.readUInt64("tally.lastHeight")
    }
}

extension Ledger {
    /// Whether a validator reported for equivocation is suspended at once (governance's
    /// `setEquivocationPolicy`; absent: no, partners decide).
    public var suspendsEquivocators: Bool { read(StateKeys.equivocationPolicy, as: Bool.self) ?? false }

    public func equivocation(_ evidence: EquivocationEvidence) -> EquivocationRecord? { read(StateKeys.equivocation(evidence)) }

    public func equivocationTally(_ partner: Identifier) -> EquivocationTally? { read(StateKeys.equivocationTally(partner)) }

    /// Records evidence a partner reports, after checking it; suspends the partner
    /// holding the key when the policy says so.
    mutating func reportEquivocation(
        by reporter: Partner, _ evidence: EquivocationEvidence, height: UInt64, verify: (SignatureCheck) -> Bool
    ) -> Result<Void, LedgerRejection> {
        guard let checks = evidence.checks(chainId: chainId) else { return .failure(.invalidEvidence("the chain id cannot sign")) }
        var found: Partner?
        // From rules 5 a validator holding the key first: a partner that shares it from a
        // state before them signs no consensus message with it.
        let candidates = blockRules >= LedgerRules.validatorKeysKept ? meta.validators + meta.partners : meta.partners
        for id in candidates {
            if let partner = partner(id), partner.nodeKey == evidence.nodeKey {
                found = partner
                break
            }
        }
        guard let holder = found else {
            return .failure(.invalidEvidence("no partner holds node key \(evidence.nodeKey.bytes.hex)"))
        }
        guard checks.allSatisfy(verify) else { return .failure(.invalidEvidence("a signature does not verify under node key \(evidence.nodeKey.bytes.hex)")) }
        guard equivocation(evidence) == nil else { return .failure(.evidenceKnown) }
        // Never the last validator (ledger rules 5): the consensus would keep it while the
        // ledger's record named none.
        let last = blockRules >= LedgerRules.validatorKeysKept && isLastValidator(holder.id)
        let suspend = suspendsEquivocators && holder.status == .active && !last
        write(StateKeys.equivocation(evidence), EquivocationRecord(partner: holder.id, reporter: reporter.id, height: height, suspended: suspend, evidence: evidence))
        var tally = equivocationTally(holder.id) ?? EquivocationTally(count: 0, lastHeight: 0)
        tally.count += 1
        tally.lastHeight = height
        write(StateKeys.equivocationTally(holder.id), tally)
        if suspend { enact(.setPartnerStatus(holder.id, .suspended)) }
        return .success(())
    }
}
