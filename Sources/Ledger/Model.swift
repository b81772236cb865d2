import CalissonCrypto
import Wire

/// Token amounts, in the smallest unit. Integers only: no floating point anywhere.
public typealias Amount = UInt64
/// A citizen's account: an Ed25519 public key, pseudonymous (Docs/PRIVACY.md).
public typealias AccountID = Ed25519PublicKey

public enum LedgerLimits {
    /// Every amount, budget, ceiling and cap stays below this, so an account's lots
    /// (at most 64) sum without overflow.
    public static let amountMax: Amount = 1 << 56
    /// The ledger's running totals stay below this (attribution past it is refused), so
    /// every total, sum of obligations and net position fits in an Int64.
    public static let totalMax: Amount = 1 << 62
    public static let nameBytesMax = 64
    public static let listCountMax = 256
    /// Programmes, open and closed, that the ledger's meta record holds and reads back.
    public static let programmeCountMax = listCountMax * 16
    /// Token lots an account may hold (distinct programme and expiry pairs).
    public static let lotsPerAccountMax = 64
    /// Every span of blocks a parameter sets (epoch length, blocks per day, transaction and
    /// proposal lifetimes) is at most this: 2^32 blocks, 13 years at ten blocks a second.
    /// A height plus a span then stays far from overflow, and so does `blocksPerDay` times
    /// the days of a cap period.
    public static let blockSpanMax: UInt64 = 1 << 32
    /// Proposals one partner may open per day of blocks (`blocksPerDay`), from rules 6: a
    /// proposal's record (up to ~16 KiB) stays in the certified state for good, and opening
    /// one needs no vote.
    public static let proposalsPerDayMax: UInt64 = 16
    /// Blocks after the block that changed the validators' node keys within which the
    /// consensus takes the change up: it is in force from the first height past the next
    /// checkpoint (every 8 blocks) and the window (32 blocks) after it
    /// (`EpochSchedule.boundary`), at most 40 blocks on (rules 6: no validator is added
    /// meanwhile).
    public static let validatorSwitchBlocks: UInt64 = 40
}

/// A partner's or programme's identifier: 1 to 32 bytes of a-z, 0-9 and '-'.
public struct Identifier: Hashable, Comparable, Sendable, CustomStringConvertible, WireCodable {
    public static let byteCountMax = 32
    public let rawValue: String

    public init?(_ rawValue: String) {
        let bytes = Array(rawValue.utf8)
        guard !bytes.isEmpty, bytes.count <= Self.byteCountMax,
            bytes.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D })
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
    public static func < (lhs: Identifier, rhs: Identifier) -> Bool { Array(lhs.rawValue.utf8).lexicographicallyPrecedes(rhs.rawValue.utf8) }

    public func encode(to writer: inout WireWriter) { writer.writeString(rawValue) }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let raw = try reader.readString("identifier", maximumBytes: Self.byteCountMax)
        guard let id = Identifier(raw) else { throw .invalidValue(field: "identifier", offset: offset, reason: "not [a-z0-9-]{1,32}") }
        self = id
    }
}

public struct Roles: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// May attribute tokens under programmes that list it.
    public static let issuer = Roles(rawValue: 1)
    /// May accept redemptions.
    public static let acceptor = Roles(rawValue: 2)
    /// Runs a validator node (when governance puts it in the validator set).
    public static let validator = Roles(rawValue: 4)
    /// The Métropole: central counterparty of clearing.
    public static let authority = Roles(rawValue: 8)
    static let known: Roles = [.issuer, .acceptor, .validator, .authority]
}

public enum PartnerStatus: UInt8, Sendable, CaseIterable {
    case active = 1
    /// Cannot sign transactions or vote; may be reinstated by governance.
    case suspended = 2
    /// For good: its keys are refused, it leaves the validator set.
    case removed = 3
}

