import CalissonCrypto
import Wire

/// A block's transaction results as the certified state commits them (from ledger rules
/// `LedgerRules.resultsCommitted`; Docs/LEDGER.md, "Results in the state"): a Merkle tree
/// over each result's committed bytes, in the block's order, whose root and leaf count the
/// block writes under `StateKeys.blockResults(height)`. A checkpoint certificate at or
/// above that height then certifies every result of the block: with the root from a
/// certified state proof and a Merkle proof of the leaf at the transaction's position, a
/// light client knows whether the transaction applied and why not, without trusting the
/// node that answers.
///
/// What is committed is the reason's code and its figures (a role's name is one: the
/// ledger's own word for the role), never its free text (the detail of `malformed`,
/// `invalidAction` and the like): the text is the node's rendering, which a later release
/// may word differently without changing the rules, and the state root must not depend on
/// it. From these rules on, which reason a transaction gets and its figures are part of
/// the state: changing either (the order of the checks, a figure) takes a new version.
public enum CommittedResults {
    static let leafTag = TaggedHasher(tag: "calisson/result/v1")

    /// The committed bytes of a result: 0 when applied; 1, the reason's code, then its
    /// figures (`LedgerRejection.committedBytes`) when rejected.
    public static func bytes(_ result: TransactionResult) -> [UInt8] {
        switch result {
        case .applied: return [0]
        case let .rejected(rejection): return [1] + rejection.committedBytes
        }
    }

    /// The leaf of a result's committed bytes in its block's results tree.
    public static func leaf(_ committed: [UInt8]) -> SHA256Digest { leafTag.hash(committed) }

    /// The leaf of an applied result (most of them), computed once.
    static let appliedLeaf = leaf([0])

    /// The record a block writes for its results.
    public static func record(_ results: [TransactionResult]) -> BlockResults {
        BlockResults(leaves: results.map { $0 == .applied ? appliedLeaf : leaf(bytes($0)) })
    }

    /// The result that committed bytes name, with the reason's free text left empty; nil
    /// when they are not the committed bytes of any result.
    public static func result(_ committed: [UInt8]) -> TransactionResult? {
        guard let first = committed.first else { return nil }
        if first == 0 { return committed.count == 1 ? .applied : nil }
        guard first == 1 else { return nil }
        var reader = WireReader(Array(committed.dropFirst()))
        guard let rejection = try? LedgerRejection(committedFrom: &reader), (try? reader.expectEnd()) != nil else { return nil }
        return .rejected(rejection)
    }
}

/// What a block writes for its results (`StateKeys.blockResults`): how many there are, and
/// the root of their Merkle tree (`CommittedResults`).
public struct BlockResults: Hashable, Sendable, WireCodable {
    public let count: UInt64
    public let root: SHA256Digest

    public init(count: UInt64, root: SHA256Digest) {
        self.count = count
        self.root = root
    }

    /// The record of these leaves (`CommittedResults.leaf`), in the block's order.
    public init(leaves: [SHA256Digest]) {
        self.init(count: UInt64(clamping: leaves.count), root: MerkleTree.root(of: leaves))
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(count)
        writer.write(root)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        count = try reader.readUInt64("blockResults.count")
        root = try SHA256Digest(from: &reader)
    }
}

extension LedgerRejection {
    /// The reason's stable code (its committed form's first byte): never renumbered, a new
    /// reason takes the next code.
    public var code: UInt8 {
        switch self {
        case .malformed: return 1
        case .wrongChain: return 2
        case .expired: return 3
        case .expiryTooFar: return 4
        case .nonceUsed: return 5
        case .unknownPartner: return 6
        case .partnerNotActive: return 7
        case .badSignature: return 8
        case .missingRole: return 9
        case .unknownProgramme: return 10
        case .programmeClosed: return 11
        case .programmeNotOpen: return 12
        case .issuerNotAllowed: return 13
        case .zeroAmount: return 14
        case .amountTooLarge: return 15
        case .capExceeded: return 16
        case .walletCeilingExceeded: return 17
        case .budgetExceeded: return 18
        case .evidenceUsed: return 19
        case .insufficientFunds: return 20
        case .notTransferable: return 21
        case .selfTransfer: return 22
        case .tooManyLots: return 23
        case .unknownProposal: return 24
        case .proposalClosed: return 25
        case .deadlinePassed: return 26
        case .deadlineTooFar: return 27
        case .alreadyVoted: return 28
        case .invalidAction: return 29
        case .invalidEvidence: return 30
        case .evidenceKnown: return 31
        case .invalidEndpoints: return 32
        case .proposalsPerDayExceeded: return 33
        }
    }

