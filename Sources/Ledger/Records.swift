import CalissonCrypto
import Wire

/// Where each record lives in the authenticated state: a tagged hash of a namespace
/// byte and the record's id. A light client asks for a key and gets the value with a
/// proof (or a proof of absence).
public enum StateKeys {
    enum Namespace: UInt8 {
        case meta = 1, parameters, partner, programme, account, usage, evidence, used, usedExpiring, expiringLots,
            proposal, obligations, statement, settlement, expiringChunk, validatorKeys, usedExpiringChunk, epochReport, epochActivity,
            upgrades, partnerCategory, programmeAcceptance, equivocation, equivocationTally, equivocationPolicy, partnerEndpoints,
            proposalsOpened, blockResults, blockEvents
    }

    static let tag = TaggedHasher(tag: "calisson/state/key/v1")

    static func key(_ namespace: Namespace, _ parts: [UInt8]...) -> StateKey {
        var hasher = tag.hasher()
        hasher.update([namespace.rawValue])
        for part in parts { hasher.update(part) }
        return hasher.finalize()
    }

    static func bytes(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
    static func bytes(_ id: Identifier) -> [UInt8] { id.wireBytes }

    public static let meta = key(.meta)
    public static let parameters = key(.parameters)
    /// The validators' node keys and the height they last changed (`ValidatorKeys`).
    public static let validatorKeys = key(.validatorKeys)
    public static func partner(_ id: Identifier) -> StateKey { key(.partner, bytes(id)) }
    public static func programme(_ id: Identifier) -> StateKey { key(.programme, bytes(id)) }
    public static func account(_ id: AccountID) -> StateKey { key(.account, id.rawRepresentation) }
    public static func usage(_ account: AccountID, _ programme: Identifier) -> StateKey {
        key(.usage, account.rawRepresentation, bytes(programme))
    }
    public static func evidence(_ programme: Identifier, _ evidence: Bytes32) -> StateKey {
        key(.evidence, bytes(programme), evidence.bytes)
    }
    public static func used(_ signer: TransactionSigner, nonce: UInt64) -> StateKey { key(.used, signer.wireBytes, bytes(nonce)) }
    /// How many chunks list the used-nonce keys whose transactions expire at a height
    /// (pruned after it).
    static func usedExpiring(_ height: UInt64) -> StateKey { key(.usedExpiring, bytes(height)) }
    /// One chunk of that list (at most `ExpiryIndex.chunkCountMax` keys): transactions
    /// sharing an expiry height cost each block only its last chunk, never the whole list.
    static func usedExpiringChunk(_ height: UInt64, _ chunk: UInt64) -> StateKey { key(.usedExpiringChunk, bytes(height), bytes(chunk)) }
    /// How many chunks list the accounts holding lots that expire at an epoch's close.
    static func expiringLots(_ epoch: UInt64) -> StateKey { key(.expiringLots, bytes(epoch)) }
    /// One chunk of that list (at most `ExpiryIndex.chunkCountMax` accounts), so a block
    /// rewrites only the last chunk, never the whole list.
    static func expiringChunk(_ epoch: UInt64, _ chunk: UInt64) -> StateKey { key(.expiringChunk, bytes(epoch), bytes(chunk)) }
    public static func proposal(_ id: UInt64) -> StateKey { key(.proposal, bytes(id)) }
    /// Every upgrade voted (`UpgradeSchedule`).
    public static let upgrades = key(.upgrades)
    /// A partner's category (rules 2).
    public static func partnerCategory(_ id: Identifier) -> StateKey { key(.partnerCategory, bytes(id)) }
    /// The categories of acceptors a programme's tokens may be spent at (rules 2).
    public static func programmeAcceptance(_ id: Identifier) -> StateKey { key(.programmeAcceptance, bytes(id)) }
    /// An equivocation recorded (rules 3), by node key and slot: one record per slot.
    public static func equivocation(_ evidence: EquivocationEvidence) -> StateKey {
        key(.equivocation, evidence.nodeKey.rawRepresentation, [evidence.kind.rawValue], bytes(evidence.view), bytes(evidence.seq))
    }
    /// The equivocations recorded against a partner (rules 3).
    public static func equivocationTally(_ id: Identifier) -> StateKey { key(.equivocationTally, bytes(id)) }
    /// Whether a reported equivocator is suspended at once (rules 3).
    public static let equivocationPolicy = key(.equivocationPolicy)
    /// Where a partner's node takes validator links (rules 4, `EndpointList`).
    public static func partnerEndpoints(_ id: Identifier) -> StateKey { key(.partnerEndpoints, bytes(id)) }
    /// The proposals a partner opened in its current day of blocks (rules 6, `ProposalsOpened`).
    static func proposalsOpened(_ id: Identifier) -> StateKey { key(.proposalsOpened, bytes(id)) }
    /// A block's results committed (`BlockResults`, from `LedgerRules.resultsCommitted`):
    /// written by each block that has transactions, kept for good.
    public static func blockResults(_ height: UInt64) -> StateKey { key(.blockResults, bytes(height)) }
    /// A block's governance decisions, openings and epoch close (`BlockEvents`, from
    /// `LedgerRules.eventsCommitted`): written by each block that has one, kept for good;
    /// absent, from those rules on, for a block that has none.
    public static func blockEvents(_ height: UInt64) -> StateKey { key(.blockEvents, bytes(height)) }
    public static func obligations(_ epoch: UInt64) -> StateKey { key(.obligations, bytes(epoch)) }
    public static func statement(_ epoch: UInt64, _ partner: Identifier) -> StateKey { key(.statement, bytes(epoch), bytes(partner)) }
    public static func settlement(_ epoch: UInt64) -> StateKey { key(.settlement, bytes(epoch)) }
    /// The indicators of a closed epoch (`EpochReport`).
    public static func epochReport(_ epoch: UInt64) -> StateKey { key(.epochReport, bytes(epoch)) }
    /// The current epoch's running figures, folded into its report at the close.
    static let epochActivity = key(.epochActivity)
}

public enum ProposalStatus: Hashable, Sendable {
    case open
    case passed(atHeight: UInt64)
    /// Enough partners voted no that it can no longer pass.
    case rejected(atHeight: UInt64)
    /// It passed but its action was no longer valid when applied.
    case failed(atHeight: UInt64, reason: String)