public struct Partner: Hashable, Sendable {
    public var id: Identifier
    public var name: String
    public var roles: Roles
    public var status: PartnerStatus
    /// Signs its transactions and governance votes.
    public var signingKey: Ed25519PublicKey
    /// Its validator node's consensus key, if it runs one.
    public var nodeKey: Ed25519PublicKey?
    /// SHA-256 of its TLS certificate's public key (SPKI DER): Transport checks a peer's
    /// certificate against it.
    public var tlsKeyHash: SHA256Digest?

    public init(
        id: Identifier, name: String, roles: Roles, status: PartnerStatus = .active, signingKey: Ed25519PublicKey,
        nodeKey: Ed25519PublicKey? = nil, tlsKeyHash: SHA256Digest? = nil
    ) {
        self.id = id
        self.name = name
        self.roles = roles
        self.status = status
        self.signingKey = signingKey
        self.nodeKey = nodeKey
        self.tlsKeyHash = tlsKeyHash
    }
}

public enum Category: UInt8, Sendable, CaseIterable {
    case transit = 1, wasteSorting, event, energy, other

    /// Its name in files, commands and the API.
    public var name: String {
        switch self {
        case .transit: return "transit"
        case .wasteSorting: return "wasteSorting"
        case .event: return "event"
        case .energy: return "energy"
        case .other: return "other"
        }
    }

    public init?(name: String) {
        guard let found = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = found
    }
}

/// The period over which an account's rewards are capped, in block time
/// (`Parameters.blocksPerDay`).
public enum CapPeriod: UInt8, Sendable, CaseIterable {
    case day = 1, week, month

    public var days: UInt64 {
        switch self {
        case .day: return 1
        case .week: return 7
        case .month: return 30
        }
    }
}

/// How a programme's tokens lose value.
public enum Lifetime: Hashable, Sendable {
    /// Tokens expire at the close of the `epochs`-th ledger epoch after the one they were
    /// attributed in (0: at the close of that same epoch) and are retired.
    case expiry(epochs: UInt32)
    /// Tokens melt by this many basis points at each epoch close (Sol-Violette's 2% a
    /// quarter is 200 with quarterly epochs); what melts goes to the community sink.
    case demurrage(basisPointsPerEpoch: UInt16)
}

public enum ProgrammeStatus: UInt8, Sendable {
    case active = 1
    case closed = 2
}

/// The contract governance derives from the operating rules, with its running totals.
public struct Programme: Hashable, Sendable {
    public var id: Identifier
    public var name: String
    public var category: Category
    public var rewardPerUnit: Amount
    /// Partners allowed to attribute (each must have the issuer role).
    public var issuers: [Identifier]
    /// Who funds it: owes acceptors what its tokens buy.
    public var sponsor: Identifier
    /// At most this much attributed to one account per `capPeriod`.
    public var capPerAccount: Amount
    public var capPeriod: CapPeriod
    /// At most this much of the programme's tokens in one account.
    public var walletCeiling: Amount
    /// At most this much attributed in total.
    public var budget: Amount
    public var lifetime: Lifetime
    /// Where its tokens may be spent; empty: at any acceptor.
    public var acceptors: [Identifier]
    public var transferable: Bool
    /// First and last heights at which it attributes (endHeight 0: no end).
    public var startHeight: UInt64
    public var endHeight: UInt64
    public var status: ProgrammeStatus
    public var totals: Totals

    public struct Totals: Hashable, Sendable {
        public var issued: Amount = 0
        public var redeemed: Amount = 0
        public var expired: Amount = 0
        public var sunk: Amount = 0
        public init() {}
        /// What citizens hold: issued less what left circulation.
        public var live: Amount { issued - redeemed - expired - sunk }
    }

