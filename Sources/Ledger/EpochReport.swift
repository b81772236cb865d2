import CalissonCrypto
import Wire

/// What happened during one ledger epoch, written into the state when the epoch closes
/// (under `StateKeys.epochReport`): the indicators the Métropole publishes. Being a state
/// record it is certified by every later checkpoint, so a public figure carries its proof
/// like any other answer (Docs/DASHBOARD.md).
///
/// Counts of distinct citizen accounts are deliberately absent: counting them exactly
/// would cost a state write per account per epoch and programme (a set that grows with
/// the population), and a small programme's count of distinct citizens is a figure close
/// to personal data (Docs/PRIVACY.md). Attributions (transactions) and gesture units are
/// counted instead.
public struct EpochReport: Hashable, Sendable {
    public let epoch: UInt64
    /// The heights of the epoch's first and last (closing) block.
    public let firstHeight: UInt64
    public let lastHeight: UInt64
    /// Every programme that existed at the close or had activity during the epoch, in id order.
    public var programmes: [ProgrammeFigures]
    /// The programmes' figures summed by category, in category order (only categories with a programme).
    public var categories: [CategoryFigures]
    /// Each acceptor where tokens were redeemed during the epoch, in id order.
    public var acceptors: [AcceptorFigures]
    /// Each partner's clearing net position for the epoch (as its statement has it), in id
    /// order; they sum to zero.
    public var nets: [PartnerNet]
    /// The ledger's running totals at the close (the supply since genesis).
    public var totals: Programme.Totals
    /// The token value in force at the close (`Parameters.tokenValueMicroEuros`): the rate
    /// at which this epoch settles, whatever governance decides later.
    public var tokenValueMicroEuros: UInt64

    public init(
        epoch: UInt64, firstHeight: UInt64, lastHeight: UInt64, programmes: [ProgrammeFigures], categories: [CategoryFigures],
        acceptors: [AcceptorFigures], nets: [PartnerNet], totals: Programme.Totals, tokenValueMicroEuros: UInt64
    ) {
        self.epoch = epoch
        self.firstHeight = firstHeight
        self.lastHeight = lastHeight
        self.programmes = programmes
        self.categories = categories
        self.acceptors = acceptors
        self.nets = nets
        self.totals = totals
        self.tokenValueMicroEuros = tokenValueMicroEuros
    }

    /// What a programme (or a category) did during the epoch.
    public struct Figures: Hashable, Sendable {
        /// Attribute transactions applied, and the gesture units they rewarded.
        public var attributions: UInt64 = 0
        public var units: UInt64 = 0
        public var issued: Amount = 0
        public var redeemed: Amount = 0
        public var expired: Amount = 0
        public var sunk: Amount = 0

        public init() {}

        mutating func add(_ other: Figures) {
            attributions += other.attributions
            units += other.units
            issued += other.issued
            redeemed += other.redeemed
            expired += other.expired
            sunk += other.sunk
        }
    }

    public struct ProgrammeFigures: Hashable, Sendable {
        public let programme: Identifier
        public let category: Category
        public let figures: Figures
        /// The budget left at the close (budget − issued since the programme began).
        public let budgetLeft: Amount

        public init(programme: Identifier, category: Category, figures: Figures, budgetLeft: Amount) {
            self.programme = programme
            self.category = category
            self.figures = figures
            self.budgetLeft = budgetLeft
        }
    }

    public struct CategoryFigures: Hashable, Sendable {
        public let category: Category
        public let figures: Figures

        public init(category: Category, figures: Figures) {
            self.category = category
            self.figures = figures
        }
    }

    public struct AcceptorFigures: Hashable, Sendable {
        public let acceptor: Identifier
        /// Redeem transactions applied there, and the tokens they spent.
        public let redemptions: UInt64
        public let amount: Amount

        public init(acceptor: Identifier, redemptions: UInt64, amount: Amount) {
            self.acceptor = acceptor
            self.redemptions = redemptions
            self.amount = amount
        }
    }

    public struct PartnerNet: Hashable, Sendable {
        public let partner: Identifier
        public let net: Int64

        public init(partner: Identifier, net: Int64) {
            self.partner = partner
            self.net = net
        }
    }
}