    /// The height of the block that decided it; nil while open.
    public var decidedAt: UInt64? {
        switch self {
        case .open: return nil
        case let .passed(height), let .rejected(height), let .failed(height, _): return height
        }
    }
}

public struct Proposal: Hashable, Sendable {
    public let id: UInt64
    public let proposer: Identifier
    public let action: GovernanceAction
    public let deadline: UInt64
    public var yes: [Identifier]
    public var no: [Identifier]
    public var status: ProposalStatus

    /// A failed proposal's reason, in bytes, that its record reads back (from rules 6 the
    /// reason is cut to it when the proposal fails; before, a longer one made the record
    /// unreadable, the proposal then unknown to votes and reads).
    public static let reasonBytesMax = 256
}

/// How many proposals a partner opened in its current day of blocks, which ends before
/// height `end` (rules 6). The day's end, set when it starts from the `blocksPerDay` in
/// force then: a vote changing them later neither revives an old count nor ends a day early.
struct ProposalsOpened: Hashable, Sendable, WireCodable {
    var end: UInt64
    var count: UInt64

    func encode(to writer: inout WireWriter) {
        writer.write(end)
        writer.write(count)
    }

    init(end: UInt64, count: UInt64) {
        self.end = end
        self.count = count
    }

    init(from reader: inout WireReader) throws(WireError) {
        end = try reader.readUInt64("proposalsOpened.end")
        count = try reader.readUInt64("proposalsOpened.count")
    }
}

/// What `sponsor` owes `acceptor` for tokens of its programmes redeemed there in one epoch.
public struct Obligation: Hashable, Sendable {
    public let sponsor: Identifier
    public let acceptor: Identifier
    public var amount: Amount
}

/// One payment of the settlement, always to or from the Métropole (central counterparty).
public struct Settlement: Hashable, Sendable {
    public let from: Identifier
    public let to: Identifier
    public let amount: Amount

    public init(from: Identifier, to: Identifier, amount: Amount) {
        self.from = from
        self.to = to
        self.amount = amount
    }
}

/// A partner's clearing statement for one epoch.
public struct Statement: Hashable, Sendable {
    public let epoch: UInt64
    public let partner: Identifier
    /// Owed to it (as acceptor) and owed by it (as sponsor).
    public let grossIn: Amount
    public let grossOut: Amount
    /// grossIn − grossOut; the net positions of an epoch sum to zero.
    public let net: Int64
    /// Hash of the epoch's obligations list: every statement of the epoch carries it, so
    /// a partner can check the list it is given against the chain.
    public let obligationsHash: SHA256Digest