    public init(
        id: Identifier, name: String, category: Category, rewardPerUnit: Amount, issuers: [Identifier], sponsor: Identifier,
        capPerAccount: Amount, capPeriod: CapPeriod, walletCeiling: Amount, budget: Amount, lifetime: Lifetime,
        acceptors: [Identifier] = [], transferable: Bool = false, startHeight: UInt64 = 0, endHeight: UInt64 = 0,
        status: ProgrammeStatus = .active
    ) {
        self.id = id
        self.name = name
        self.category = category
        self.rewardPerUnit = rewardPerUnit
        self.issuers = issuers.sorted()
        self.sponsor = sponsor
        self.capPerAccount = capPerAccount
        self.capPeriod = capPeriod
        self.walletCeiling = walletCeiling
        self.budget = budget
        self.lifetime = lifetime
        self.acceptors = acceptors.sorted()
        self.transferable = transferable
        self.startHeight = startHeight
        self.endHeight = endHeight
        self.status = status
        totals = Totals()
    }
}

/// Tokens of one programme with one expiry, in an account. Provenance (programme, hence
/// sponsor; expiry) stays with the tokens until they are spent.
public struct Lot: Hashable, Sendable {
    public static let noExpiry = UInt64.max
    public var programme: Identifier
    /// The ledger epoch at whose close they expire (`noExpiry` for demurrage).
    public var expiresAtEpoch: UInt64
    public var amount: Amount
    /// Demurrage has been applied for every epoch close before this epoch.
    public var meltedFromEpoch: UInt64

    public init(programme: Identifier, expiresAtEpoch: UInt64, amount: Amount, meltedFromEpoch: UInt64) {
        self.programme = programme
        self.expiresAtEpoch = expiresAtEpoch
        self.amount = amount
        self.meltedFromEpoch = meltedFromEpoch
    }

    /// The amount left of `amount` after the demurrage of the epochs from `fromEpoch` up to
    /// (not including) `epoch` at `basisPoints` per epoch: ⌊amount × rate / 10000⌋ melts at
    /// each close, computed without overflow (amounts are below 2^56). Once a close melts
    /// nothing, none after it does (the amount no longer changes): the loop ends there, so
    /// it runs at most some 300,000 times (2^56 at 1 basis point), however many epochs a
    /// dormant account slept through. Before, it ran once per epoch: with epochs of one
    /// block, an account untouched for a year could cost every block that touched it some
    /// 3×10^8 turns of this loop (estimated, not measured).
    public static func afterDemurrage(_ amount: Amount, basisPoints: UInt16, fromEpoch: UInt64, to epoch: UInt64) -> Amount {
        let rate = Amount(basisPoints)
        var left = amount
        var close = fromEpoch
        while close < epoch {
            let melt = left / 10_000 * rate + left % 10_000 * rate / 10_000
            guard melt > 0 else { break }
            left -= melt
            close += 1
        }
        return left
    }

    /// Spending order: soonest expiry first, then programme id: deterministic.
    static func spendingOrder(_ a: Lot, _ b: Lot) -> Bool {
        (a.expiresAtEpoch, a.programme.rawValue) < (b.expiresAtEpoch, b.programme.rawValue)
    }
}

public struct Account: Hashable, Sendable {
    /// In spending order.
    public var lots: [Lot] = []
    public init(lots: [Lot] = []) { self.lots = lots }

    public var balance: Amount { lots.reduce(0) { $0 + $1.amount } }
    public func balance(in programme: Identifier) -> Amount {
        lots.filter { $0.programme == programme }.reduce(0) { $0 + $1.amount }
    }
}

/// What an account received from one programme in the current cap period.
public struct Usage: Hashable, Sendable {
    /// The period: its first height from ledger rules 6, its index before
    /// (`Ledger.capPeriod(at:span:rules:)`).
    public var period: UInt64
    public var amount: Amount
}

