import Wire

/// The ledger's rules, versioned by height (Docs/GOVERNANCE.md, "Scheduled upgrades").
/// A chain starts at version 1; a `scheduleUpgrade` action voted by the partners makes a
/// higher version the rules from a height on. A block executes under the rules in force
/// at its height, so replaying old blocks with a newer binary gives the same results and
/// roots; a binary whose newest rules are older than those in force at the next height
/// stops before executing it.
///
/// - 1: every rule up to and including scheduled upgrades themselves.
/// - 2: acceptance by category: a partner's category (`setPartnerCategory`) and the
///   categories of acceptors where a programme's tokens may be spent
///   (`setProgrammeAcceptance`).
/// - 3: equivocation evidence as a transaction (`reportEquivocation`), recorded in the
///   state, and the policy of suspending the validator at once (`setEquivocationPolicy`).
/// - 4: peers found in the ledger: a partner's validator endpoints, set at its admission,
///   by the partner itself (`setEndpoints`) or by governance (`setPartnerEndpoints`); and
///   the withdrawal of a voted upgrade not yet in force (`cancelUpgrade`).
/// - 5: governance keeps the validators' node keys a set the consensus can use: no
///   action leaves the validators without one (the last suspended or removed, by a vote
///   or by evidence), a validator without a node key, or one node key held by two
///   partners; and no programme past `LedgerLimits.programmeCountMax`. Before, such
///   actions applied: the consensus kept the old set while the ledger's record said the
///   new one, and every light client following it stopped verifying (or the ledger's
///   meta record grew past what it reads back).
/// - 6: a vote cannot stop the chain nor hand one partner every decision, and no partner
///   grows the state with proposals at will: a validator set adds at most f of its new
///   members at once (one at a time below four), each with a TLS key its peers can check
///   (`setValidators`); a proposal passes with more than half of the active partners
///   (`setParameters`); a partner opens at most `LedgerLimits.proposalsPerDayMax`
///   proposals per day of blocks (`proposalsPerDayExceeded`); a failed proposal's reason
///   is kept cut to what its record reads back (`Proposal.reasonBytesMax`); and an
///   account's cap usage names its period by its first height, not its index, so that a
///   vote changing `blocksPerDay` cannot make an old period's usage count again; and the
///   clearing's counterparty changes only by a handover (an authority admitted under a
///   later id, then the current one removed).
/// - 7: each block's results in the certified state: a block with transactions writes the
///   Merkle root of their results' committed bytes (`CommittedResults`,
///   `StateKeys.blockResults`), so that whether a transaction applied, and the code and
///   figures of why not, are proven by a checkpoint certificate as balances are.
/// - 8: each block's governance decisions, openings and epoch close in the certified
///   state: a block that decides or opens proposals or closes an epoch writes which
///   (`BlockEvents`, `StateKeys.blockEvents`), so that a reader of the blocks can prove that
///   none was left out and each opening's number, as rules 7 let it prove the results.
/// - 9: any change of the validator list (`setValidators`: an addition, a removal, a new
///   order) waits until the consensus has taken up the last change of the validators, removals too
///   (under rules 6 only additions waited: a removal passed while an addition
///   was pending could leave the validators just added, not up yet, needed for every
///   quorum, and the chain stopped for good); and an account's cap usage counts for the
///   period its record names by first height only (rules 6 also counted a record naming
///   the current period's index, for records written before them, which matched a record
///   of rules 6 again `span` periods later, refusing rewards under a cap not reached).
public enum LedgerRules {
    /// The newest version this code implements.
    public static let newest: UInt32 = 9
    /// The version of a chain that never voted an upgrade.
    public static let initial: UInt32 = 1
    /// The version that brought acceptance by category.
    public static let acceptanceByCategory: UInt32 = 2
    /// The version that brought equivocation evidence.
    public static let evidence: UInt32 = 3
    /// The version that brought partners' endpoints in the ledger.
    public static let endpoints: UInt32 = 4
    /// The version that keeps the validators' node keys usable (and the programmes countable).
    public static let validatorKeysKept: UInt32 = 5
    /// The version that bounds what a vote can do to the validators, the approval and the state.
    public static let governanceBounded: UInt32 = 6
    /// The version that commits each block's results to the state.
    public static let resultsCommitted: UInt32 = 7
    /// The version that commits each block's decisions, openings and epoch close to the state.
    public static let eventsCommitted: UInt32 = 8
    /// The version where every change of the validators waits for the last to be taken up.
    public static let validatorChangesOneAtATime: UInt32 = 9

    /// Why a tool refuses to propose an upgrade to `rules` (given as `field`): a version
    /// this release does not implement, once voted, stops every node at its height until
    /// each runs a release that does (a typo such as 50 would stop the chain for good).
    public static func scheduleRefusal(_ field: String, _ rules: some BinaryInteger) -> String {
        "\(field) must be from \(initial) to \(newest), the ledger rules this release implements, not \(rules): "
            + "propose an upgrade to newer rules with the release that brings them, once the validators run it"
    }
}