/// The current epoch's running figures, kept in the state (`StateKeys.epochActivity`) so
/// that a node restarted mid-epoch goes on counting; folded into the report at the close.
struct EpochActivity: Hashable, Sendable {
    var programmes: [Identifier: EpochReport.Figures] = [:]
    var acceptors: [Identifier: Redemptions] = [:]

    struct Redemptions: Hashable, Sendable {
        var count: UInt64 = 0
        var amount: Amount = 0
    }

    var isEmpty: Bool { programmes.isEmpty && acceptors.isEmpty }

    mutating func add(_ other: EpochActivity) {
        for (id, figures) in other.programmes { programmes[id, default: .init()].add(figures) }
        for (id, redemptions) in other.acceptors {
            acceptors[id, default: .init()].count += redemptions.count
            acceptors[id, default: .init()].amount += redemptions.amount
        }
    }
}

// MARK: Accumulation and the close

extension Ledger {
    public func epochReport(_ epoch: UInt64) -> EpochReport? { read(StateKeys.epochReport(epoch)) }

    /// The activity of the current epoch so far (committed blocks and this block's).
    func epochActivity() -> EpochActivity {
        var activity = read(StateKeys.epochActivity, as: EpochActivity.self) ?? EpochActivity()
        activity.add(pendingActivity)
        return activity
    }

    /// Writes this block's activity into the running record (once per block).
    mutating func flushActivity() {
        guard !pendingActivity.isEmpty else { return }
        write(StateKeys.epochActivity, epochActivity())
        pendingActivity = EpochActivity()
    }

    /// At the close of `epoch` (its expiries and clearing done): the report, written; the
    /// running record removed for the next epoch.
    mutating func writeEpochReport(_ epoch: UInt64, lastHeight: UInt64, nets: [EpochReport.PartnerNet]) {
        let activity = epochActivity()
        pendingActivity = EpochActivity()
        writes[StateKeys.epochActivity] = .some(nil)
        var programmes: [EpochReport.ProgrammeFigures] = []
        var categories: [Category: EpochReport.Figures] = [:]
        for id in Set(meta.programmes).union(activity.programmes.keys).sorted() {
            guard let programme = programme(id) else { continue }
            let figures = activity.programmes[id] ?? .init()
            // A programme closed before this epoch with nothing left to happen is history.
            if programme.status == .closed && figures == .init() { continue }
            programmes.append(.init(
                programme: id, category: programme.category, figures: figures,
                budgetLeft: programme.budget > programme.totals.issued ? programme.budget - programme.totals.issued : 0))
            categories[programme.category, default: .init()].add(figures)
        }
        let report = EpochReport(
            epoch: epoch, firstHeight: meta.epochStartHeight, lastHeight: lastHeight, programmes: programmes,
            categories: Category.allCases.compactMap { category in categories[category].map { .init(category: category, figures: $0) } },
            acceptors: activity.acceptors.keys.sorted().map { id in
                let redemptions = activity.acceptors[id]!
                return .init(acceptor: id, redemptions: redemptions.count, amount: redemptions.amount)
            },
            nets: nets, totals: meta.totals, tokenValueMicroEuros: parameters.tokenValueMicroEuros)
        write(StateKeys.epochReport(epoch), report)
    }
}

// MARK: Wire forms

extension EpochReport: WireCodable {
    /// Programmes a report lists at most (every programme the meta record may list).
    static let programmeCountMax = LedgerLimits.programmeCountMax

    public func encode(to writer: inout WireWriter) {
        writer.write(epoch)
        writer.write(firstHeight)
        writer.write(lastHeight)
        writer.writeArray(programmes)
        writer.writeArray(categories)
        writer.writeArray(acceptors)
        writer.writeArray(nets)
        writer.write(totals)
        writer.write(tokenValueMicroEuros)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        epoch = try reader.readUInt64("report.epoch")
        firstHeight = try reader.readUInt64("report.firstHeight")
        lastHeight = try reader.readUInt64("report.lastHeight")
        programmes = try reader.readArray("report.programmes", maximum: Self.programmeCountMax, of: ProgrammeFigures.self)
        categories = try reader.readArray("report.categories", maximum: Category.allCases.count, of: CategoryFigures.self)
        acceptors = try reader.readArray("report.acceptors", maximum: LedgerLimits.listCountMax, of: AcceptorFigures.self)
        nets = try reader.readArray("report.nets", maximum: LedgerLimits.listCountMax, of: PartnerNet.self)
        totals = try Programme.Totals(from: &reader)
        tokenValueMicroEuros = try reader.readUInt64("report.tokenValueMicroEuros")
    }
}