/// Operating parameters, set at genesis and changed by governance.
public struct Parameters: Hashable, Sendable {
    /// Blocks per ledger epoch: each ends with an automatic close (expiry, clearing).
    public var epochLength: UInt64 = 1_000
    /// Block time: how many blocks make a day, for cap periods.
    public var blocksPerDay: UInt64 = 8_640
    /// A transaction's expiry height may be at most this far above the current height.
    public var transactionLifetimeMax: UInt64 = 600
    /// A proposal's deadline may be at most this far above the current height.
    public var proposalLifetimeMax: UInt64 = 100_000
    /// A proposal passes with yes votes from at least this fraction of active partners.
    public var approvalNumerator: UInt8 = 2
    public var approvalDenominator: UInt8 = 3
    /// Where demurrage goes (a partner id; the community fund).
    public var sink: Identifier
    /// What one token unit is worth, in micro-euros (10^-6 €; 10,000 is one cent): the
    /// rate at which an epoch's net positions become euro payments (Docs/SETTLEMENT.md).
    /// 0: not set, and no settlement file can be produced.
    public var tokenValueMicroEuros: UInt64 = 0
    /// At most 1,000 € a token unit: with totals below 2^62 every euro amount stays far
    /// inside 128-bit arithmetic, and a mistyped value is refused rather than paid.
    public static let tokenValueMicroEurosMax: UInt64 = 1_000_000_000

    public init(sink: Identifier) { self.sink = sink }

    /// nil when consistent, else what is wrong.
    public func problem() -> String? {
        let spans = [("epochLength", epochLength), ("blocksPerDay", blocksPerDay),
                     ("transactionLifetimeMax", transactionLifetimeMax), ("proposalLifetimeMax", proposalLifetimeMax)]
        for (name, span) in spans where span == 0 || span > LedgerLimits.blockSpanMax {
            return "\(name) must be from 1 to \(LedgerLimits.blockSpanMax) blocks (it is \(span))"
        }
        if approvalDenominator == 0 || approvalNumerator == 0 || approvalNumerator > approvalDenominator {
            return "approval must be a fraction in (0, 1]"
        }
        if tokenValueMicroEuros > Self.tokenValueMicroEurosMax {
            return "tokenValueMicroEuros must be at most \(Self.tokenValueMicroEurosMax) (1,000 € a token; it is \(tokenValueMicroEuros))"
        }
        return nil
    }

    /// Yes votes needed among `active` partners: ⌈active × numerator / denominator⌉.
    public func approvalsNeeded(active: Int) -> Int {
        let numerator = Int(approvalNumerator), denominator = Int(approvalDenominator)
        return (active * numerator + denominator - 1) / denominator
    }
}

/// Ledger-wide counters and the schedule of epochs.
public struct LedgerMeta: Hashable, Sendable {
    public var height: UInt64 = 0
    /// The current ledger epoch (clearing period) and the height it started at.
    public var epoch: UInt64 = 0
    public var epochStartHeight: UInt64 = 1
    public var nextProposal: UInt64 = 1
    public var totals = Programme.Totals()
    /// Every partner ever admitted, in id order (removed ones stay, with their status).
    public var partners: [Identifier] = []
    /// Every programme ever created, in id order.
    public var programmes: [Identifier] = []
    /// The partners whose nodes validate, in consensus order.
    public var validators: [Identifier] = []
    public init() {}
}

// MARK: Wire forms (the canonical encoding of each record in the state)

extension Partner: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(id)
        writer.writeString(name)
        writer.write(roles.rawValue)
        writer.write(status.rawValue)
        writer.write(signingKey)
        writer.writeOptional(nodeKey)
        writer.writeOptional(tlsKeyHash)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        id = try Identifier(from: &reader)
        name = try reader.readString("partner.name", maximumBytes: LedgerLimits.nameBytesMax)
        let roles = Roles(rawValue: try reader.readUInt8("partner.roles"))
        guard Roles.known.isSuperset(of: roles) else { throw .invalidValue(field: "partner.roles", offset: reader.offset - 1, reason: "unknown role bits") }
        self.roles = roles
        status = try reader.readEnum("partner.status")
        signingKey = try Ed25519PublicKey(from: &reader)
        nodeKey = try reader.readOptional("partner.nodeKey", of: Ed25519PublicKey.self)
        tlsKeyHash = try reader.readOptional("partner.tlsKeyHash", of: SHA256Digest.self)
    }
}