    /// Whether the reason carries free text, which its committed form leaves out.
    public var hasText: Bool {
        switch self {
        case .malformed, .wrongChain, .invalidAction, .invalidEvidence, .invalidEndpoints: return true
        default: return false
        }
    }

    /// The longest role name a committed `missingRole` carries (the ledger's are a few letters).
    static let roleBytesMax = 32

    /// The reason's code, then its figures in order, without its free text.
    public var committedBytes: [UInt8] {
        var writer = WireWriter()
        writer.write(code)
        switch self {
        case .malformed, .wrongChain, .badSignature, .zeroAmount, .amountTooLarge, .evidenceUsed, .selfTransfer, .tooManyLots,
            .invalidAction, .invalidEvidence, .evidenceKnown, .invalidEndpoints:
            break
        case let .expired(expiry, height), let .expiryTooFar(expiry, height), let .deadlinePassed(expiry, height),
            let .deadlineTooFar(expiry, height), let .proposalsPerDayExceeded(expiry, height):
            writer.write(expiry)
            writer.write(height)
        case let .nonceUsed(value), let .unknownProposal(value), let .proposalClosed(value), let .alreadyVoted(value):
            writer.write(value)
        case let .unknownPartner(id), let .unknownProgramme(id), let .programmeClosed(id), let .notTransferable(id):
            writer.write(id)
        case let .missingRole(id, role):
            writer.write(id)
            writer.writeString(String(decoding: role.utf8.prefix(Self.roleBytesMax), as: UTF8.self))
        case let .partnerNotActive(id, status):
            writer.write(id)
            writer.write(status.rawValue)
        case let .programmeNotOpen(id, height):
            writer.write(id)
            writer.write(height)
        case let .issuerNotAllowed(id, programme):
            writer.write(id)
            writer.write(programme)
        case let .capExceeded(a, b, c), let .walletCeilingExceeded(a, b, c), let .budgetExceeded(a, b, c):
            writer.write(a)
            writer.write(b)
            writer.write(c)
        case let .insufficientFunds(available, asked):
            writer.write(available)
            writer.write(asked)
        }
        return writer.bytes
    }