extension EpochReport.Figures: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(attributions)
        writer.write(units)
        writer.write(issued)
        writer.write(redeemed)
        writer.write(expired)
        writer.write(sunk)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        attributions = try reader.readUInt64("figures.attributions")
        units = try reader.readUInt64("figures.units")
        issued = try reader.readUInt64("figures.issued")
        redeemed = try reader.readUInt64("figures.redeemed")
        expired = try reader.readUInt64("figures.expired")
        sunk = try reader.readUInt64("figures.sunk")
    }
}

extension EpochReport.ProgrammeFigures: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(programme)
        writer.write(category.rawValue)
        writer.write(figures)
        writer.write(budgetLeft)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        programme = try Identifier(from: &reader)
        category = try reader.readEnum("figures.category")
        figures = try EpochReport.Figures(from: &reader)
        budgetLeft = try reader.readUInt64("figures.budgetLeft")
    }
}

extension EpochReport.CategoryFigures: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(category.rawValue)
        writer.write(figures)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        category = try reader.readEnum("figures.category")
        figures = try EpochReport.Figures(from: &reader)
    }
}

extension EpochReport.AcceptorFigures: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(acceptor)
        writer.write(redemptions)
        writer.write(amount)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        acceptor = try Identifier(from: &reader)
        redemptions = try reader.readUInt64("acceptor.redemptions")
        amount = try reader.readUInt64("acceptor.amount")
    }
}

extension EpochReport.PartnerNet: WireCodable {
    public func encode(to writer: inout WireWriter) {
        writer.write(partner)
        writer.write(net)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        partner = try Identifier(from: &reader)
        net = try reader.readInt64("net.net")
    }
}

extension EpochActivity: WireCodable {
    func encode(to writer: inout WireWriter) {
        writer.writeArray(programmes.keys.sorted().map { ProgrammeEntry(programme: $0, figures: programmes[$0]!) })
        writer.writeArray(acceptors.keys.sorted().map { AcceptorEntry(acceptor: $0, redemptions: acceptors[$0]!) })
    }

    init(from reader: inout WireReader) throws(WireError) {
        for entry in try reader.readArray("activity.programmes", maximum: EpochReport.programmeCountMax, of: ProgrammeEntry.self) {
            programmes[entry.programme] = entry.figures
        }
        for entry in try reader.readArray("activity.acceptors", maximum: LedgerLimits.listCountMax, of: AcceptorEntry.self) {
            acceptors[entry.acceptor] = entry.redemptions
        }
    }

    struct ProgrammeEntry: WireCodable {
        let programme: Identifier
        let figures: EpochReport.Figures
        init(programme: Identifier, figures: EpochReport.Figures) {
            self.programme = programme
            self.figures = figures
        }
        func encode(to writer: inout WireWriter) {
            writer.write(programme)
            writer.write(figures)
        }
        init(from reader: inout WireReader) throws(WireError) {
            programme = try Identifier(from: &reader)
            figures = try EpochReport.Figures(from: &reader)
        }
    }

    struct AcceptorEntry: WireCodable {
        let acceptor: Identifier
        let redemptions: Redemptions
        init(acceptor: Identifier, redemptions: Redemptions) {
            self.acceptor = acceptor
            self.redemptions = redemptions
        }
        func encode(to writer: inout WireWriter) {
            writer.write(acceptor)
            writer.write(redemptions.count)
            writer.write(redemptions.amount)
        }
        init(from reader: inout WireReader) throws(WireError) {
            acceptor = try Identifier(from: &reader)
            redemptions = Redemptions(
                count: try reader.readUInt64("activity.redemptions"), amount: try reader.readUInt64("activity.amount"))
        }
    }
}