extension Lifetime: WireCodable {
    public func encode(to writer: inout WireWriter) {
        switch self {
        case let .expiry(epochs):
            writer.write(UInt8(1))
            writer.write(epochs)
        case let .demurrage(basisPoints):
            writer.write(UInt8(2))
            writer.write(basisPoints)
        }
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        switch try reader.readUInt8("lifetime.kind") {
        case 1: self = .expiry(epochs: try reader.readUInt32("lifetime.epochs"))
        case 2:
            let basisPoints = try reader.readUInt16("lifetime.basisPoints")
            guard basisPoints <= 10_000 else { throw .invalidValue(field: "lifetime.basisPoints", offset: offset + 1, reason: "over 10000") }
            self = .demurrage(basisPointsPerEpoch: basisPoints)
        case let raw: throw .unknownKind(field: "lifetime.kind", offset: offset, raw: UInt64(raw))
        }
    }
}

extension Programme.Totals: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(issued)
        writer.write(redeemed)
        writer.write(expired)
        writer.write(sunk)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        issued = try reader.readUInt64("totals.issued")
        redeemed = try reader.readUInt64("totals.redeemed")
        expired = try reader.readUInt64("totals.expired")
        sunk = try reader.readUInt64("totals.sunk")
        guard issued <= LedgerLimits.totalMax, redeemed <= issued, expired <= issued - redeemed, sunk <= issued - redeemed - expired else {
            throw .invalidValue(field: "totals", offset: reader.offset, reason: "more left circulation than was issued")
        }
    }
}

extension Programme: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(id)
        writer.writeString(name)
        writer.write(category.rawValue)
        writer.write(rewardPerUnit)
        writer.writeArray(issuers)
        writer.write(sponsor)
        writer.write(capPerAccount)
        writer.write(capPeriod.rawValue)
        writer.write(walletCeiling)
        writer.write(budget)
        writer.write(lifetime)
        writer.writeArray(acceptors)
        writer.write(transferable)
        writer.write(startHeight)
        writer.write(endHeight)
        writer.write(status.rawValue)
        writer.write(totals)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        id = try Identifier(from: &reader)
        name = try reader.readString("programme.name", maximumBytes: LedgerLimits.nameBytesMax)
        category = try reader.readEnum("programme.category")
        rewardPerUnit = try reader.readUInt64("programme.rewardPerUnit")
        issuers = try reader.readArray("programme.issuers", maximum: LedgerLimits.listCountMax, of: Identifier.self)
        sponsor = try Identifier(from: &reader)
        capPerAccount = try reader.readUInt64("programme.capPerAccount")
        capPeriod = try reader.readEnum("programme.capPeriod")
        walletCeiling = try reader.readUInt64("programme.walletCeiling")
        budget = try reader.readUInt64("programme.budget")
        lifetime = try Lifetime(from: &reader)
        acceptors = try reader.readArray("programme.acceptors", maximum: LedgerLimits.listCountMax, of: Identifier.self)
        transferable = try reader.readBool("programme.transferable")
        startHeight = try reader.readUInt64("programme.startHeight")
        endHeight = try reader.readUInt64("programme.endHeight")
        status = try reader.readEnum("programme.status")
        totals = try Programme.Totals(from: &reader)
    }
}

extension Lot: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(programme)
        writer.write(expiresAtEpoch)
        writer.write(amount)
        writer.write(meltedFromEpoch)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        programme = try Identifier(from: &reader)
        expiresAtEpoch = try reader.readUInt64("lot.expiresAtEpoch")
        amount = try reader.readUInt64("lot.amount")
        meltedFromEpoch = try reader.readUInt64("lot.meltedFromEpoch")
    }
}