    /// The reason its committed form names, free text empty.
    init(committedFrom reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let code = try reader.readUInt8("rejection.code")
        switch code {
        case 1: self = .malformed("")
        case 2: self = .wrongChain("")
        case 3: self = .expired(expiryHeight: try reader.readUInt64("expiryHeight"), height: try reader.readUInt64("height"))
        case 4: self = .expiryTooFar(expiryHeight: try reader.readUInt64("expiryHeight"), heightMax: try reader.readUInt64("heightMax"))
        case 5: self = .nonceUsed(try reader.readUInt64("nonce"))
        case 6: self = .unknownPartner(try Identifier(from: &reader))
        case 7:
            let id = try Identifier(from: &reader)
            let raw = try reader.readUInt8("status")
            guard let status = PartnerStatus(rawValue: raw) else {
                throw .unknownKind(field: "status", offset: reader.offset - 1, raw: UInt64(clamping: raw))
            }
            self = .partnerNotActive(id, status)
        case 8: self = .badSignature
        case 9: self = .missingRole(try Identifier(from: &reader), needs: try reader.readString("role", maximumBytes: Self.roleBytesMax))
        case 10: self = .unknownProgramme(try Identifier(from: &reader))
        case 11: self = .programmeClosed(try Identifier(from: &reader))
        case 12: self = .programmeNotOpen(try Identifier(from: &reader), height: try reader.readUInt64("height"))
        case 13: self = .issuerNotAllowed(try Identifier(from: &reader), programme: try Identifier(from: &reader))
        case 14: self = .zeroAmount
        case 15: self = .amountTooLarge
        case 16: self = .capExceeded(cap: try reader.readUInt64("cap"), used: try reader.readUInt64("used"), asked: try reader.readUInt64("asked"))
        case 17:
            self = .walletCeilingExceeded(
                ceiling: try reader.readUInt64("ceiling"), held: try reader.readUInt64("held"), asked: try reader.readUInt64("asked"))
        case 18:
            self = .budgetExceeded(budget: try reader.readUInt64("budget"), issued: try reader.readUInt64("issued"), asked: try reader.readUInt64("asked"))
        case 19: self = .evidenceUsed
        case 20: self = .insufficientFunds(available: try reader.readUInt64("available"), asked: try reader.readUInt64("asked"))
        case 21: self = .notTransferable(try Identifier(from: &reader))
        case 22: self = .selfTransfer
        case 23: self = .tooManyLots
        case 24: self = .unknownProposal(try reader.readUInt64("proposal"))
        case 25: self = .proposalClosed(try reader.readUInt64("proposal"))
        case 26: self = .deadlinePassed(deadline: try reader.readUInt64("deadline"), height: try reader.readUInt64("height"))
        case 27: self = .deadlineTooFar(deadline: try reader.readUInt64("deadline"), heightMax: try reader.readUInt64("heightMax"))
        case 28: self = .alreadyVoted(try reader.readUInt64("proposal"))
        case 29: self = .invalidAction("")
        case 30: self = .invalidEvidence("")
        case 31: self = .evidenceKnown
        case 32: self = .invalidEndpoints("")
        case 33: self = .proposalsPerDayExceeded(max: try reader.readUInt64("max"), nextDayHeight: try reader.readUInt64("nextDayHeight"))
        default: throw .unknownKind(field: "rejection.code", offset: offset, raw: UInt64(clamping: code))
        }
    }

    /// The reason's name (`insufficientFunds`), as a node's rendering of it begins.
    public var name: String { String("\(self)".prefix { $0 != "(" }) }

    /// Whether `text` (a node's rendering of a rejection) names this reason. The figures
    /// are not read from it: whoever checked the committed bytes shows its own rendering
    /// of them (`ResultCheck`), and only the free text of a reason that has one is taken
    /// from the node.
    public func isNamed(by text: String) -> Bool { text.prefix { $0 != "(" } == name[...] }
}

/// What a block writes for its governance (`StateKeys.blockEvents`, from
/// `LedgerRules.eventsCommitted`): the proposals it decided, in the order it decided them,
/// the epoch it closed, and the proposals it opened (each transaction's position and the
/// number it got). Written only by a block that has one of these, so that its absence at
/// a certified checkpoint proves that a block of those rules decided, closed and opened
/// nothing.
public struct BlockEvents: Hashable, Sendable, WireCodable {
    public let decided: [UInt64]
    public let closedEpoch: UInt64?
    public let opened: [OpenedProposal]

    /// Decisions and openings read back, at most: a block decides a proposal per vote and
    /// opens one per proposal it applies, and holds no more transactions than this.
    public static let countMax = 1 << 16

    public init(decided: [UInt64], closedEpoch: UInt64?, opened: [OpenedProposal]) {
        self.decided = decided
        self.closedEpoch = closedEpoch
        self.opened = opened
    }

    public func encode(to writer: inout WireWriter) {
        writer.writeArray(decided)
        writer.writeOptional(closedEpoch)
        writer.writeArray(opened)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        decided = try reader.readArray("blockEvents.decided", maximum: Self.countMax, of: UInt64.self)
        closedEpoch = try reader.readOptional("blockEvents.closedEpoch", of: UInt64.self)
        opened = try reader.readArray("blockEvents.opened", maximum: Self.countMax, of: OpenedProposal.self)
    }
}