    public init(epoch: UInt64, partner: Identifier, grossIn: Amount, grossOut: Amount, net: Int64, obligationsHash: SHA256Digest) {
        self.epoch = epoch
        self.partner = partner
        self.grossIn = grossIn
        self.grossOut = grossOut
        self.net = net
        self.obligationsHash = obligationsHash
    }
}

// MARK: Wire forms

extension ProposalStatus: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case .open: writer.write(UInt8(1))
        case let .passed(height): writer.write(UInt8(2)); writer.write(height)
        case let .rejected(height): writer.write(UInt8(3)); writer.write(height)
        case let .failed(height, reason): writer.write(UInt8(4)); writer.write(height); writer.writeString(reason)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("proposal.status") {
        case 1: self = .open
        case 2: self = .passed(atHeight: try reader.readUInt64("proposal.height"))
        case 3: self = .rejected(atHeight: try reader.readUInt64("proposal.height"))
        case 4:
            let height = try reader.readUInt64("proposal.height")
            self = .failed(atHeight: height, reason: try reader.readString("proposal.reason", maximumBytes: Proposal.reasonBytesMax))
        case let raw: throw .unknownKind(field: "proposal.status", offset: offset, raw: UInt64(raw))
        }
    }
}

extension Proposal: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(id)
        writer.write(proposer)
        writer.write(action)
        writer.write(deadline)
        writer.writeArray(yes)
        writer.writeArray(no)
        writer.write(status)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        id = try reader.readUInt64("proposal.id")
        proposer = try Identifier(from: &reader)
        action = try GovernanceAction(from: &reader)
        deadline = try reader.readUInt64("proposal.deadline")
        yes = try reader.readArray("proposal.yes", maximum: LedgerLimits.listCountMax, of: Identifier.self)
        no = try reader.readArray("proposal.no", maximum: LedgerLimits.listCountMax, of: Identifier.self)
        status = try ProposalStatus(from: &reader)
    }
}

extension Obligation: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(sponsor)
        writer.write(acceptor)
        writer.write(amount)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        sponsor = try Identifier(from: &reader)
        acceptor = try Identifier(from: &reader)
        amount = try reader.readUInt64("obligation.amount")
    }
}

extension Settlement: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(from)
        writer.write(to)
        writer.write(amount)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        from = try Identifier(from: &reader)
        to = try Identifier(from: &reader)
        amount = try reader.readUInt64("settlement.amount")
    }
}

extension Statement: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(epoch)
        writer.write(partner)
        writer.write(grossIn)
        writer.write(grossOut)
        writer.write(net)
        writer.write(obligationsHash)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        epoch = try reader.readUInt64("statement.epoch")
        partner = try Identifier(from: &reader)
        grossIn = try reader.readUInt64("statement.grossIn")
        grossOut = try reader.readUInt64("statement.grossOut")
        net = try reader.readInt64("statement.net")
        obligationsHash = try SHA256Digest(from: &reader)
    }
}

/// A list of state keys or accounts, as stored in the pruning and expiry indexes.
struct KeyList: WireCodable {
    static let countMax = 1 << 20
    var keys: [Bytes32]
    init(_ keys: [Bytes32]) { self.keys = keys }
    func encode(to writer: inout WireWriter) { writer.writeArray(keys) }
    init(from reader: inout WireReader) throws(WireError) {
        keys = try reader.readArray("keys", maximum: Self.countMax, of: Bytes32.self)
    }
}

struct ObligationList: WireCodable {
    var obligations: [Obligation]
    init(_ obligations: [Obligation]) { self.obligations = obligations }
    func encode(to writer: inout WireWriter) { writer.writeArray(obligations) }
    init(from reader: inout WireReader) throws(WireError) {
        obligations = try reader.readArray("obligations", maximum: LedgerLimits.listCountMax * LedgerLimits.listCountMax, of: Obligation.self)
    }
}

/// An epoch's settlement instructions, as the state holds them (`StateKeys.settlement`).
public struct SettlementList: WireCodable {
    public var settlements: [Settlement]
    public init(_ settlements: [Settlement]) { self.settlements = settlements }
    public func encode(to writer: inout WireWriter) { writer.writeArray(settlements) }
    public init(from reader: inout WireReader) throws(WireError) {
        settlements = try reader.readArray("settlements", maximum: LedgerLimits.listCountMax, of: Settlement.self)
    }
}