extension Account: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.writeArray(lots) }
    public init(from reader: inout WireReader) throws(WireError) {
        lots = try reader.readArray("account.lots", maximum: LedgerLimits.lotsPerAccountMax, of: Lot.self)
    }
}

extension Usage: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(period)
        writer.write(amount)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        period = try reader.readUInt64("usage.period")
        amount = try reader.readUInt64("usage.amount")
    }
}

extension Parameters: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(epochLength)
        writer.write(blocksPerDay)
        writer.write(transactionLifetimeMax)
        writer.write(proposalLifetimeMax)
        writer.write(approvalNumerator)
        writer.write(approvalDenominator)
        writer.write(sink)
        writer.write(tokenValueMicroEuros)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        epochLength = try reader.readUInt64("parameters.epochLength")
        blocksPerDay = try reader.readUInt64("parameters.blocksPerDay")
        transactionLifetimeMax = try reader.readUInt64("parameters.transactionLifetimeMax")
        proposalLifetimeMax = try reader.readUInt64("parameters.proposalLifetimeMax")
        approvalNumerator = try reader.readUInt8("parameters.approvalNumerator")
        approvalDenominator = try reader.readUInt8("parameters.approvalDenominator")
        sink = try Identifier(from: &reader)
        tokenValueMicroEuros = try reader.readUInt64("parameters.tokenValueMicroEuros")
        if let problem = problem() { throw .invalidValue(field: "parameters", offset: reader.offset, reason: problem) }
    }
}

/// The validator set as consensus sees it (node keys, in consensus order) and the height
/// of the block that last changed it (0: genesis). Kept in the state so that a light
/// client, trusting a checkpoint certified by one set, learns the next set and when it
/// takes over (Docs/QUERY.md, *Following validator-set changes*).
public struct ValidatorKeys: Hashable, Sendable, WireCodable {
    public var changedAt: UInt64
    public var keys: [Ed25519PublicKey]

    public init(changedAt: UInt64, keys: [Ed25519PublicKey]) {
        self.changedAt = changedAt
        self.keys = keys
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(changedAt)
        writer.writeArray(keys)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        changedAt = try reader.readUInt64("validatorKeys.changedAt")
        keys = try reader.readArray("validatorKeys.keys", maximum: LedgerLimits.listCountMax, of: Ed25519PublicKey.self)
    }
}

extension LedgerMeta: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(height)
        writer.write(epoch)
        writer.write(epochStartHeight)
        writer.write(nextProposal)
        writer.write(totals)
        writer.writeArray(partners)
        writer.writeArray(programmes)
        writer.writeArray(validators)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        height = try reader.readUInt64("meta.height")
        epoch = try reader.readUInt64("meta.epoch")
        epochStartHeight = try reader.readUInt64("meta.epochStartHeight")
        nextProposal = try reader.readUInt64("meta.nextProposal")
        totals = try Programme.Totals(from: &reader)
        partners = try reader.readArray("meta.partners", maximum: LedgerLimits.listCountMax, of: Identifier.self)
        programmes = try reader.readArray("meta.programmes", maximum: LedgerLimits.programmeCountMax, of: Identifier.self)
        validators = try reader.readArray("meta.validators", maximum: LedgerLimits.listCountMax, of: Identifier.self)
    }
}

extension WireReader {
    /// A one-byte enum value, refusing unknown ones.
    mutating func readEnum<T: RawRepresentable>(_ field: String, as _: T.Type = T.self) throws(WireError) -> T where T.RawValue == UInt8 {
        let raw = try readUInt8(field)
        guard let value = T(rawValue: raw) else { throw .unknownKind(field: field, offset: offset - 1, raw: UInt64(raw)) }
        return value
    }
}