/// An upgrade the partners voted: from `height` on, the ledger's rules are at least
/// version `rules`, and a node whose binary implements older rules stops before that height.
public struct ScheduledUpgrade: Hashable, Sendable, WireCodable {
    public var name: Identifier
    public var height: UInt64
    /// The ledger rules version a node needs from `height` on (the "minimum version").
    public var rules: UInt32

    public init(name: Identifier, height: UInt64, rules: UInt32) {
        self.name = name
        self.height = height
        self.rules = rules
    }

    public func encode(to writer: inout WireWriter) {
        writer.write(name)
        writer.write(height)
        writer.write(rules)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        name = try Identifier(from: &reader)
        height = try reader.readUInt64("upgrade.height")
        rules = try reader.readUInt32("upgrade.rules")
    }
}

/// Every upgrade voted, by height then name (`StateKeys.upgrades`).
public struct UpgradeSchedule: Hashable, Sendable, WireCodable {
    /// Upgrades a chain keeps: past ones stay (they say how old blocks were executed).
    public static let countMax = LedgerLimits.listCountMax
    public internal(set) var upgrades: [ScheduledUpgrade]

    public init(_ upgrades: [ScheduledUpgrade] = []) {
        self.upgrades = upgrades.sorted(by: Self.precedes)
    }

    /// The schedule's order: by height, then name.
    static func precedes(_ a: ScheduledUpgrade, _ b: ScheduledUpgrade) -> Bool { (a.height, a.name) < (b.height, b.name) }

    /// The rules in force at `height`: the highest version of the upgrades at or below it.
    public func rules(atHeight height: UInt64) -> UInt32 {
        upgrades.reduce(LedgerRules.initial) { $1.height <= height ? max($0, $1.rules) : $0 }
    }

    /// The upgrade that brings the rules in force at `height` above `newest`, if any.
    public func missing(atHeight height: UInt64, newest: UInt32) -> ScheduledUpgrade? {
        upgrades.first { $0.height <= height && $0.rules > newest }  // the upgrades are in order
    }

    /// Upgrades whose height is above `height`.
    public func pending(after height: UInt64) -> [ScheduledUpgrade] { upgrades.filter { $0.height > height } }

    public func encode(to writer: inout WireWriter) { writer.writeArray(upgrades) }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        upgrades = try reader.readArray("upgrades", maximum: Self.countMax, of: ScheduledUpgrade.self)
        guard upgrades == upgrades.sorted(by: Self.precedes),
            Set(upgrades.map(\.name)).count == upgrades.count
        else { throw .invalidValue(field: "upgrades", offset: offset, reason: "not sorted by height and name, or a name twice") }
    }
}

/// Categories, sorted and distinct: where a programme's tokens may be spent
/// (`StateKeys.programmeAcceptance`).
public struct CategoryList: Hashable, Sendable, WireCodable {
    public let categories: [Category]

    public init(_ categories: [Category]) { self.categories = categories }

    public func encode(to writer: inout WireWriter) {
        writer.writeArray(categories.map(\.rawValue))
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let offset = reader.offset
        let raw = try reader.readArray("categories", maximum: Category.allCases.count, of: UInt8.self)
        var categories: [Category] = []
        for value in raw {
            guard let category = Category(rawValue: value) else { throw .unknownKind(field: "categories", offset: offset, raw: UInt64(value)) }
            categories.append(category)
        }
        guard categories.map(\.rawValue) == categories.map(\.rawValue).sorted(), Set(categories).count == categories.count else {
            throw .invalidValue(field: "categories", offset: offset, reason: "not sorted and distinct")
        }
        self.categories = categories
    }
}

extension Category: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.write(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.readEnum("category") }
}

extension Ledger {
    /// Every upgrade voted (past and pending).
    public var upgrades: UpgradeSchedule { read(StateKeys.upgrades) ?? UpgradeSchedule() }

    /// The rules in force at `height`.
    public func rules(atHeight height: UInt64) -> UInt32 { upgrades.rules(atHeight: height) }

    /// The upgrade a binary implementing rules up to `newest` lacks to execute the next
    /// block; nil when it can.
    public func upgradeMissing(newest: UInt32) -> ScheduledUpgrade? {
        upgrades.missing(atHeight: height + 1, newest: newest)
    }

    /// A partner's category, set by governance from rules 2 on (nil: none set).
    public func partnerCategory(_ id: Identifier) -> Category? { read(StateKeys.partnerCategory(id)) }

    /// The categories of acceptors where a programme's tokens may also be spent (beside
    /// its listed acceptors), set by governance from rules 2 on.
    public func acceptance(_ programme: Identifier) -> [Category] {
        read(StateKeys.programmeAcceptance(programme), as: CategoryList.self)?.categories ?? []
    }
}
